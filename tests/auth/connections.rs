//! The connection-level bounds: `--max-connections`, the handshake timeout
//! (idle connections that never send a preface), `--max-connection-age`
//! (graceful GOAWAY) and `--max-concurrent-streams` (streams held open on
//! one connection).

use std::time::Duration;

use agent_registry::pb;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Code;

use crate::{
    common::{try_watch_synced, wait_until},
    ops_support::http_status,
    support::{Client, Server, list},
};

/// Whether a fresh client can connect and call within 2 s.
async fn can_call(server: &Server) -> bool {
    let attempt = async {
        let mut client = Client::connect(server.endpoint()).await.ok()?;
        (list(&mut client, tonic::Request::new(Default::default())).await == Code::Ok).then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(()))
    )
}

/// Whether the server closed `socket` (EOF or reset) within `within`.
async fn closed_by_server(socket: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let read = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_and_served_ones_keep_working() {
    let server = Server::start(&["--max-connections", "2"]).await;
    let mut first = server.client().await;
    let mut second = server.client().await;
    for client in [&mut first, &mut second] {
        assert_eq!(
            list(client, tonic::Request::new(Default::default())).await,
            Code::Ok
        );
    }
    assert!(!can_call(&server).await, "a third connection was served");
    assert_eq!(
        list(&mut first, tonic::Request::new(Default::default())).await,
        Code::Ok
    );
    assert_eq!(http_status(server.metrics, "/metrics").await, Some(200));
    drop(second);
    wait_until(Duration::from_secs(5), "a slot comes back", || {
        can_call(&server)
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_without_a_preface_are_closed_after_the_handshake_timeout() {
    let server = Server::start_with(&["--max-connections", "4"], |settings| {
        settings.security.limits.handshake_timeout = Duration::from_millis(500);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Half a preface is no preface.
    idle[0].write_all(b"PRI * HTTP/2.0").await.unwrap();
    let started = std::time::Instant::now();
    for socket in &mut idle {
        assert!(
            closed_by_server(socket, Duration::from_secs(3)).await,
            "idle connection kept"
        );
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "closed before the timeout: {waited:?}"
    );
    // Their slots are free again.
    assert!(can_call(&server).await);
    server.stop().await;
}

/// An HTTP/2 frame header: (length, type).
async fn read_frame(socket: &mut TcpStream) -> Option<(usize, u8)> {
    let mut header = [0u8; 9];
    socket.read_exact(&mut header).await.ok()?;
    let len =
        (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
    let mut payload = vec![0u8; len];
    socket.read_exact(&mut payload).await.ok()?;
    Some((len, header[3]))
}

#[tokio::test]
async fn connections_older_than_max_connection_age_get_a_goaway() {
    const GOAWAY: u8 = 0x7;
    const SETTINGS: u8 = 0x4;
    let server = Server::start(&["--max-connection-age", "1"]).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    socket
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap(); // empty SETTINGS
    let started = std::time::Instant::now();
    let goaway = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some((len, kind)) = read_frame(&mut socket).await {
            if kind == SETTINGS && len > 0 {
                socket
                    .write_all(&[0, 0, 0, SETTINGS, 1, 0, 0, 0, 0])
                    .await
                    .ok()?;
            }
            if kind == GOAWAY {
                return Some(true);
            }
        }
        Some(false)
    })
    .await;
    assert_eq!(goaway, Ok(Some(true)), "no GOAWAY within 5 s");
    assert!(started.elapsed() >= Duration::from_millis(900));
    drop(socket);
    // Clients reconnect and keep calling across the age.
    let mut client = server.client().await;
    for _ in 0..6 {
        assert_eq!(
            list(&mut client, tonic::Request::new(Default::default())).await,
            Code::Ok
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn streams_held_open_beyond_max_concurrent_streams_are_not_served_on_that_connection() {
    let server = Server::start(&["--max-concurrent-streams", "2"]).await;
    let mut client = server.client().await;
    let first = try_watch_synced(&mut client).await.unwrap();
    let _second = try_watch_synced(&mut client).await.unwrap();
    let third = tokio::time::timeout(
        Duration::from_millis(500),
        client.list_agents(pb::ListAgentsRequest::default()),
    )
    .await;
    assert!(
        !matches!(third, Ok(Ok(_))),
        "a third stream was served on the connection"
    );
    // Other connections are not affected, and a freed stream is reused.
    assert!(can_call(&server).await);
    drop(first);
    let fourth = tokio::time::timeout(
        Duration::from_secs(5),
        client.list_agents(pb::ListAgentsRequest::default()),
    )
    .await;
    assert!(matches!(fourth, Ok(Ok(_))), "{fourth:?}");
    server.stop().await;
}

#[tokio::test]
async fn tls_connections_that_never_finish_the_handshake_are_closed_after_the_timeout() {
    let (ca, files) = (crate::pki::Ca::new("test ca"), crate::support::Files::new());
    let leaf = ca.server(1);
    files.write("tls.crt", &leaf.cert);
    files.write("tls.key", &leaf.key);
    let (cert, key) = (files.path("tls.crt"), files.path("tls.key"));
    let flags = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--max-connections",
        "3",
    ];
    let server = Server::start_with(&flags, |settings| {
        settings.security.limits.handshake_timeout = Duration::from_millis(500);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // The start of a TLS record that never completes.
    idle[0]
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    for socket in &mut idle {
        assert!(
            closed_by_server(socket, Duration::from_secs(3)).await,
            "idle TLS connection kept"
        );
    }
    let mut client = server.tls_client(&ca, None).await.unwrap();
    assert_eq!(
        list(&mut client, tonic::Request::new(Default::default())).await,
        Code::Ok
    );
    server.stop().await;
}
