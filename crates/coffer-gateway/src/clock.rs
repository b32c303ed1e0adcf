//! The one clock of the payment core: wall time in unix milliseconds, as the store keeps it.

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
