//! Every unary route: shapes, status codes, tokens and errors.

use reqwest::Method;
use serde_json::json;

use super::support::Api;
use crate::common::Backend;

behaviour_tests!(
    register_get_list_and_deregister_speak_proto3_json,
    heartbeat_needs_the_token_and_recomputes_the_status,
    malformed_bodies_and_parameters_are_400_naming_them,
    list_filters_and_pages,
    discover_takes_repeated_capabilities_and_a_strategy,
    notify_queues_and_unknown_agents_are_404,
    the_capability_catalog_counts_agents_by_name,
    metadata_documents_and_the_console_are_served,
);

async fn register_get_list_and_deregister_speak_proto3_json(backend: Backend) {
    let api = Api::start(backend).await;
    let reply = api
        .post(
            "/v1/agents",
            json!({
                "agentType": "SCOUT",
                "capabilities": ["search", "search", "crawl"],
                "metadata": { "zone": "eu" },
                "endpoint": "10.0.0.1:7000",
                "ttlSeconds": 30,
                "telemetry": { "successRate": 0.9, "totalExecutions": "10", "failedExecutions": 1 }
            }),
            None,
        )
        .await;
    let reply = reply.ok();
    let id = reply["agentId"].as_str().unwrap().to_owned();
    let token = reply["registrationToken"].as_str().unwrap().to_owned();
    assert!(token.len() >= 22);
    assert_eq!(reply["ttlSeconds"], 30);
    assert_eq!(reply["heartbeatIntervalSeconds"], 10);
    assert!(reply["registeredAt"].is_string(), "int64 as a string");

    let got = api.get(&format!("/v1/agents/{id}")).await;
    assert!(got.headers.get("x-registry-stale").is_none());
    let agent = &got.ok()["agent"];
    assert_eq!(agent["agentId"], id);
    assert_eq!(agent["agentType"], "SCOUT");
    assert_eq!(agent["status"], "HEALTHY");
    assert_eq!(agent["capabilities"], json!(["search", "crawl"]));
    assert_eq!(agent["metadata"]["endpoint"], "10.0.0.1:7000");
    assert_eq!(agent["namespace"], "default");
    assert_eq!(agent["telemetry"]["totalExecutions"], "10");
    assert_eq!(agent["telemetry"]["failedExecutions"], "1");
    assert!(agent["revision"].as_str().unwrap().parse::<u64>().unwrap() > 0);
    assert!(agent["lastSeen"].is_string());
    assert!(agent.get("registrationToken").is_none());
    assert!(!got.body.to_string().contains(&token), "never the token");

    let uppercase = id.to_uppercase();
    api.get(&format!("/v1/agents/{uppercase}")).await.ok();

    let listed = api.get("/v1/agents").await;
    assert_eq!(listed.ok()["agents"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["nextPageToken"], "");

    let path = format!("/v1/agents/{id}");
    let missing = api.send(Method::DELETE, &path, None, None).await;
    missing.error(401, "UNAUTHENTICATED");
    let wrong = api
        .send(Method::DELETE, &path, None, Some("x".repeat(30).as_str()))
        .await;
    wrong.error(403, "PERMISSION_DENIED");
    let removed = api.send(Method::DELETE, &path, None, Some(&token)).await;
    assert_eq!(removed.ok()["success"], true);
    let again = api.send(Method::DELETE, &path, None, Some(&token)).await;
    assert_eq!(again.ok()["success"], false);
    let gone = api.get(&path).await;
    let message = gone.error(404, "NOT_FOUND");
    assert!(
        message.starts_with(&format!("Agente {id} não encontrado")),
        "{message}"
    );
}

async fn heartbeat_needs_the_token_and_recomputes_the_status(backend: Backend) {
    let api = Api::start(backend).await;
    let (id, token) = api.register(&["a"], json!({})).await;
    let path = format!("/v1/agents/{id}/heartbeat");
    api.send(Method::POST, &path, None, None)
        .await
        .error(401, "UNAUTHENTICATED");
    api.send(Method::POST, &path, None, Some(&"y".repeat(40)))
        .await
        .error(403, "PERMISSION_DENIED");
    // An empty body is an empty HeartbeatRequest.
    let beat = api.send(Method::POST, &path, None, Some(&token)).await;
    let beat = beat.ok();
    assert_eq!(beat["status"], "HEALTHY");
    assert!(beat["lastSeen"].is_string() && beat["expiresAt"].is_string());
    // The token may also travel in the body, with telemetry.
    let sick = json!({
        "registrationToken": token,
        "telemetry": { "successRate": 0.1, "totalExecutions": "10", "failedExecutions": "9" }
    });
    let beat = api.post(&path, sick, None).await;
    assert_eq!(beat.ok()["status"], "UNHEALTHY");
    // The body's id must be the path's.
    let other = json!({ "agentId": uuid::Uuid::new_v4().to_string() });
    let message = api
        .post(&path, other, Some(&token))
        .await
        .error(400, "INVALID_ARGUMENT");
    assert!(message.contains("agent_id"), "{message}");
    let unknown = format!("/v1/agents/{}/heartbeat", uuid::Uuid::new_v4());
    let message = api
        .send(Method::POST, &unknown, None, Some(&token))
        .await
        .error(404, "NOT_FOUND");
    assert!(message.contains("não encontrado"), "{message}");
    let message = api
        .send(
            Method::POST,
            "/v1/agents/not-a-uuid/heartbeat",
            None,
            Some(&token),
        )
        .await
        .error(400, "INVALID_ARGUMENT");
    assert!(message.starts_with("agent_id"), "{message}");
}

async fn malformed_bodies_and_parameters_are_400_naming_them(backend: Backend) {
    let api = Api::start(backend).await;
    let cases = [
        (
            json!({ "agentType": "AGENT_TYPE_UNSPECIFIED", "capabilities": ["a"] }),
            "agent_type",
        ),
        (json!({ "agentType": "WORKER" }), "capabilities"),
        (
            json!({ "agentType": "WORKER", "capabilities": ["a"], "bogus": 1 }),
            "bogus",
        ),
        (
            json!({ "agentType": "ROBOT", "capabilities": ["a"] }),
            "agentType",
        ),
        (
            json!({ "agentType": "WORKER", "capabilities": ["a"], "ttlSeconds": -1 }),
            "ttl_seconds",
        ),
        (
            json!({ "agentType": "WORKER", "capabilities": ["a"], "telemetry": { "successRate": 2 } }),
            "success_rate",
        ),
        (
            json!({ "agentType": "WORKER", "capabilities": ["a"], "telemetry": { "totalExecutions": "x" } }),
            "telemetry.totalExecutions",
        ),
    ];
    for (body, field) in cases {
        let message = api
            .post("/v1/agents", body.clone(), None)
            .await
            .error(400, "INVALID_ARGUMENT");
        assert!(message.contains(field), "{body}: {message}");
    }
    let message = api
        .send(Method::POST, "/v1/agents", Some("{not json".into()), None)
        .await
        .error(400, "INVALID_ARGUMENT");
    assert!(message.starts_with("body"), "{message}");
    for (query, field) in [
        ("/v1/agents?page_size=-1", "page_size"),
        ("/v1/agents?page_size=ten", "page_size"),
        ("/v1/agents?page_token=forged", "page_token"),
        ("/v1/agents?agent_type=ROBOT", "agent_type"),
        ("/v1/agents?status=SLEEPY", "status"),
        ("/v1/agents?zone=a&zone=b", "zone"),
        ("/v1/discover?max_results=-3", "max_results"),
        ("/v1/discover?strategy=BEST", "strategy"),
        ("/v1/watch?start_revision=5&snapshot=true", "start_revision"),
        ("/v1/watch?snapshot=maybe", "snapshot"),
        ("/v1/watch?zone=eu", "zone"),
        ("/v1/agents/123", "agent_id"),
    ] {
        let message = api.get(query).await.error(400, "INVALID_ARGUMENT");
        assert!(message.contains(field), "{query}: {message}");
    }
    api.get("/v1/nothing-here").await.error(404, "NOT_FOUND");
    let huge = format!("{{\"message\":\"{}\"}}", "x".repeat(2 << 20));
    let path = format!("/v1/agents/{}/notifications", uuid::Uuid::new_v4());
    api.send(Method::POST, &path, Some(huge), None)
        .await
        .error(413, "RESOURCE_EXHAUSTED");
}

async fn list_filters_and_pages(backend: Backend) {
    let api = Api::start(backend).await;
    let mut ids = Vec::new();
    for zone in ["eu", "us", "eu"] {
        ids.push(
            api.register(&["a"], json!({ "metadata": { "zone": zone } }))
                .await
                .0,
        );
    }
    let scout = api
        .post(
            "/v1/agents",
            json!({ "agentType": "SCOUT", "capabilities": ["a"], "metadata": { "zone": "eu" } }),
            None,
        )
        .await;
    scout.ok();
    let eu = api
        .get("/v1/agents?agent_type=WORKER&page_size=10&zone=eu")
        .await;
    let mut found: Vec<&str> = eu.ok()["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agentId"].as_str().unwrap())
        .collect();
    // List order is (registeredAt in seconds, agentId): compare as sets.
    found.sort_unstable();
    let mut expected = [ids[0].as_str(), ids[2].as_str()];
    expected.sort_unstable();
    assert_eq!(found, expected);
    let by_number = api.get("/v1/agents?agent_type=1&zone=eu").await;
    assert_eq!(by_number.ok()["agents"].as_array().unwrap().len(), 2);

    let first = api.get("/v1/agents?page_size=2").await;
    let token = first.ok()["nextPageToken"].as_str().unwrap().to_owned();
    assert_eq!(first.body["agents"].as_array().unwrap().len(), 2);
    assert!(!token.is_empty());
    let encoded: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let second = api
        .get(&format!("/v1/agents?page_size=2&page_token={encoded}"))
        .await;
    assert_eq!(second.ok()["agents"].as_array().unwrap().len(), 2);
    assert_eq!(second.body["nextPageToken"], "");
    // A token is only good for the filters it was handed out for.
    let message = api
        .get(&format!(
            "/v1/agents?page_size=2&zone=eu&page_token={encoded}"
        ))
        .await
        .error(400, "INVALID_ARGUMENT");
    assert!(message.contains("page_token"), "{message}");
}

async fn discover_takes_repeated_capabilities_and_a_strategy(backend: Backend) {
    let api = Api::start(backend).await;
    let (both, _) = api.register(&["a", "b"], json!({})).await;
    api.register(&["a"], json!({})).await;
    let found = api.get("/v1/discover?capability=a&capability=b").await;
    let found = found.ok();
    assert_eq!(found["ranked"], true);
    let agents = found["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["agentId"], both);
    let spread = api
        .get("/v1/discover?capability=a&strategy=ROUND_ROBIN&max_results=1&agent_type=WORKER")
        .await;
    assert_eq!(spread.ok()["ranked"], false);
    assert_eq!(spread.body["agents"].as_array().unwrap().len(), 1);
    let none = api.get("/v1/discover?capability=zzz").await;
    assert_eq!(none.ok()["agents"], json!([]));
}

async fn notify_queues_and_unknown_agents_are_404(backend: Backend) {
    let api = Api::start(backend).await;
    let (id, _) = api.register(&["a"], json!({})).await;
    let sent = api
        .post(
            &format!("/v1/agents/{id}/notifications"),
            json!({ "notificationType": "TASK", "message": "go", "metadata": { "k": "v" } }),
            None,
        )
        .await;
    let sent = sent.ok();
    assert_eq!(sent["success"], true);
    assert_eq!(sent["notificationId"], "1");
    assert_eq!(sent["delivered"], false);
    let unknown = format!("/v1/agents/{}/notifications", uuid::Uuid::new_v4());
    api.post(&unknown, json!({ "message": "x" }), None)
        .await
        .error(404, "NOT_FOUND");
    let message = api
        .post(
            &format!("/v1/agents/{id}/notifications"),
            json!({ "notificationType": "T".repeat(65) }),
            None,
        )
        .await
        .error(400, "INVALID_ARGUMENT");
    assert!(message.contains("notification_type"), "{message}");
}

async fn the_capability_catalog_counts_agents_by_name(backend: Backend) {
    let api = Api::start(backend).await;
    let empty = api.get("/v1/capabilities").await;
    assert_eq!(empty.ok(), &json!({ "capabilities": [] }));
    api.register(&["translate", "ocr"], json!({})).await;
    let sick = json!({ "telemetry": { "successRate": 0.1, "totalExecutions": "5" } });
    api.register(&["ocr"], sick).await;
    let catalog = api.get("/v1/capabilities").await;
    assert_eq!(
        catalog.ok(),
        &json!({ "capabilities": [
            { "name": "ocr", "agents": 2, "healthy": 1 },
            { "name": "translate", "agents": 1, "healthy": 1 },
        ] })
    );
}

async fn metadata_documents_and_the_console_are_served(backend: Backend) {
    let api = Api::start(backend).await;
    let doc = api.get("/v1/openapi.json").await;
    let doc = doc.ok();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
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
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(op["responses"]["200"].is_object(), "{method} {path} answer");
    }
    let client = reqwest::Client::new();
    for (asset, kind) in [
        ("/ui/", "text/html"),
        ("/ui/console.js", "text/javascript"),
        ("/ui/console.css", "text/css"),
    ] {
        let response = client
            .get(format!("{}{asset}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with(kind), "{asset}: {content_type}");
        let text = response.text().await.unwrap();
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{asset} names another origin"
        );
    }
    // HTTP calls count like RPCs; a method a route does not have is no call.
    api.register(&["a"], json!({})).await;
    let put = api.send(Method::PUT, "/v1/agents", None, None).await;
    assert_eq!(put.status, 405);
    api.post("/v1/agents", json!({}), None)
        .await
        .error(400, "INVALID_ARGUMENT");
    let metrics = client
        .get(format!("http://{}/metrics", api.server.metrics_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("service_registry_register_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("service_registry_register_total{result=\"INVALID_ARGUMENT\"} 1"),
        "{metrics}"
    );
}
