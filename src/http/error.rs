//! The one place a registry error becomes an HTTP answer (BEHAVIOUR.md
//! §12): `{"code":"NOT_FOUND","message":"…"}` with the HTTP status of its
//! code. Domain errors go through the gRPC mapping first
//! ([`crate::service::status`]), so both transports say exactly the same
//! thing and store failures are logged once, there.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use tonic::Code;

use crate::{convert::code_name, domain::Error};

/// The `result` a call ended with (`ok` or a code name), left in the
/// response's extensions for the per-call metrics.
#[derive(Copy, Clone, Debug)]
pub struct Outcome(pub &'static str);

/// An error answer: a gRPC code and its message.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    message: String,
    /// A body over the limit: 413 rather than 429.
    too_large: bool,
}

impl ApiError {
    /// A malformed request: `what` names the parameter or body field.
    pub fn invalid(what: &str, reason: impl std::fmt::Display) -> Self {
        Self {
            code: Code::InvalidArgument,
            message: format!("{what}: {reason}"),
            too_large: false,
        }
    }

    /// A body over the size limit.
    pub fn too_large(limit: usize) -> Self {
        Self {
            code: Code::ResourceExhausted,
            message: format!("body: larger than {limit} bytes"),
            too_large: true,
        }
    }

    /// A route this server does not have.
    pub fn no_route(method: &str, path: &str) -> Self {
        Self {
            code: Code::NotFound,
            message: format!("no route {method} {path}"),
            too_large: false,
        }
    }

    /// The gRPC code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The body of this error: `{"code","message"}`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "code": code_name(self.code), "message": self.message })
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        tonic::Status::from(error).into()
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self {
            code: status.code(),
            message: status.message().to_owned(),
            too_large: false,
        }
    }
}

/// The HTTP status of a gRPC code (BEHAVIOUR.md §12; 500 for the rest).
pub fn http_status(code: Code, body_too_large: bool) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // A resume point the history no longer reaches: the client's to fix
        // (take a snapshot), as grpc-gateway maps it.
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted if body_too_large => StatusCode::PAYLOAD_TOO_LARGE,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = http_status(self.code, self.too_large);
        let mut response = (status, self.json().to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
            .extensions_mut()
            .insert(Outcome(code_name(self.code)));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AgentId;

    #[test]
    fn each_code_has_the_status_of_the_table() {
        let cases = [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
            (Code::Aborted, 500),
        ];
        for (code, status) in cases {
            assert_eq!(http_status(code, false).as_u16(), status, "{code:?}");
        }
        assert_eq!(http_status(Code::ResourceExhausted, true).as_u16(), 413);
    }

    #[test]
    fn domain_errors_keep_the_grpc_wording() {
        let id = AgentId::new_v4();
        let error = ApiError::from(Error::NotFound(id));
        assert_eq!(error.code(), Code::NotFound);
        let body = error.json();
        assert_eq!(body["code"], "NOT_FOUND");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&format!("Agente {id} não encontrado"))
        );
        let store = ApiError::from(Error::Unavailable {
            source: "redis: connection refused".into(),
        });
        assert!(!store.json().to_string().contains("redis"));
    }
}
