//! The two waits an HTTP connection may make the server sit through, each
//! with its own bound: the request head (from the connection's start, or
//! from the first byte of a later request) and the idle time between
//! keep-alive requests.
//!
//! hyper has one timer for both (its header-read timeout starts when it
//! waits for a head, idle or not), so the accept loop turns it off and
//! keeps this instead: [`Phase`] is the pure state of a connection, moved
//! by the bytes it reads and the requests it serves; [`Watch`] is what the
//! connection's I/O, its service and its task share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Where a connection is between requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Nothing of a request read since `since`: the connection's start
    /// (`first`), or the end of its previous response.
    Idle { since: Instant, first: bool },
    /// Part of a request head read; it has had to arrive since `since`.
    Head { since: Instant },
    /// Requests being served (more than one when pipelined): no deadline
    /// here; the body and the handlers have their own.
    Busy { requests: usize },
}

/// The two bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// A whole request head, from the connection's start (first request)
    /// or the request's first byte (later ones).
    pub(crate) header: Duration,
    /// Between the end of a response and the first byte of the next
    /// request.
    pub(crate) keep_alive: Duration,
}

impl Phase {
    /// A connection that opened at `now`.
    pub(crate) fn opened(now: Instant) -> Phase {
        Phase::Idle {
            since: now,
            first: true,
        }
    }

    /// Bytes arrived at `now`. A first request's head is timed from the
    /// connection's start; a later one's from its first byte.
    #[must_use]
    pub(crate) fn read(self, now: Instant) -> Phase {
        match self {
            Phase::Idle { since, first: true } => Phase::Head { since },
            Phase::Idle { first: false, .. } => Phase::Head { since: now },
            other => other,
        }
    }

    /// A request head was read whole: it is being served.
    #[must_use]
    pub(crate) fn request(self) -> Phase {
        match self {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            _ => Phase::Busy { requests: 1 },
        }
    }

    /// A response ended (written whole, or dropped) at `now`.
    #[must_use]
    pub(crate) fn responded(self, now: Instant) -> Phase {
        match self {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            Phase::Busy { .. } => Phase::Idle {
                since: now,
                first: false,
            },
            other => other,
        }
    }

    /// When the connection is to be closed if nothing changes; `None`
    /// while it is being served.
    pub(crate) fn deadline(self, limits: Limits) -> Option<Instant> {
        match self {
            Phase::Idle { since, first: true } | Phase::Head { since } => {
                Some(since + limits.header)
            }
            Phase::Idle {
                since,
                first: false,
            } => Some(since + limits.keep_alive),
            Phase::Busy { .. } => None,
        }
    }
}

/// A connection's phase, shared by its I/O (bytes read), its service
/// (requests and responses) and its task (which closes it at the
/// deadline).
#[derive(Debug)]
pub(crate) struct Watch {
    phase: Mutex<Phase>,
    changed: Notify,
    limits: Limits,
    /// The connection's task has ended (closed, or upgraded to a
    /// WebSocket whose reads no longer concern HTTP).
    finished: AtomicBool,
}

impl Watch {
    pub(crate) fn new(limits: Limits) -> Arc<Watch> {
        Arc::new(Watch {
            phase: Mutex::new(Phase::opened(Instant::now())),
            changed: Notify::new(),
            limits,
            finished: AtomicBool::new(false),
        })
    }

    fn update(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        let next = f(*phase);
        if next != *phase {
            *phase = next;
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// Bytes were read.
    pub(crate) fn read(&self) {
        // A WebSocket's reads cost one atomic load here.
        if self.finished.load(Ordering::Relaxed) {
            return;
        }
        self.update(|p| p.read(Instant::now()));
    }

    /// The connection's task ended: later reads are not HTTP.
    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }

    /// A request head was read whole.
    pub(crate) fn request(&self) {
        self.update(Phase::request);
    }

    /// A response ended.
    pub(crate) fn responded(&self) {
        self.update(|p| p.responded(Instant::now()));
    }

    /// Completes when the connection has been waiting past its deadline:
    /// which one, for the log.
    pub(crate) async fn expired(&self) -> &'static str {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let phase = *self.phase.lock().unwrap_or_else(|p| p.into_inner());
            match phase.deadline(self.limits) {
                None => changed.await,
                Some(at) if at <= Instant::now() => {
                    return match phase {
                        Phase::Idle { first: false, .. } => "keep-alive idle timeout",
                        _ => "request head timeout",
                    };
                }
                Some(at) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
            }
        }
    }
}

/// Tells the watch when a response ends: wraps a response body, and marks
/// the response done when the body is dropped (hyper drops it once written
/// whole, or when the connection fails).
pub(crate) struct Responded {
    pub(crate) watch: Arc<Watch>,
}

impl Drop for Responded {
    fn drop(&mut self) {
        self.watch.responded();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header: Duration::from_secs(10),
        keep_alive: Duration::from_secs(60),
    };

    #[test]
    fn the_first_head_is_timed_from_the_connection_start() {
        let t0 = Instant::now();
        let p = Phase::opened(t0);
        assert_eq!(p.deadline(LIMITS), Some(t0 + LIMITS.header));
        // Trickling bytes does not move it.
        let p = p.read(t0 + Duration::from_secs(5));
        assert_eq!(p.deadline(LIMITS), Some(t0 + LIMITS.header));
        let p = p.read(t0 + Duration::from_secs(9));
        assert_eq!(p.deadline(LIMITS), Some(t0 + LIMITS.header));
    }

    #[test]
    fn between_requests_the_keep_alive_bound_then_the_head_bound() {
        let t0 = Instant::now();
        let p = Phase::opened(t0).read(t0).request();
        assert_eq!(p.deadline(LIMITS), None, "served: no deadline");
        let t1 = t0 + Duration::from_secs(3);
        let p = p.responded(t1);
        assert_eq!(p.deadline(LIMITS), Some(t1 + LIMITS.keep_alive));
        let t2 = t1 + Duration::from_secs(50);
        let p = p.read(t2);
        assert_eq!(p.deadline(LIMITS), Some(t2 + LIMITS.header));
        assert_eq!(p.request().deadline(LIMITS), None);
    }

    #[test]
    fn pipelined_requests_keep_the_connection_busy_until_the_last_response() {
        let t0 = Instant::now();
        let p = Phase::opened(t0).read(t0).request().request();
        let p = p.responded(t0);
        assert_eq!(p, Phase::Busy { requests: 1 });
        assert!(matches!(p.responded(t0), Phase::Idle { first: false, .. }));
    }

    proptest::proptest! {
        /// Whatever the events, a connection has a deadline exactly when no
        /// request is being served, and the deadline is never earlier than
        /// the header bound after the connection opened, nor later than the
        /// longer bound after the last event.
        #[test]
        fn a_deadline_exactly_when_not_serving(
            events in proptest::collection::vec((0u8..3, 0u64..20_000), 0..60)
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut p = Phase::opened(t0);
            let mut serving = 0usize;
            for (kind, gap_ms) in events {
                now += Duration::from_millis(gap_ms);
                match kind {
                    0 => p = p.read(now),
                    1 => { p = p.request(); serving += 1; }
                    _ => if serving > 0 { p = p.responded(now); serving -= 1; },
                }
                let deadline = p.deadline(LIMITS);
                proptest::prop_assert_eq!(deadline.is_none(), serving > 0);
                if let Some(at) = deadline {
                    proptest::prop_assert!(at >= t0 + LIMITS.header);
                    proptest::prop_assert!(at <= now + LIMITS.keep_alive.max(LIMITS.header));
                }
            }
        }
    }
}
