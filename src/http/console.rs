//! The console's assets and the OpenAPI document, compiled into the binary:
//! the console fetches nothing from anywhere but this registry.

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

const INDEX_HTML: &str = include_str!("assets/index.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");
/// The OpenAPI 3 description of the HTTP API.
pub const OPENAPI_JSON: &str = include_str!("assets/openapi.json");

/// `/ui/` and its assets (`/` and `/ui` redirect there).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/ui/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> Response {
    asset("application/json", OPENAPI_JSON)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; connect-src 'self'; img-src 'self' data:",
                ),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_is_json_and_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap_or_default();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        for (path, method) in [
            ("/v1/agents", "post"),
            ("/v1/agents", "get"),
            ("/v1/agents/{id}", "get"),
            ("/v1/agents/{id}", "delete"),
            ("/v1/agents/{id}/heartbeat", "post"),
            ("/v1/agents/{id}/notifications", "post"),
            ("/v1/discover", "get"),
            ("/v1/watch", "get"),
            ("/v1/capabilities", "get"),
            ("/v1/openapi.json", "get"),
            ("/ui/", "get"),
        ] {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
    }
}
