//! Request bodies that are not valid protobuf are a client mistake:
//! INVALID_ARGUMENT on every RPC and stream (never INTERNAL), counted like
//! any refused call, and the server is fine afterwards.

use bytes::{Buf, BufMut};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

use crate::support::{Server, counter};

/// Sends and receives raw bytes: lets a test put anything in a body.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

const SERVICE: &str = "/neural_hive.service_registry.ServiceRegistry/";

/// Calls `method` with `body`; the status code of the answer.
pub async fn raw_call(server: &Server, method: &str, streaming: bool, body: Vec<u8>) -> Code {
    let channel = tonic::transport::Channel::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path: http::uri::PathAndQuery = format!("{SERVICE}{method}").parse().unwrap();
    let request = tonic::Request::new(body);
    if streaming {
        match grpc.server_streaming(request, path, Raw).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                match stream.message().await {
                    Err(status) => status.code(),
                    Ok(_) => Code::Ok,
                }
            }
            Err(status) => status.code(),
        }
    } else {
        match grpc.unary(request, path, Raw).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        }
    }
}

#[tokio::test]
async fn bodies_that_are_not_protobuf_are_invalid_argument_on_every_rpc() {
    let server = Server::start(&[]).await;
    let garbage = vec![0xff, 0xff, 0xff, 0x0f];
    for (method, streaming) in [
        ("Register", false),
        ("Heartbeat", false),
        ("Deregister", false),
        ("DiscoverAgents", false),
        ("GetAgent", false),
        ("ListAgents", false),
        ("NotifyAgent", false),
        ("WatchAgents", true),
        ("SubscribeNotifications", true),
    ] {
        let code = raw_call(&server, method, streaming, garbage.clone()).await;
        assert_eq!(code, Code::InvalidArgument, "{method}");
    }
    let refused = counter(
        &server,
        "service_registry_register_total",
        &[("result", "INVALID_ARGUMENT")],
    );
    assert_eq!(refused.await, 1.0);
    // Nothing changed, and the server answers well-formed calls.
    let mut client = server.client().await;
    let listed = client
        .list_agents(agent_registry::pb::ListAgentsRequest::default())
        .await;
    assert!(listed.unwrap().into_inner().agents.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn filters_and_watch_namespaces_obey_the_label_rules() {
    use agent_registry::pb;
    let server = Server::start(&[]).await;
    let mut client = server.client().await;
    let watch = pb::WatchAgentsRequest {
        namespace: "a\u{7}b".into(),
        ..Default::default()
    };
    let refused = client.watch_agents(watch).await.err().map(|s| s.code());
    assert_eq!(refused, Some(Code::InvalidArgument));
    for (key, value) in [
        ("namespace", "a\u{7}b".to_owned()),
        ("cluster", "c".repeat(129)),
        ("version", "\n".to_owned()),
        ("bad\u{1}key", "x".to_owned()),
        ("", "x".to_owned()),
    ] {
        let list = pb::ListAgentsRequest {
            filters: [(key.to_owned(), value)].into(),
            ..Default::default()
        };
        let code = client.list_agents(list).await.err().map(|s| s.code());
        assert_eq!(code, Some(Code::InvalidArgument), "{key:?}");
    }
    let fine = pb::ListAgentsRequest {
        filters: [("namespace".to_owned(), "prod".to_owned())].into(),
        ..Default::default()
    };
    client.list_agents(fine).await.unwrap();
    server.stop().await;
}
