//! Retry timing shared by every loop that reconnects or retries: the
//! server's feed pump and pub/sub listener, and the SDK's sessions and
//! caches. One rule: capped exponential backoff with jitter.
//!
//! Depends on: rand.

use std::time::Duration;

use rand::Rng;

/// Capped exponential backoff with jitter: attempt `n` (from 0) waits a
/// random time between `base / 2` and `min(cap, base * 2^n)`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(cap)
        .max(base);
    let floor = base / 2;
    let spread = ceiling.saturating_sub(floor);
    floor + spread.mul_f64(rand::rng().random::<f64>())
}

/// `interval` ± 10 %, so a fleet started together does not act in lockstep.
pub fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.9..=1.1))
}

/// The attempts of one retry loop: [`Backoff::wait`] grows with every
/// failure, [`Backoff::reset`] after a success.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// A loop that waits from about `base` up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: 0,
        }
    }

    /// The wait after one more failure.
    pub fn wait(&mut self) -> Duration {
        let wait = backoff(self.failures, self.base, self.cap);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        for attempt in 0..40 {
            let wait = backoff(attempt, base, cap);
            assert!(wait >= base / 2 && wait <= cap, "{attempt}: {wait:?}");
        }
        let late: Duration = (0..50).map(|_| backoff(10, base, cap)).sum();
        assert!(
            late > Duration::from_secs(20),
            "late attempts wait long on average"
        );
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(10));
            assert!(j >= Duration::from_secs(9) && j <= Duration::from_secs(11));
        }
    }

    #[test]
    fn a_loop_grows_then_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.wait();
        assert!(first <= Duration::from_millis(100));
        for _ in 0..10 {
            assert!(b.wait() <= Duration::from_secs(1));
        }
        b.reset();
        assert!(b.wait() <= Duration::from_millis(100));
    }
}
