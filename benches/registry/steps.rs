//! `REGISTRY_BENCH_ONLY`: which workloads a run measures, for a quick look
//! at one of them (`REGISTRY_BENCH_ONLY=discover make bench`). Registering
//! the population always runs (`register` names it alone): every later
//! step needs it.

/// Every workload the variable can name.
pub const ALL: [&str; 7] = [
    "register",
    "heartbeat",
    "list",
    "discover",
    "watch",
    "history",
    "load",
];

/// The workloads of this run.
pub struct Steps(Option<Vec<String>>);

impl Steps {
    /// From `REGISTRY_BENCH_ONLY` (comma-separated names of [`ALL`]);
    /// unset or empty: every workload. Unknown names are reported and
    /// ignored.
    pub fn from_env() -> Self {
        let Ok(value) = std::env::var("REGISTRY_BENCH_ONLY") else {
            return Self(None);
        };
        let names: Vec<String> = value
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        for name in names.iter().filter(|n| !ALL.contains(&n.as_str())) {
            eprintln!("REGISTRY_BENCH_ONLY: unknown workload {name:?} (known: {ALL:?})");
        }
        if names.is_empty() {
            Self(None)
        } else {
            Self(Some(names))
        }
    }

    /// Whether this run measures `step`.
    pub fn runs(&self, step: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == step))
    }
}
