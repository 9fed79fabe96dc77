//! The authorization policy (BEHAVIOUR.md §9): rules of identity patterns and
//! the ServiceRegistry methods they allow. YAML; JSON is valid YAML.
//!
//! ```yaml
//! rules:
//!   - identities: ["spiffe://example.org/ns/*/sa/orchestrator-*"]
//!     allow: ["*"]
//!   - identities: [anonymous]
//!     allow: [GetAgent, ListAgents, DiscoverAgents]
//! ```
//!
//! In a pattern `*` matches any characters except `/`; `"*"` alone matches
//! any identified caller; `anonymous` matches callers without an identity.
//!
//! Depends on: domain (Caller, Rpc).

use serde::Deserialize;

use crate::domain::{Caller, rpc::Rpc};

/// Longest policy file accepted (a policy is a handful of rules).
const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// A parsed policy: who may call what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// One rule: callers matching any pattern may call any allowed method.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    identities: Vec<Pattern>,
    /// `None` = every method (`"*"`).
    allow: Option<Vec<Rpc>>,
}

/// An identity pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// `anonymous`: callers without an identity.
    Anonymous,
    /// `"*"`: any identified caller.
    AnyIdentity,
    /// Literal text with `*` wildcards that stop at `/`.
    Glob(String),
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not YAML of the expected shape.
    #[error("does not parse: {0}")]
    Syntax(String),
    /// `allow` names a method the registry does not have.
    #[error("rule {rule}: unknown method {method:?} (ServiceRegistry method names or \"*\")")]
    UnknownMethod {
        /// 1-based index of the rule.
        rule: usize,
        /// What was written.
        method: String,
    },
    /// A rule lists no identity pattern, or an empty one.
    #[error("rule {0}: needs at least one non-empty identity pattern")]
    NoIdentities(usize),
    /// No rules at all: every call would be refused.
    #[error("has no rules")]
    NoRules,
    /// Larger than any sensible policy.
    #[error("is larger than {MAX_POLICY_BYTES} bytes")]
    TooLarge,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    rules: Option<Vec<RuleFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    identities: Vec<String>,
    allow: Vec<String>,
}

impl Policy {
    /// Parses a policy file's text.
    ///
    /// # Errors
    /// [`PolicyError`] when it does not parse, names an unknown method or
    /// has no rules.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge);
        }
        let file: PolicyFile =
            serde_norway::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let rules = file.rules.unwrap_or_default();
        if rules.is_empty() {
            return Err(PolicyError::NoRules);
        }
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| Rule::parse(i + 1, rule))
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// Whether `caller` may call `rpc`.
    pub fn allows(&self, caller: &Caller, rpc: Rpc) -> bool {
        self.rules.iter().any(|rule| {
            rule.allow
                .as_ref()
                .is_none_or(|methods| methods.contains(&rpc))
                && rule.identities.iter().any(|p| p.matches(caller))
        })
    }
}

impl Rule {
    fn parse(index: usize, rule: RuleFile) -> Result<Self, PolicyError> {
        if rule.identities.is_empty() || rule.identities.iter().any(String::is_empty) {
            return Err(PolicyError::NoIdentities(index));
        }
        let identities = rule.identities.into_iter().map(Pattern::parse).collect();
        let mut methods = Vec::with_capacity(rule.allow.len());
        let mut any = false;
        for method in rule.allow {
            if method == "*" {
                any = true;
            } else if let Some(rpc) = Rpc::from_name(&method) {
                methods.push(rpc);
            } else {
                return Err(PolicyError::UnknownMethod {
                    rule: index,
                    method,
                });
            }
        }
        Ok(Self {
            identities,
            allow: (!any).then_some(methods),
        })
    }
}

impl Pattern {
    fn parse(text: String) -> Self {
        match text.as_str() {
            "anonymous" => Self::Anonymous,
            "*" => Self::AnyIdentity,
            _ => Self::Glob(text),
        }
    }

    fn matches(&self, caller: &Caller) -> bool {
        match (self, caller.identity()) {
            (Self::Anonymous, None) => true,
            (Self::AnyIdentity, Some(_)) => true,
            (Self::Glob(glob), Some(identity)) => glob_matches(glob, identity.as_str()),
            _ => false,
        }
    }
}

/// Whether `text` matches `glob`, where `*` stands for any run of
/// characters other than `/`. Iterative, with one backtracking point per
/// `/`-free segment: linear in practice, never exponential.
pub fn glob_matches(glob: &str, text: &str) -> bool {
    let (g, t) = (glob.as_bytes(), text.as_bytes());
    let (mut gi, mut ti) = (0, 0);
    // Where the last `*` was and where its match started.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi, ti));
            gi += 1;
        } else if gi < g.len() && g[gi] == t[ti] {
            gi += 1;
            ti += 1;
        } else if let Some((sg, st)) = star
            && t[st] != b'/'
        {
            // Let the star swallow one more character (never a `/`).
            star = Some((sg, st + 1));
            gi = sg + 1;
            ti = st + 1;
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Identity;

    const EXAMPLE: &str = r#"
rules:
  - identities: ["spiffe://example.org/ns/neural-hive-execution/sa/worker-agents"]
    allow: [Register, Heartbeat, Deregister, SubscribeNotifications, DiscoverAgents]
  - identities: ["spiffe://example.org/ns/*/sa/orchestrator-*"]
    allow: ["*"]
  - identities: [anonymous]
    allow: [GetAgent, ListAgents, DiscoverAgents]
"#;

    fn who(name: &str) -> Caller {
        Caller::Identified(Identity::new(name))
    }

    #[test]
    fn the_example_policy_allows_what_it_says() {
        let policy = Policy::parse(EXAMPLE).unwrap();
        let worker = who("spiffe://example.org/ns/neural-hive-execution/sa/worker-agents");
        assert!(policy.allows(&worker, Rpc::Register));
        assert!(!policy.allows(&worker, Rpc::NotifyAgent));
        let orchestrator = who("spiffe://example.org/ns/prod/sa/orchestrator-main");
        assert!(
            Rpc::ALL
                .iter()
                .all(|&rpc| policy.allows(&orchestrator, rpc))
        );
        let nested = who("spiffe://example.org/ns/a/b/sa/orchestrator-main");
        assert!(!policy.allows(&nested, Rpc::GetAgent));
        assert!(policy.allows(&Caller::Anonymous, Rpc::ListAgents));
        assert!(!policy.allows(&Caller::Anonymous, Rpc::Register));
        // An identity matching no rule gets nothing, not the anonymous rules.
        assert!(!policy.allows(&who("spiffe://other/x"), Rpc::GetAgent));
    }

    #[test]
    fn json_is_yaml_too() {
        let policy =
            Policy::parse(r#"{"rules":[{"identities":["*"],"allow":["GetAgent"]}]}"#).unwrap();
        assert!(policy.allows(&who("x"), Rpc::GetAgent));
        assert!(!policy.allows(&Caller::Anonymous, Rpc::GetAgent));
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(matches!(
            Policy::parse("rules: ["),
            Err(PolicyError::Syntax(_))
        ));
        assert!(matches!(
            Policy::parse("rules: []"),
            Err(PolicyError::NoRules)
        ));
        assert!(matches!(Policy::parse("{}"), Err(PolicyError::NoRules)));
        assert!(matches!(
            Policy::parse(""),
            Err(PolicyError::Syntax(_) | PolicyError::NoRules)
        ));
        assert!(matches!(
            Policy::parse("rules: [{identities: [a], allow: [Frobnicate]}]"),
            Err(PolicyError::UnknownMethod { rule: 1, .. })
        ));
        assert!(matches!(
            Policy::parse("rules: [{identities: [], allow: [GetAgent]}]"),
            Err(PolicyError::NoIdentities(1))
        ));
        assert!(matches!(
            Policy::parse("rules: [{identities: [a], allow: [GetAgent], extra: 1}]"),
            Err(PolicyError::Syntax(_))
        ));
    }

    #[test]
    fn stars_stop_at_slashes() {
        assert!(glob_matches("a*c", "abbbc"));
        assert!(glob_matches("a*", "a"));
        assert!(glob_matches("*", "abc"));
        assert!(!glob_matches("*", "a/b"));
        assert!(glob_matches("*/*", "a/b"));
        assert!(!glob_matches("a*c", "ab/c"));
        assert!(glob_matches("spiffe://x/*/y", "spiffe://x/z/y"));
        assert!(!glob_matches("abc", "abcd"));
        assert!(!glob_matches("abcd", "abc"));
        assert!(glob_matches("a**b", "axxb"));
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in ".{0,300}") {
            let _ = Policy::parse(&text);
        }

        #[test]
        fn a_literal_pattern_matches_exactly_itself(a in "[a-z/:.]{0,20}", b in "[a-z/:.]{0,20}") {
            proptest::prop_assert_eq!(glob_matches(&a, &b), a == b);
        }

        #[test]
        fn a_star_matches_any_slash_free_infix(p in "[a-z]{0,5}", m in "[a-z.:]{0,10}", s in "[a-z]{0,5}") {
            let glob = format!("{p}*{s}");
            let text = format!("{p}{m}{s}");
            proptest::prop_assert!(glob_matches(&glob, &text));
        }
    }
}
