//! The one place a registry error becomes a gRPC status (STYLE.md §3): each
//! variant maps to the code of the same name. Store and internal failures are
//! logged here, once, with their cause chain; the client gets a short
//! generic message and never the store's own text.

use tonic::{Code, Status};

use crate::{
    auth::AuthFailure,
    domain::{Error, error_chain},
    outbox::StreamEnd,
};

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            Error::NotFound(_) => Status::not_found(error.to_string()),
            Error::Unauthenticated => Status::unauthenticated(
                "registration token required (field registration_token or metadata x-registration-token)",
            ),
            Error::PermissionDenied => Status::permission_denied(error.to_string()),
            Error::ResourceExhausted(_) => Status::resource_exhausted(error.to_string()),
            Error::NotServing => store_unavailable(),
            Error::Compacted { .. } => Status::out_of_range(error.to_string()),
            Error::Unavailable { source } => {
                tracing::warn!(error = %error_chain(source.as_ref()), "store unavailable");
                store_unavailable()
            }
            Error::Internal { source } => {
                tracing::error!(error = %error_chain(source.as_ref()), "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// How a watch or notification stream ends, as the client sees it.
pub fn stream_end(end: StreamEnd) -> Status {
    match end {
        StreamEnd::Lagged => Status::new(
            Code::Aborted,
            "stream fell behind and was ended; watch again with send_initial_snapshot (or resume by id)",
        ),
        StreamEnd::FeedReset => Status::new(
            Code::Aborted,
            "registry lost its event feed; watch again with send_initial_snapshot (or resume by id)",
        ),
        StreamEnd::AgentRemoved(id) => Status::from(Error::NotFound(id)),
        StreamEnd::Closed => shutting_down(),
    }
}

/// A call refused because this replica's view does not follow a reachable
/// store.
pub fn store_unavailable() -> Status {
    Status::unavailable("registry store unavailable; retry later")
}

/// Streams end with this when the server stops.
pub fn shutting_down() -> Status {
    Status::unavailable("registry is shutting down")
}

/// A call refused for its credentials or by the policy (BEHAVIOUR.md §9).
/// Never echoes the credential.
pub fn auth_refused(failure: AuthFailure) -> Status {
    match failure {
        AuthFailure::Missing => Status::unauthenticated(
            "this call needs an identity: a JWT-SVID (authorization: Bearer) or a client certificate",
        ),
        AuthFailure::Invalid => Status::unauthenticated("credential not valid"),
        AuthFailure::Expired => Status::unauthenticated("JWT-SVID expired"),
        AuthFailure::Denied => {
            Status::permission_denied("the authorization policy does not allow this call")
        }
    }
}

/// The caller called more often than `--rate-limit` allows.
pub fn rate_limited() -> Status {
    Status::resource_exhausted("rate limit exceeded (--rate-limit); slow down and retry")
}

/// The replica holds `--max-streams` open streams.
pub fn too_many_streams() -> Status {
    Status::resource_exhausted("too many open streams on this replica (--max-streams); retry later")
}

/// A request body over `--max-message-bytes` (tonic's decoder said so in
/// `detail`).
pub fn request_too_large(detail: &str) -> Status {
    Status::resource_exhausted(format!("request too large (--max-message-bytes): {detail}"))
}

/// A request body that is not a valid message: a client mistake.
pub fn malformed_request(detail: &str) -> Status {
    Status::invalid_argument(format!("request body is not a valid message: {detail}"))
}

/// gRPC health asked about a service this server does not have.
pub fn unknown_health_service() -> Status {
    Status::not_found("unknown service")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AgentId;

    #[test]
    fn each_variant_maps_to_its_code() {
        let cases = [
            (Error::invalid("agent_type", "bad"), Code::InvalidArgument),
            (Error::NotFound(AgentId::new_v4()), Code::NotFound),
            (Error::Unauthenticated, Code::Unauthenticated),
            (Error::PermissionDenied, Code::PermissionDenied),
            (
                Error::Unavailable {
                    source: "redis: connection refused".into(),
                },
                Code::Unavailable,
            ),
            (
                Error::Internal {
                    source: "bug".into(),
                },
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }

    #[test]
    fn store_text_never_reaches_the_client() {
        let status = Status::from(Error::Unavailable {
            source: "redis: connection refused".into(),
        });
        assert!(!status.message().contains("redis"));
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = Status::from(Error::invalid("ttl_seconds", "must not be negative"));
        assert!(status.message().starts_with("ttl_seconds"));
    }
}
