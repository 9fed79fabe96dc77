//! HTTP request parts → the gRPC request messages the registry's decoders
//! ([`crate::convert`]) take: JSON bodies in the proto3 mapping, query
//! parameters and path ids. Nothing here validates beyond the shape; the
//! rules are the RPCs' own.

use std::collections::HashMap;

use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::pb;

/// The largest body accepted (larger: 413 `RESOURCE_EXHAUSTED`).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body as the message `T`: unknown fields refused, an error names
/// the field at fault (`body.telemetry.successRate: …`). An empty body is
/// the empty message.
pub fn body<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let what = if path == "." {
            "body".to_owned()
        } else {
            format!("body.{path}")
        };
        ApiError::invalid(&what, e.into_inner())
    })?;
    json.end().map_err(|e| ApiError::invalid("body", e))?;
    Ok(value)
}

/// An id from the path must agree with the body's, when the body has one.
pub fn path_id(path: String, body: &mut String) -> Result<(), ApiError> {
    if !body.is_empty() && *body != path {
        return Err(ApiError::invalid(
            "agent_id",
            "the body's agentId differs from the path's",
        ));
    }
    *body = path;
    Ok(())
}

/// Query parameters in order, percent-decoded.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// Removes and returns every value of `name`.
    fn take_all(&mut self, name: &str) -> Vec<String> {
        let (taken, rest) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|(k, _)| k == name);
        self.0 = rest;
        taken.into_iter().map(|(_, v)| v).collect()
    }

    /// Removes and returns the one value of `name`; twice is an error.
    fn take(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        let mut values = self.take_all(name);
        if values.len() > 1 {
            return Err(ApiError::invalid(name, "given more than once"));
        }
        Ok(values.pop())
    }

    fn take_i32(&mut self, name: &str) -> Result<i32, ApiError> {
        match self.take(name)? {
            None => Ok(0),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| ApiError::invalid(name, format!("{v:?} is not a 32-bit integer"))),
        }
    }

    fn take_u64(&mut self, name: &str) -> Result<u64, ApiError> {
        match self.take(name)? {
            None => Ok(0),
            Some(v) => v.trim().parse().map_err(|_| {
                ApiError::invalid(name, format!("{v:?} is not an unsigned 64-bit integer"))
            }),
        }
    }

    fn take_bool(&mut self, name: &str) -> Result<bool, ApiError> {
        match self.take(name)?.as_deref() {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1" | "") => Ok(true),
            Some(v) => Err(ApiError::invalid(
                name,
                format!("{v:?} is not true or false"),
            )),
        }
    }

    /// An enum parameter by name (any case) or number, as proto3 JSON
    /// accepts it.
    fn take_enum(
        &mut self,
        name: &str,
        by_name: impl Fn(&str) -> Option<i32>,
    ) -> Result<i32, ApiError> {
        let Some(v) = self.take(name)? else {
            return Ok(0);
        };
        if let Ok(n) = v.trim().parse::<i32>() {
            return Ok(n);
        }
        by_name(&v.trim().to_ascii_uppercase())
            .ok_or_else(|| ApiError::invalid(name, format!("{v:?} is not a known name")))
    }

    /// What is left: the filters (a key given twice is an error).
    fn into_filters(self) -> Result<HashMap<String, String>, ApiError> {
        let mut filters = HashMap::with_capacity(self.0.len());
        for (k, v) in self.0 {
            if filters.contains_key(&k) {
                return Err(ApiError::invalid(&k, "given more than once"));
            }
            filters.insert(k, v);
        }
        Ok(filters)
    }

    /// Refuses any parameter left over.
    fn finish(self) -> Result<(), ApiError> {
        match self.0.into_iter().next() {
            None => Ok(()),
            Some((k, _)) => Err(ApiError::invalid(&k, "unknown parameter")),
        }
    }
}

fn agent_type(name: &str) -> Option<i32> {
    pb::AgentType::from_str_name(name).map(|t| t as i32)
}

fn strategy(name: &str) -> Option<i32> {
    pb::DiscoveryStrategy::from_str_name(name).map(|s| s as i32)
}

/// `GET /v1/agents?agent_type=&page_size=&page_token=&<filter>=…`.
pub fn list_request(query: Option<&str>) -> Result<pb::ListAgentsRequest, ApiError> {
    let mut params = Params::parse(query);
    Ok(pb::ListAgentsRequest {
        agent_type: params.take_enum("agent_type", agent_type)?,
        page_size: params.take_i32("page_size")?,
        page_token: params.take("page_token")?.unwrap_or_default(),
        filters: params.into_filters()?,
    })
}

/// `GET /v1/discover?capability=…&max_results=&strategy=&agent_type=&<filter>=…`.
pub fn discover_request(query: Option<&str>) -> Result<pb::DiscoverRequest, ApiError> {
    let mut params = Params::parse(query);
    Ok(pb::DiscoverRequest {
        capabilities: params.take_all("capability"),
        max_results: params.take_i32("max_results")?,
        agent_type: params.take_enum("agent_type", agent_type)?,
        strategy: params.take_enum("strategy", strategy)?,
        filters: params.into_filters()?,
    })
}

/// `GET /v1/watch?agent_type=&capability=…&namespace=&snapshot=&start_revision=`.
pub fn watch_request(query: Option<&str>) -> Result<pb::WatchAgentsRequest, ApiError> {
    let mut params = Params::parse(query);
    let request = pb::WatchAgentsRequest {
        agent_type: params.take_enum("agent_type", agent_type)?,
        capabilities: params.take_all("capability"),
        namespace: params.take("namespace")?.unwrap_or_default(),
        send_initial_snapshot: params.take_bool("snapshot")?,
        start_revision: params.take_u64("start_revision")?,
        progress_notify: false,
    };
    params.finish()?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parameters_fill_the_request_and_the_rest_are_filters() {
        let req = list_request(Some(
            "agent_type=worker&page_size=10&zone=eu&status=HEALTHY",
        ))
        .unwrap_or_default();
        assert_eq!(req.agent_type, pb::AgentType::Worker as i32);
        assert_eq!(req.page_size, 10);
        assert_eq!(req.filters.get("zone").map(String::as_str), Some("eu"));
        assert_eq!(req.filters.len(), 2);
    }

    #[test]
    fn malformed_parameters_are_named() {
        let message = |r: Result<pb::ListAgentsRequest, ApiError>| {
            r.err().map(|e| e.json()["message"].to_string())
        };
        let m = message(list_request(Some("page_size=ten"))).unwrap_or_default();
        assert!(m.contains("page_size"), "{m}");
        let m = message(list_request(Some("zone=a&zone=b"))).unwrap_or_default();
        assert!(m.contains("zone"), "{m}");
        let m = message(list_request(Some("agent_type=ROBOT"))).unwrap_or_default();
        assert!(m.contains("agent_type"), "{m}");
        let watch = watch_request(Some("bogus=1"));
        assert!(watch.is_err());
    }

    #[test]
    fn discover_takes_repeated_capabilities() {
        let req = discover_request(Some("capability=a&capability=b%20c&strategy=random"))
            .unwrap_or_default();
        assert_eq!(req.capabilities, ["a", "b c"]);
        assert_eq!(req.strategy, pb::DiscoveryStrategy::Random as i32);
    }

    #[test]
    fn bodies_refuse_unknown_fields_and_name_bad_ones() {
        let e = body::<pb::RegisterRequest>(br#"{"agentType":"WORKER","bogus":1}"#)
            .err()
            .map(|e| e.json()["message"].to_string())
            .unwrap_or_default();
        assert!(e.contains("bogus"), "{e}");
        let e = body::<pb::HeartbeatRequest>(br#"{"telemetry":{"successRate":"x"}}"#)
            .err()
            .map(|e| e.json()["message"].to_string())
            .unwrap_or_default();
        assert!(e.contains("telemetry.successRate"), "{e}");
        let ok = body::<pb::HeartbeatRequest>(b"").unwrap_or_default();
        assert!(ok.agent_id.is_empty());
        let reg = body::<pb::RegisterRequest>(br#"{"agentType":"SCOUT","ttlSeconds":5}"#)
            .unwrap_or_default();
        assert_eq!(reg.agent_type, pb::AgentType::Scout as i32);
        assert_eq!(reg.ttl_seconds, 5);
    }
}
