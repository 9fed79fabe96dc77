//! Query limits of BEHAVIOUR.md §2: max_results and page_size bounds, page
//! tokens the server handed out and only with their own filters, status filters.

use std::collections::HashMap;

use agent_registry::pb::{self};

use crate::common::*;

use crate::validation::{check_invalid, check_ok, new_id, register, try_discover, try_list};

pub async fn negative_max_results_is_refused_and_large_is_clamped(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for _ in 0..7 {
        register(&mut client, &["a"]).await;
    }
    check_invalid(
        try_discover(
            &mut client,
            pb::DiscoverRequest {
                max_results: -1,
                ..Default::default()
            },
        )
        .await,
        &["max_results"],
        "max_results -1",
    );
    for (max_results, expected) in [(5000, 7), (i32::MAX, 7), (0, 5), (3, 3)] {
        let resp = client
            .discover_agents(pb::DiscoverRequest {
                capabilities: vec!["a".into()],
                max_results,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("max_results {max_results}: {e:?}"))
            .into_inner();
        assert_eq!(resp.agents.len(), expected, "max_results {max_results}");
    }
}

pub async fn negative_page_size_is_refused_and_large_is_clamped(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for _ in 0..3 {
        register(&mut client, &["a"]).await;
    }
    check_invalid(
        try_list(
            &mut client,
            pb::ListAgentsRequest {
                page_size: -1,
                ..Default::default()
            },
        )
        .await,
        &["page_size"],
        "page_size -1",
    );
    for page_size in [20_000, i32::MAX] {
        let resp = client
            .list_agents(pb::ListAgentsRequest {
                page_size,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("page_size {page_size}: {e:?}"))
            .into_inner();
        assert_eq!(resp.agents.len(), 3);
        assert!(resp.next_page_token.is_empty());
    }
}

pub async fn page_token_must_be_one_the_server_handed_out(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for _ in 0..3 {
        register(&mut client, &["a"]).await;
    }
    let real = client
        .list_agents(pb::ListAgentsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!real.is_empty(), "a first page of 1 of 3 has a next token");

    let mut tampered = real.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let garbage = [
        "garbage".to_string(),
        "AAAA".into(),
        "!!!".into(),
        new_id(),
        format!("{real}x"),
        tampered,
    ];
    for token in garbage {
        check_invalid(
            try_list(
                &mut client,
                pb::ListAgentsRequest {
                    page_size: 1,
                    page_token: token.clone(),
                    ..Default::default()
                },
            )
            .await,
            &["page_token"],
            &format!("page_token {token:?}"),
        );
    }
    check_ok(
        try_list(
            &mut client,
            pb::ListAgentsRequest {
                page_size: 1,
                page_token: real,
                ..Default::default()
            },
        )
        .await,
        "the token the server handed out",
    );
}

pub async fn page_token_used_with_other_filters_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    for _ in 0..3 {
        register(&mut client, &["a"]).await;
    }
    let filters = HashMap::from([("namespace".to_string(), "default".to_string())]);
    let token = client
        .list_agents(pb::ListAgentsRequest {
            filters: filters.clone(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!token.is_empty());

    let others = [
        HashMap::new(),
        HashMap::from([("namespace".to_string(), "other".to_string())]),
        HashMap::from([
            ("namespace".to_string(), "default".to_string()),
            ("cluster".to_string(), "local".to_string()),
        ]),
    ];
    for other in others {
        check_invalid(
            try_list(
                &mut client,
                pb::ListAgentsRequest {
                    filters: other.clone(),
                    page_size: 1,
                    page_token: token.clone(),
                    ..Default::default()
                },
            )
            .await,
            &["page_token"],
            &format!("token reused with filters {other:?}"),
        );
    }
    check_ok(
        try_list(
            &mut client,
            pb::ListAgentsRequest {
                filters,
                page_size: 1,
                page_token: token,
                ..Default::default()
            },
        )
        .await,
        "token with the filters that produced it",
    );
}

pub async fn status_filter_must_name_a_status_in_any_case(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    register(&mut client, &["a"]).await;
    let status = |s: &str| HashMap::from([("status".to_string(), s.to_string())]);
    for bad in ["bogus", "HEALTHYX", "ok", "AGENT_STATUS_UNSPECIFIED", "1"] {
        check_invalid(
            try_list(
                &mut client,
                pb::ListAgentsRequest {
                    filters: status(bad),
                    ..Default::default()
                },
            )
            .await,
            &["status"],
            &format!("ListAgents status {bad:?}"),
        );
        check_invalid(
            try_discover(
                &mut client,
                pb::DiscoverRequest {
                    filters: status(bad),
                    ..Default::default()
                },
            )
            .await,
            &["status"],
            &format!("DiscoverAgents status {bad:?}"),
        );
    }
    for good in ["healthy", "Degraded", "UNHEALTHY", "HeAlThY"] {
        check_ok(
            try_list(
                &mut client,
                pb::ListAgentsRequest {
                    filters: status(good),
                    ..Default::default()
                },
            )
            .await,
            &format!("ListAgents status {good:?}"),
        );
        check_ok(
            try_discover(
                &mut client,
                pb::DiscoverRequest {
                    filters: status(good),
                    ..Default::default()
                },
            )
            .await,
            &format!("DiscoverAgents status {good:?}"),
        );
    }
    // Lower-case "healthy" finds the healthy agent.
    let found = client
        .list_agents(pb::ListAgentsRequest {
            filters: status("healthy"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(found.len(), 1, "status filter is case-insensitive");
}

behaviour_tests! {
    negative_max_results_is_refused_and_large_is_clamped,
    negative_page_size_is_refused_and_large_is_clamped,
    page_token_must_be_one_the_server_handed_out,
    page_token_used_with_other_filters_is_refused,
    status_filter_must_name_a_status_in_any_case,
}
