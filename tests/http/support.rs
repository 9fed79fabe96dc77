//! A small JSON-over-HTTP client for one test server, and an SSE reader.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, TestServer};

/// A test server and an HTTP client for its API.
pub struct Api {
    /// The server.
    pub server: TestServer,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    client: reqwest::Client,
}

/// An answer: status, headers, body as JSON (`Value::Null` when it is not).
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The error message, asserting the error shape and its code.
    pub fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        assert_eq!(self.body["code"], code, "{:?}", self.body);
        self.body["message"].as_str().unwrap().to_owned()
    }

    /// The body of a 200.
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{:?}", self.body);
        &self.body
    }
}

impl Api {
    /// Starts a server on `backend`.
    pub async fn start(backend: Backend) -> Self {
        Self::with(TestServer::start(backend).await)
    }

    /// The API of a running server.
    pub fn with(server: TestServer) -> Self {
        let base = format!("http://{}", server.http_addr);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Self {
            server,
            base,
            client,
        }
    }

    /// Sends `method path` with an optional raw body and token.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        token: Option<&str>,
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        if let Some(token) = token {
            request = request.header("x-registration-token", token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value, token: Option<&str>) -> Answer {
        self.send(Method::POST, path, Some(body.to_string()), token)
            .await
    }

    /// Registers a WORKER with `capabilities` and `extra` fields; returns
    /// (id, token).
    pub async fn register(&self, capabilities: &[&str], extra: Value) -> (String, String) {
        let mut body = json!({ "agentType": "WORKER", "capabilities": capabilities });
        if let Value::Object(fields) = extra {
            body.as_object_mut().unwrap().extend(fields);
        }
        let answer = self.post("/v1/agents", body, None).await;
        let reply = answer.ok();
        (
            reply["agentId"].as_str().unwrap().to_owned(),
            reply["registrationToken"].as_str().unwrap().to_owned(),
        )
    }

    /// Opens `GET path` as an event stream.
    pub async fn events(&self, path: &str) -> Sse {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Sse {
            response,
            buffer: String::new(),
        }
    }
}

/// A Server-Sent Events reader.
pub struct Sse {
    response: reqwest::Response,
    buffer: String,
}

/// One event: its name (`message` when unnamed) and its JSON data.
#[derive(Debug)]
pub struct SseEvent {
    pub name: String,
    pub data: Value,
}

impl Sse {
    /// The next event with data (comments and keep-alives skipped), within
    /// 5 s; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = "message".to_owned();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some(SseEvent {
                    name,
                    data: serde_json::from_str(&data).unwrap(),
                });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.response.chunk())
                .await
                .expect("an event within 5 s")
                .unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}
