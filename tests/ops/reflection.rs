//! gRPC reflection, v1 and v1alpha.

use std::time::Duration;

use tonic::Code;
use tonic_reflection::pb::{v1, v1alpha};

use crate::{common::*, support::*};

async fn ask_v1_raw(
    endpoint: &str,
    request: v1::server_reflection_request::MessageRequest,
) -> Result<v1::server_reflection_response::MessageResponse, tonic::Status> {
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(channel(endpoint).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("v1 reflection answers")?
        .expect("one v1 reflection response");
    Ok(response.message_response.expect("a v1 message_response"))
}

async fn ask_v1(
    endpoint: &str,
    request: v1::server_reflection_request::MessageRequest,
) -> v1::server_reflection_response::MessageResponse {
    ask_v1_raw(endpoint, request)
        .await
        .expect("v1 reflection stream")
}

async fn ask_v1alpha(
    endpoint: &str,
    request: v1alpha::server_reflection_request::MessageRequest,
) -> v1alpha::server_reflection_response::MessageResponse {
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(endpoint).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha ServerReflectionInfo")
        .into_inner();
    let response = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("v1alpha reflection answers")
        .expect("v1alpha reflection stream")
        .expect("one v1alpha reflection response");
    response
        .message_response
        .expect("a v1alpha message_response")
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_lists_services_and_serves_descriptors() {
    use v1::{
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = TestServer::start(Backend::Memory).await;
    let endpoint = server.endpoint();

    let MessageResponse::ListServicesResponse(list) =
        ask_v1(&endpoint, MessageRequest::ListServices(String::new())).await
    else {
        panic!("v1 list_services did not answer a service list");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&REGISTRY_SERVICE), "v1 services: {names:?}");
    assert!(names.contains(&HEALTH_SERVICE), "v1 services: {names:?}");

    for symbol in [REGISTRY_SERVICE, HEALTH_SERVICE] {
        let MessageResponse::FileDescriptorResponse(files) = ask_v1(
            &endpoint,
            MessageRequest::FileContainingSymbol(symbol.into()),
        )
        .await
        else {
            panic!("v1 file_containing_symbol({symbol}) did not answer a descriptor");
        };
        assert!(
            !files.file_descriptor_proto.is_empty(),
            "no descriptor for {symbol}"
        );
        assert!(files.file_descriptor_proto.iter().all(|f| !f.is_empty()));
        let short = symbol.rsplit('.').next().unwrap();
        assert!(
            files
                .file_descriptor_proto
                .iter()
                .any(|f| contains(f, short)),
            "descriptor of {symbol} does not define {short}"
        );
    }
    // A message type of the contract resolves too (grpcurl describe).
    let MessageResponse::FileDescriptorResponse(files) = ask_v1(
        &endpoint,
        MessageRequest::FileContainingSymbol("neural_hive.service_registry.RegisterRequest".into()),
    )
    .await
    else {
        panic!("v1 file_containing_symbol(RegisterRequest) did not answer a descriptor");
    };
    assert!(
        files
            .file_descriptor_proto
            .iter()
            .any(|f| contains(f, "registration_token"))
    );

    // An unknown symbol is an error response, not a descriptor.
    // (tonic-reflection ends the stream with NOT_FOUND; an ErrorResponse
    // with NOT_FOUND is as good.)
    let unknown = ask_v1_raw(
        &endpoint,
        MessageRequest::FileContainingSymbol("no.such.Thing".into()),
    )
    .await;
    assert!(
        match &unknown {
            Ok(MessageResponse::ErrorResponse(e)) => e.error_code == Code::NotFound as i32,
            Err(status) => status.code() == Code::NotFound,
            Ok(_) => false,
        },
        "unknown symbol answered {unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1alpha_answers_the_same() {
    use v1alpha::{
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = TestServer::start(Backend::Memory).await;
    let endpoint = server.endpoint();

    let MessageResponse::ListServicesResponse(list) =
        ask_v1alpha(&endpoint, MessageRequest::ListServices(String::new())).await
    else {
        panic!("v1alpha list_services did not answer a service list");
    };
    let mut alpha: Vec<String> = list.service.iter().map(|s| s.name.clone()).collect();
    assert!(
        alpha.iter().any(|n| n == REGISTRY_SERVICE),
        "v1alpha services: {alpha:?}"
    );
    assert!(
        alpha.iter().any(|n| n == HEALTH_SERVICE),
        "v1alpha services: {alpha:?}"
    );

    let v1::server_reflection_response::MessageResponse::ListServicesResponse(v1_list) = ask_v1(
        &endpoint,
        v1::server_reflection_request::MessageRequest::ListServices(String::new()),
    )
    .await
    else {
        panic!("v1 list_services did not answer a service list");
    };
    let mut one: Vec<String> = v1_list.service.iter().map(|s| s.name.clone()).collect();
    // Each version lists its own reflection service; the rest is equal.
    for names in [&mut alpha, &mut one] {
        names.retain(|n| !n.starts_with("grpc.reflection."));
        names.sort();
    }
    assert_eq!(alpha, one, "v1alpha and v1 list different services");

    let MessageResponse::FileDescriptorResponse(files) = ask_v1alpha(
        &endpoint,
        MessageRequest::FileContainingSymbol(REGISTRY_SERVICE.into()),
    )
    .await
    else {
        panic!("v1alpha file_containing_symbol did not answer a descriptor");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    assert!(
        files
            .file_descriptor_proto
            .iter()
            .any(|f| contains(f, "ServiceRegistry"))
    );
}
