use super::*;

#[test]
fn errors_keep_their_code() {
    let e = ClientError::from(tonic::Status::not_found("gone"));
    assert_eq!(e.code(), Code::NotFound);
    assert!(!e.is_transient());
    assert!(ClientError::Timeout(Duration::from_secs(1)).is_transient());
    assert_eq!(e.to_string(), "NOT_FOUND: gone");
    let expired = ClientError::from(tonic::Status::cancelled("Timeout expired"));
    assert_eq!(expired.code(), Code::DeadlineExceeded);
}
