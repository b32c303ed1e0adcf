//! The one clock of the payment core: wall time in unix milliseconds, as the store keeps it.
//!
//! Services read [`now_ms`]. The parts whose behaviour is a schedule (the webhook
//! dispatcher's backoff and 3-day give-up, the expirer, the x402 settler's abandoned-claim
//! takeover and fee bumps) read a [`Clock`] instead, which is the system clock unless a test
//! sets a manual one and moves it, so that hours pass without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// The workers' clock: the system's, or a manual one that only moves when told.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A manual clock standing at `start_ms` (unix milliseconds); clones share it.
    pub fn manual(start_ms: i64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(start_ms))),
        }
    }

    /// Now, in unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(at) => at.load(Ordering::SeqCst),
            None => now_ms(),
        }
    }

    /// Moves a manual clock forward by `by`; the system clock is not moved.
    pub fn advance(&self, by: Duration) {
        if let Some(at) = &self.manual {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            at.fetch_add(by, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = Clock::manual(1_000);
        let shared = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        shared.advance(Duration::from_secs(3 * 24 * 3600));
        assert_eq!(clock.now_ms(), 1_000 + 3 * 24 * 3600 * 1000);
        let system = Clock::system();
        let before = system.now_ms();
        system.advance(Duration::from_secs(3600));
        assert!(
            system.now_ms() - before < 60_000,
            "the system clock is not moved"
        );
    }
}
