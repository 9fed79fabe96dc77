//! The SDK and `registryctl register` ask for a check.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_and_the_cli_ask_for_a_check() {
    let target = TcpTarget::start().await;
    let server = TestServer::start(Backend::Memory).await;

    // SDK.
    let sdk = agent_registry::client::RegistryClient::connect(server.endpoint())
        .await
        .unwrap();
    let mut wanted = agent_registry::client::health_check(Kind::Tcp, target.addr.to_string());
    wanted.interval_seconds = 1;
    let mut request = register_request(&["sdk"]);
    request.health_check = Some(wanted);
    let agent = sdk.register(request).await.unwrap();
    let info = sdk.get_agent(&agent.agent_id).await.unwrap();
    assert_eq!(info.health_check.unwrap().timeout_seconds, 1);

    // CLI: register with a check, then `get` shows it and its output.
    let endpoint = server.endpoint();
    let target_arg = target.addr.to_string();
    let run = |args: Vec<String>| {
        let endpoint = endpoint.clone();
        tokio::task::spawn_blocking(move || {
            assert_cmd::Command::cargo_bin("registryctl")
                .unwrap()
                .env("REGISTRY_ENDPOINT", endpoint)
                .env_remove("REGISTRY_TOKEN")
                .args(args)
                .timeout(Duration::from_secs(10))
                .assert()
                .success()
                .get_output()
                .stdout
                .clone()
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = run(args(&[
        "-o",
        "json",
        "register",
        "-c",
        "cli",
        "--check",
        "tcp",
        "--check-target",
        &target_arg,
        "--check-interval",
        "1",
        "--check-failures",
        "1",
    ]))
    .await
    .unwrap();
    let registered: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let id = registered["agent_id"].as_str().unwrap().to_owned();
    let mut client = server.client().await;
    wait_until(EVENT_WAIT, "a first probe", || {
        let mut client = client.clone();
        let id = id.clone();
        async move { get(&mut client, &id).await.unwrap().health_output == "connected" }
    })
    .await;
    let out = run(args(&["-o", "json", "get", &id])).await.unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(shown["health_check"]["kind"], "TCP", "{shown}");
    assert_eq!(shown["health_check"]["failures_before_unhealthy"], 1);
    assert_eq!(shown["health_output"], "connected");
    let _ = get(&mut client, &id).await.unwrap();
    server.stop().await;
}
