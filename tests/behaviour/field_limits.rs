//! Field limits of BEHAVIOUR.md §2: metadata entries, keys and values, namespace,
//! cluster and version, endpoints, telemetry, TTLs and notification type and message.

use std::collections::HashMap;

use agent_registry::pb::{self};

use crate::common::*;

use crate::validation::{
    check_invalid, check_ok, meta, notify, register, telemetry, try_heartbeat, try_notify,
    try_register,
};

/// Telemetry cases that must be refused, with the field names a message may use.
fn bad_telemetry() -> Vec<(pb::AgentTelemetry, &'static [&'static str], &'static str)> {
    const RATE: &[&str] = &["success_rate", "telemetry"];
    vec![
        (telemetry(f64::NAN, 0, 10, 0), RATE, "success_rate NaN"),
        (
            telemetry(f64::INFINITY, 0, 10, 0),
            RATE,
            "success_rate +inf",
        ),
        (
            telemetry(f64::NEG_INFINITY, 0, 10, 0),
            RATE,
            "success_rate -inf",
        ),
        (telemetry(-0.1, 0, 10, 0), RATE, "success_rate -0.1"),
        (telemetry(1.1, 0, 10, 0), RATE, "success_rate 1.1"),
        (
            telemetry(1.0, -1, 10, 0),
            &["avg_duration_ms", "telemetry"],
            "avg_duration_ms -1",
        ),
        (
            telemetry(1.0, 0, -1, 0),
            &["total_executions", "telemetry"],
            "total_executions -1",
        ),
        (
            telemetry(1.0, 0, 10, -1),
            &["failed_executions", "telemetry"],
            "failed_executions -1",
        ),
        (
            telemetry(0.0, 0, 10, 11),
            &["failed_executions", "total_executions", "telemetry"],
            "failed_executions > total_executions",
        ),
    ]
}

fn good_telemetry() -> Vec<pb::AgentTelemetry> {
    vec![
        telemetry(0.0, 0, 0, 0),
        telemetry(1.0, 0, 10, 0),
        telemetry(0.0, 5, 10, 10),
        telemetry(0.5, 1_000_000, 10, 5),
    ]
}

pub async fn register_metadata_is_limited_in_entries_keys_and_values(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let with = |metadata: HashMap<String, String>| {
        let mut req = register_request(&["a"]);
        req.metadata = metadata;
        req
    };
    let one = |k: String, v: String| HashMap::from([(k, v)]);

    check_ok(
        try_register(&mut client, with(meta(64))).await,
        "64 metadata entries",
    );
    check_ok(
        try_register(&mut client, with(one("k".repeat(128), "v".into()))).await,
        "128-byte key",
    );
    check_ok(
        try_register(&mut client, with(one("k".into(), "v".repeat(1024)))).await,
        "1024-byte value",
    );
    check_ok(
        try_register(&mut client, with(one("k".into(), String::new()))).await,
        "empty value",
    );

    let bad = [
        (meta(65), "65 metadata entries"),
        (one("k".repeat(129), "v".into()), "129-byte key"),
        (one(String::new(), "v".into()), "empty key"),
        (one("k".into(), "v".repeat(1025)), "1025-byte value"),
    ];
    for (metadata, what) in bad {
        check_invalid(
            try_register(&mut client, with(metadata)).await,
            &["metadata"],
            &format!("Register {what}"),
        );
    }
}

pub async fn notify_metadata_is_limited_in_entries_keys_and_values(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    let with = |metadata: HashMap<String, String>| {
        let mut req = notify(&agent.agent_id);
        req.metadata = metadata;
        req
    };
    let one = |k: String, v: String| HashMap::from([(k, v)]);

    check_ok(
        try_notify(&mut client, with(meta(64))).await,
        "64 metadata entries",
    );
    check_ok(
        try_notify(&mut client, with(one("k".repeat(128), "v".into()))).await,
        "128-byte key",
    );
    check_ok(
        try_notify(&mut client, with(one("k".into(), "v".repeat(1024)))).await,
        "1024-byte value",
    );

    let bad = [
        (meta(65), "65 metadata entries"),
        (one("k".repeat(129), "v".into()), "129-byte key"),
        (one(String::new(), "v".into()), "empty key"),
        (one("k".into(), "v".repeat(1025)), "1025-byte value"),
    ];
    for (metadata, what) in bad {
        check_invalid(
            try_notify(&mut client, with(metadata)).await,
            &["metadata"],
            &format!("NotifyAgent {what}"),
        );
    }
}

pub async fn namespace_cluster_and_version_are_at_most_128_bytes_without_controls(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    type Setter = fn(&mut pb::RegisterRequest, String);
    let fields: [(&str, Setter); 3] = [
        ("namespace", |r, v| r.namespace = v),
        ("cluster", |r, v| r.cluster = v),
        ("version", |r, v| r.version = v),
    ];
    for (field, set) in fields {
        let mut req = register_request(&["a"]);
        set(&mut req, "n".repeat(128));
        check_ok(
            try_register(&mut client, req).await,
            &format!("128-byte {field}"),
        );

        for bad in [
            "n".repeat(129),
            "a\nb".into(),
            "tab\t".into(),
            "\u{0}".into(),
        ] {
            let mut req = register_request(&["a"]);
            set(&mut req, bad.clone());
            check_invalid(
                try_register(&mut client, req).await,
                &[field],
                &format!("Register {field} {bad:?}"),
            );
        }
    }
}

pub async fn endpoint_is_empty_or_host_and_port(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    // A 250-byte host name made of DNS-sized labels.
    let long_host = [50, 50, 50, 50, 46]
        .iter()
        .map(|n| "a".repeat(*n))
        .collect::<Vec<_>>()
        .join(".");
    let endpoint_255 = format!("{long_host}:8080");
    assert_eq!(endpoint_255.len(), 255);
    let endpoint_256 = format!("{long_host}:18080");
    assert_eq!(endpoint_256.len(), 256);

    let ok = [
        String::new(),
        "10.0.0.1:8080".into(),
        "[::1]:80".into(),
        "localhost:1".into(),
        "agent.example.com:65535".into(),
        endpoint_255,
    ];
    for endpoint in ok {
        let mut req = register_request(&["a"]);
        req.endpoint = endpoint.clone();
        check_ok(
            try_register(&mut client, req).await,
            &format!("endpoint {endpoint:?}"),
        );
    }
    let bad = [
        "host:0".to_string(),
        "host:65536".into(),
        "nohost".into(),
        "host:".into(),
        "host:abc".into(),
        "host:-1".into(),
        endpoint_256,
    ];
    for endpoint in bad {
        let mut req = register_request(&["a"]);
        req.endpoint = endpoint.clone();
        check_invalid(
            try_register(&mut client, req).await,
            &["endpoint"],
            &format!("endpoint {endpoint:?}"),
        );
    }
}

pub async fn register_telemetry_must_be_sane(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for (t, fields, what) in bad_telemetry() {
        let mut req = register_request(&["a"]);
        req.telemetry = Some(t);
        check_invalid(
            try_register(&mut client, req).await,
            fields,
            &format!("Register telemetry {what}"),
        );
    }
    for t in good_telemetry() {
        let mut req = register_request(&["a"]);
        req.telemetry = Some(t);
        check_ok(
            try_register(&mut client, req).await,
            &format!("telemetry {t:?}"),
        );
    }
}

pub async fn heartbeat_telemetry_must_be_sane(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    let hb = |t: pb::AgentTelemetry| pb::HeartbeatRequest {
        agent_id: agent.agent_id.clone(),
        telemetry: Some(t),
        registration_token: agent.registration_token.clone(),
    };
    for (t, fields, what) in bad_telemetry() {
        check_invalid(
            try_heartbeat(&mut client, hb(t)).await,
            fields,
            &format!("Heartbeat telemetry {what}"),
        );
    }
    for t in good_telemetry() {
        check_ok(
            try_heartbeat(&mut client, hb(t)).await,
            &format!("telemetry {t:?}"),
        );
    }
}

pub async fn negative_ttl_seconds_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for bad in [-1, i32::MIN] {
        let mut req = register_request(&["a"]);
        req.ttl_seconds = bad;
        check_invalid(
            try_register(&mut client, req).await,
            &["ttl_seconds"],
            &format!("ttl_seconds {bad}"),
        );
    }
    let mut req = register_request(&["a"]);
    req.ttl_seconds = i32::MAX;
    check_ok(
        try_register(&mut client, req).await,
        "ttl_seconds i32::MAX is clamped",
    );
}

pub async fn notification_type_is_at_most_64_bytes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    for ok in [String::new(), "T".repeat(64), "CONFIG_RELOAD".into()] {
        let mut req = notify(&agent.agent_id);
        req.notification_type = ok.clone();
        check_ok(
            try_notify(&mut client, req).await,
            &format!("notification_type of {} bytes", ok.len()),
        );
    }
    let mut req = notify(&agent.agent_id);
    req.notification_type = "T".repeat(65);
    check_invalid(
        try_notify(&mut client, req).await,
        &["notification_type"],
        "65-byte notification_type",
    );
}

pub async fn notification_message_is_at_most_64_kib(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let agent = register(&mut client, &["a"]).await;
    let mut req = notify(&agent.agent_id);
    req.message = "m".repeat(64 * 1024);
    check_ok(try_notify(&mut client, req).await, "64 KiB message");
    let mut req = notify(&agent.agent_id);
    req.message = "m".repeat(64 * 1024 + 1);
    check_invalid(
        try_notify(&mut client, req).await,
        &["message"],
        "64 KiB + 1 message",
    );
}

behaviour_tests! {
    register_metadata_is_limited_in_entries_keys_and_values,
    notify_metadata_is_limited_in_entries_keys_and_values,
    namespace_cluster_and_version_are_at_most_128_bytes_without_controls,
    endpoint_is_empty_or_host_and_port,
    register_telemetry_must_be_sane,
    heartbeat_telemetry_must_be_sane,
    negative_ttl_seconds_is_refused,
    notification_type_is_at_most_64_bytes,
    notification_message_is_at_most_64_kib,
}
