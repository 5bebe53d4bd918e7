//! Per-caller rate limits (token buckets keyed by bot name, VM key id or source address) and the
//! privileged-option rule. Quotas that need the database (queued jobs, concurrent cattle) are
//! enforced in `queue` and `cattle` inside the same transaction as the write they guard.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// A set of token buckets, one per key.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate_per_second: f64, burst: f64) -> Self {
        RateLimiter {
            rate: rate_per_second,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; false when the bucket is empty.
    pub fn allow(&self, key: &str) -> bool {
        self.allow_at(key, Instant::now())
    }

    pub fn allow_at(&self, key: &str, now: Instant) -> bool {
        let Ok(mut b) = self.buckets.lock() else {
            return false;
        };
        if b.len() > 10_000 {
            // Drop full (idle) buckets so a flood of source addresses cannot grow memory.
            let (rate, burst) = (self.rate, self.burst);
            b.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let entry = b.entry(key.to_string()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(entry.1).as_secs_f64() * self.rate;
        entry.0 = (entry.0 + refill).min(self.burst);
        entry.1 = now;
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Env keys a job asks for that only root or the admin group may grant.
pub fn privileged_requests(requested: &[String], privileged: &[String]) -> Vec<String> {
    requested
        .iter()
        .filter(|k| privileged.contains(k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let l = RateLimiter::new(10.0, 3.0);
        let t = Instant::now();
        assert!(l.allow_at("a", t));
        assert!(l.allow_at("a", t));
        assert!(l.allow_at("a", t));
        assert!(!l.allow_at("a", t));
        assert!(l.allow_at("b", t), "buckets are per key");
        assert!(l.allow_at("a", t + Duration::from_millis(100)));
        assert!(!l.allow_at("a", t + Duration::from_millis(100)));
    }

    #[test]
    fn privileged_keys_are_detected() {
        let p = vec!["GITHUB_TOKEN".to_string()];
        assert_eq!(
            privileged_requests(&["A".into(), "GITHUB_TOKEN".into()], &p),
            vec!["GITHUB_TOKEN"]
        );
        assert!(privileged_requests(&["A".into()], &p).is_empty());
    }
}
