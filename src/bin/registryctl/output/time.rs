//! Times as `registryctl` shows them: relative to now in tables
//! (`3s ago`), as a UTC clock on streamed lines.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in unix seconds.
pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `at` relative to `now`: `3s ago`, `in 40s`, `now`; `-` for 0 (never).
pub(super) fn relative(at: i64, now: i64) -> String {
    if at == 0 {
        return "-".to_owned();
    }
    let delta = at - now;
    if delta == 0 {
        return "now".to_owned();
    }
    let span = span(delta.unsigned_abs());
    if delta > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A duration in its largest whole unit: `45s`, `2m`, `3h`, `4d`.
fn span(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `HH:MM:SS` (UTC) of a unix time, to stamp streamed lines.
pub(super) fn clock(unix: i64) -> String {
    let day = unix.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(97, 100), "3s ago");
        assert_eq!(relative(140, 100), "in 40s");
        assert_eq!(relative(100, 100), "now");
        assert_eq!(relative(100 - 150, 100), "2m ago");
        assert_eq!(relative(0, 100), "-");
        assert_eq!(span(7200), "2h");
        assert_eq!(span(3 * 86_400), "3d");
    }
}
