//! Time, injected. Timers use tokio's clock (so tests run on paused time);
//! wall-clock readings, which alarms are stated in, come from a [`Clock`].
//! The API speaks `SystemTime`; inside, times are whole milliseconds since
//! the Unix epoch, as they are stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The time now.
    fn now(&self) -> SystemTime;
}

/// Whole milliseconds since the epoch (0 for times before it).
pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time `ms` milliseconds after the epoch.
pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Milliseconds readings of any clock, for the runtime's inside.
pub(crate) trait ClockMs {
    /// Milliseconds since the epoch, now.
    fn now_ms(&self) -> u64;
}

impl<C: Clock + ?Sized> ClockMs for C {
    fn now_ms(&self) -> u64 {
        to_ms(self.now())
    }
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
        Self::starting_at(SystemTime::now())
    }

    /// Anchors the clock at a given wall time (for tests).
    pub fn starting_at(start: SystemTime) -> Self {
        TokioClock {
            base_ms: to_ms(start),
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
    fn now(&self) -> SystemTime {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.base);
        from_ms(
            self.base_ms
                .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}
