//! `registryctl` output: get, list and discover showing the agent, table output
//! with a header and aligned columns, JSON output one object per line.

use crate::common::*;

use predicates::prelude::*;
use serde_json::Value;

use crate::{assert_aligned, column_starts, ctl, ctl_with, json_lines, register, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_get_list_and_discover_show_the_agent() {
    let server = TestServer::start(Backend::Memory).await;

    // Table: the id and the token, labelled.
    let out = ctl(
        &server,
        &[
            "register",
            "-c",
            "python",
            "-c",
            "gpu",
            "--type",
            "scout",
            "-m",
            "team=core",
            "--namespace",
            "lab",
            "--agent-endpoint",
            "10.1.2.3:8080",
            "--ttl",
            "30",
        ],
    )
    .await
    .success();
    let text = stdout(&out);
    let field = |label: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{label} in {text}"))
            .split_whitespace()
            .last()
            .unwrap()
            .to_owned()
    };
    let id = field("AGENT ID");
    let token = field("TOKEN");
    assert_eq!(id.len(), 36, "{text}");
    assert!(!token.is_empty());
    assert_eq!(field("TTL"), "30s");
    assert_eq!(field("HEARTBEAT EVERY"), "10s");

    // get: a table row with the agent, and its metadata.
    let out = ctl(&server, &["get", &id]).await.success();
    let text = stdout(&out);
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("ID "), "{text}");
    let row = lines.next().unwrap();
    for cell in [
        id.as_str(),
        "SCOUT",
        "HEALTHY",
        "python,gpu",
        "lab",
        "10.1.2.3:8080",
    ] {
        assert!(row.contains(cell), "{cell} in {row:?}");
    }
    // Expires in the TTL, relative to now (a second may have passed).
    assert!(
        ["in 30s", "in 29s", "in 28s"]
            .iter()
            .any(|e| row.contains(e)),
        "{row}"
    );
    assert!(text.contains("team=core"), "{text}");

    // get -o json: the proto field names, enums by name.
    let out = ctl(&server, &["get", &id, "-o", "json"]).await.success();
    let agent = &json_lines(&out)[0];
    assert_eq!(agent["agent_id"], id.as_str());
    assert_eq!(agent["agent_type"], "SCOUT");
    assert_eq!(agent["status"], "HEALTHY");
    assert_eq!(agent["capabilities"], serde_json::json!(["python", "gpu"]));
    assert_eq!(agent["metadata"]["team"], "core");
    assert_eq!(agent["namespace"], "lab");
    assert_eq!(agent["endpoint"], "10.1.2.3:8080");
    assert_eq!(
        agent["expires_at"].as_i64().unwrap() - agent["last_seen"].as_i64().unwrap(),
        30
    );

    // list and discover show it.
    ctl(&server, &["list"])
        .await
        .success()
        .stdout(predicate::str::contains(id.as_str()));
    ctl(
        &server,
        &["list", "--type", "scout", "--filter", "namespace=lab"],
    )
    .await
    .success()
    .stdout(predicate::str::contains(id.as_str()));
    ctl(&server, &["list", "--type", "worker"])
        .await
        .success()
        .stdout(predicate::str::contains(id.as_str()).not());
    ctl(
        &server,
        &["discover", "-c", "gpu", "--strategy", "round-robin"],
    )
    .await
    .success()
    .stdout(predicate::str::contains(id.as_str()));
    ctl(&server, &["discover", "-c", "gpu", "-c", "rust"])
        .await
        .success()
        .stdout(predicate::str::contains(id.as_str()).not());

    // Re-register under the same id with the token (from the environment).
    let out = ctl_with(
        &server.endpoint(),
        &[("REGISTRY_TOKEN", token.as_str())],
        &[
            "-o",
            "json",
            "register",
            "-c",
            "rust",
            "--agent-id",
            &id,
            "--ttl",
            "20",
        ],
    )
    .await
    .success();
    let again = &json_lines(&out)[0];
    assert_eq!(again["agent_id"], id.as_str());
    assert_eq!(again["ttl_seconds"], 20);
    ctl(&server, &["discover", "-c", "rust"])
        .await
        .success()
        .stdout(predicate::str::contains(id.as_str()));
    // A fresh registration ignores REGISTRY_TOKEN.
    ctl_with(
        &server.endpoint(),
        &[("REGISTRY_TOKEN", token.as_str())],
        &["register", "-c", "fresh"],
    )
    .await
    .success();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_output_has_a_header_and_aligned_columns() {
    let server = TestServer::start(Backend::Memory).await;
    register(&server, &["-c", "a"]).await;
    register(
        &server,
        &[
            "-c",
            "a",
            "-c",
            "a-much-longer-capability",
            "--type",
            "analyst",
            "--agent-endpoint",
            "host.example:9",
        ],
    )
    .await;
    register(&server, &["-c", "a", "--namespace", "a-long-namespace"]).await;

    let out = ctl(&server, &["list"]).await.success();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three rows: {text}");
    let names = [
        "ID",
        "TYPE",
        "STATUS",
        "CAPABILITIES",
        "NAMESPACE",
        "ENDPOINT",
        "LAST SEEN",
        "EXPIRES",
    ];
    assert!(lines[0].starts_with("ID "), "{text}");
    let starts = column_starts(lines[0], &names);
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{text}");
    for row in &lines[1..] {
        assert_aligned(row, &starts);
        assert!(row.contains("HEALTHY"), "{row}");
        // Relative times: seen "now"/"Ns ago", expiring "in ...".
        assert!(row.contains("now") || row.contains(" ago"), "{row}");
        assert!(row.contains("in "), "{row}");
    }
    assert!(text.contains("ANALYST") && text.contains("host.example:9"));

    // discover uses the same table.
    let out = ctl(&server, &["discover", "-c", "a", "--max", "2"])
        .await
        .success();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows: {text}");
    let starts = column_starts(lines[0], &names);
    for row in &lines[1..] {
        assert_aligned(row, &starts);
    }

    // An empty result still has its header.
    ctl(&server, &["list", "--type", "guard"])
        .await
        .success()
        .stdout(predicate::str::starts_with("ID ").and(predicate::str::contains("WORKER").not()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_one_object_per_line() {
    let server = TestServer::start(Backend::Memory).await;
    let mut ids = Vec::new();
    for cap in ["x", "y", "z"] {
        ids.push(
            register(&server, &["-c", "shared", "-c", cap, "-m", "k=v=w"])
                .await
                .0,
        );
    }

    let out = ctl(&server, &["list", "-o", "json"]).await.success();
    let agents = json_lines(&out);
    assert_eq!(agents.len(), 3);
    let listed: Vec<&str> = agents
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    let mut sorted_ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    sorted_ids.sort_unstable();
    let mut sorted_listed = listed.clone();
    sorted_listed.sort_unstable();
    assert_eq!(sorted_listed, sorted_ids);
    for agent in &agents {
        assert_eq!(agent["agent_type"], "WORKER");
        assert_eq!(agent["status"], "HEALTHY");
        assert_eq!(agent["metadata"]["k"], "v=w");
        assert_eq!(agent["namespace"], "default");
        assert_eq!(agent["schema_version"], 1);
        for field in [
            "registered_at",
            "last_seen",
            "expires_at",
            "revision",
            "cluster",
            "version",
        ] {
            assert!(!agent[field].is_null(), "{field} in {agent}");
        }
    }

    // One page at a time: the next page's token goes to stderr.
    let out = ctl(&server, &["-o", "json", "list", "--page-size", "2"])
        .await
        .success()
        .stderr(predicate::str::contains("--page-token"));
    let first: Vec<Value> = json_lines(&out);
    assert_eq!(first.len(), 2);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    let page_token = stderr.split_whitespace().last().unwrap().to_owned();
    let out = ctl(
        &server,
        &[
            "-o",
            "json",
            "list",
            "--page-size",
            "2",
            "--page-token",
            &page_token,
        ],
    )
    .await
    .success();
    let rest = json_lines(&out);
    assert_eq!(rest.len(), 1);
    // The pages together are the whole list, in list order.
    let paged: Vec<&str> = first
        .iter()
        .chain(&rest)
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(paged, listed);

    let out = ctl(&server, &["discover", "-c", "shared", "-o", "json"])
        .await
        .success();
    assert_eq!(json_lines(&out).len(), 3);
    let out = ctl(
        &server,
        &[
            "discover", "-c", "shared", "-c", "y", "--max", "1", "-o", "json",
        ],
    )
    .await
    .success();
    let found = json_lines(&out);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["agent_id"], ids[1].as_str());

    ctl(&server, &["-o", "json", "health"])
        .await
        .success()
        .stdout(predicate::str::contains(r#""status":"SERVING""#));
    server.stop().await;
}
