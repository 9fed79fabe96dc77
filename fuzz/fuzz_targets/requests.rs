//! Request decoding + validation: any bytes, decoded as the request type the
//! first byte selects, then validated as the server does. Must never panic.
#![no_main]

use std::time::Duration;

use agent_registry::{config::TtlPolicy, convert, domain::validate, pb};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const TTL: TtlPolicy = TtlPolicy {
    default_ttl: 60,
    min_ttl: 1,
    max_ttl: 3600,
    removal_grace: Duration::from_secs(60),
};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => {
            if let Ok(mut req) = pb::RegisterRequest::decode(body) {
                let _ = convert::register_request(&mut req, &TTL);
            }
        }
        1 => {
            if let Ok(req) = pb::HeartbeatRequest::decode(body) {
                let _ = validate::agent_id("agent_id", &req.agent_id);
                let _ = req.telemetry.map(convert::telemetry);
            }
        }
        2 => {
            if let Ok(req) = pb::DiscoverRequest::decode(body) {
                let _ = convert::discover_query(req);
            }
        }
        3 => {
            if let Ok(req) = pb::ListAgentsRequest::decode(body) {
                if let Ok(filter) = convert::filter(req.agent_type, req.filters) {
                    let _ = agent_registry::domain::query::decode_page_token(&req.page_token, &filter);
                }
                let _ = validate::page_size(req.page_size);
            }
        }
        4 => {
            if let Ok(mut req) = pb::WatchAgentsRequest::decode(body) {
                let _ = convert::watch_selection(&mut req);
            }
        }
        5 => {
            if let Ok(req) = pb::NotifyAgentRequest::decode(body) {
                let _ = validate::notification_type(req.notification_type);
                let _ = validate::message(req.message);
                let _ = validate::metadata("metadata", req.metadata);
            }
        }
        6 => {
            if let Ok(req) = pb::SubscribeNotificationsRequest::decode(body) {
                let _ = validate::after_notification_id(&req.after_notification_id);
            }
        }
        _ => {
            if let Ok(req) = pb::GetAgentRequest::decode(body) {
                let _ = validate::agent_id("agent_id", &req.agent_id);
            }
        }
    }
});
