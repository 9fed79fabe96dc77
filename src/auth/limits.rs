//! Per-call limits of BEHAVIOUR.md §9 that need state: the calls per second
//! of each caller (`--rate-limit`, bursts of 2 s) and the open streams of the
//! replica (`--max-streams`).
//!
//! Depends on: std, tokio (semaphore).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::sync;

/// Callers tracked at most; beyond, idle ones (full buckets) are forgotten
/// first, so the table cannot grow without bound.
const MAX_TRACKED_CALLERS: usize = 100_000;

/// Seconds of calls a caller may burst.
const BURST_SECONDS: f64 = 2.0;

/// A token bucket per caller key (identity, or peer address when
/// anonymous).
pub struct RateLimiter {
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Copy, Clone, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_second` calls per second per caller, bursts of 2 s.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn capacity(&self) -> f64 {
        self.per_second * BURST_SECONDS
    }

    /// Takes one call from `key`'s bucket; `false` when it is empty.
    pub fn admit(&self, key: &str, now: Instant) -> bool {
        let capacity = self.capacity();
        let mut buckets = sync::lock(&self.buckets);
        if !buckets.contains_key(key) && buckets.len() >= MAX_TRACKED_CALLERS {
            let per_second = self.per_second;
            buckets.retain(|_, b| refill(b, now, per_second, capacity) < capacity);
            if buckets.len() >= MAX_TRACKED_CALLERS {
                // Every tracked caller is busy: admit the newcomer untracked
                // rather than refuse callers who did nothing wrong.
                return true;
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let tokens = refill(bucket, now, self.per_second, capacity);
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            bucket.at = now;
            true
        } else {
            false
        }
    }
}

/// The bucket's tokens at `now` (without taking any); updates nothing but
/// is consistent with later calls because the time is kept with the count.
fn refill(bucket: &mut Bucket, now: Instant, per_second: f64, capacity: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    let tokens = (bucket.tokens + elapsed * per_second).min(capacity);
    bucket.tokens = tokens;
    bucket.at = now;
    tokens
}

/// The replica's stream slots (`--max-streams`).
#[derive(Clone)]
pub struct StreamSlots {
    slots: Arc<Semaphore>,
}

impl StreamSlots {
    /// `max` streams at once.
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// A slot, held until the stream's response ends; `None` when all are
    /// taken.
    pub fn try_open(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_caller_bursts_two_seconds_then_gets_the_rate() {
        let limiter = RateLimiter::new(5);
        let t0 = Instant::now();
        let admitted = (0..20).filter(|_| limiter.admit("a", t0)).count();
        assert_eq!(admitted, 10);
        assert!(limiter.admit("b", t0), "callers have their own buckets");
        assert!(!limiter.admit("a", t0 + Duration::from_millis(100)));
        assert!(limiter.admit("a", t0 + Duration::from_millis(200)));
        let later = t0 + Duration::from_secs(10);
        assert_eq!((0..20).filter(|_| limiter.admit("a", later)).count(), 10);
    }

    #[test]
    fn stream_slots_come_back_when_dropped() {
        let slots = StreamSlots::new(2);
        let a = slots.try_open().unwrap();
        let _b = slots.try_open().unwrap();
        assert!(slots.try_open().is_none());
        drop(a);
        assert!(slots.try_open().is_some());
    }
}
