//! Time, injected. Timers use tokio's clock (so tests run on paused time);
//! wall-clock readings, which alarms are stated in, come from a [`Clock`].

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch, now.
    fn now_ms(&self) -> u64;
}

/// The default clock: the system's wall time at start, advanced by tokio's
/// monotonic clock. Under `tokio::time::pause()` it moves only when the test
/// advances time, so alarm and eviction tests need no real waiting.
#[derive(Debug, Clone)]
pub struct TokioClock {
    base_ms: u64,
    base: tokio::time::Instant,
}

impl TokioClock {
    /// Anchors the clock at the system's current time.
    pub fn new() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self::starting_at(base_ms)
    }

    /// Anchors the clock at a given wall time (for tests).
    pub fn starting_at(base_ms: u64) -> Self {
        TokioClock {
            base_ms,
            base: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.base);
        self.base_ms
            .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }
}
