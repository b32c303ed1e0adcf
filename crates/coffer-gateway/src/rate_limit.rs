//! Per-key rate limits: a token bucket per key (a payer's address, a client's address or
//! merchant), refilled continuously.
//!
//! Limits protect capacity and the signer's gas, not correctness, so they live in memory per
//! process: N replicas together admit up to N times the rate. Memory is bounded: when the
//! table grows past [`MAX_KEYS`], buckets that have refilled completely (keys that went quiet)
//! are forgotten, and if that is not enough a new key waits for room (a live key's limit is
//! never forgotten). Callers key by something bounded (an address's bytes, a merchant id).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most keys remembered at once.
pub const MAX_KEYS: usize = 100_000;

/// A token bucket per key: `per_minute` requests, with bursts up to the same number.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter admitting `per_minute` requests per key (0: no limit).
    pub fn per_minute(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `key`; when there is none, how long until there is.
    ///
    /// # Errors
    /// The wait before the next request of this key would be admitted.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_second < capacity
            });
            // Still full of keys that are all spending: a new key waits for room rather than
            // anyone's limit being forgotten.
            if buckets.len() >= MAX_KEYS {
                return Err(Duration::from_secs_f64(1.0 / per_second));
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let refilled = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_second)
            .min(capacity);
        bucket.at = now;
        if refilled >= 1.0 {
            bucket.tokens = refilled - 1.0;
            Ok(())
        } else {
            bucket.tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_for_refill() {
        let limiter = RateLimiter::per_minute(3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take_at("payer", start).is_ok());
        }
        let wait = limiter.take_at("payer", start).unwrap_err();
        assert!(wait > Duration::from_secs(19) && wait <= Duration::from_secs(20));
        assert!(limiter.take_at("other", start).is_ok(), "keys are separate");
        assert!(
            limiter
                .take_at("payer", start + Duration::from_secs(20))
                .is_ok(),
            "one token back after a third of a minute"
        );
        assert!(
            limiter
                .take_at("payer", start + Duration::from_secs(20))
                .is_err()
        );
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = RateLimiter::per_minute(0);
        let now = Instant::now();
        assert!((0..10_000).all(|_| limiter.take_at("k", now).is_ok()));
    }

    #[test]
    fn the_table_stays_bounded_and_never_forgets_a_live_limit() {
        let limiter = RateLimiter::per_minute(1);
        let now = Instant::now();
        assert!(limiter.take_at("victim-spent", now).is_ok());
        for i in 0..(MAX_KEYS + 10) {
            let _ = limiter.take_at(&i.to_string(), now);
        }
        let size = limiter
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        assert!(size <= MAX_KEYS);
        assert!(
            limiter.take_at("victim-spent", now).is_err(),
            "flooding the table does not reset a spent key"
        );
        assert!(limiter.take_at("newcomer", now).is_err(), "no room yet");
        let later = now + Duration::from_secs(61);
        assert!(
            limiter.take_at("newcomer", later).is_ok(),
            "room once keys refill"
        );
    }
}
