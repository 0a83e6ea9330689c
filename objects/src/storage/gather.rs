//! The writer's optional wait for company ([`StoreOptions::commit_delay`]):
//! a group that found the writer idle waits until it is full or the delay
//! has passed, so that commits arriving close together share one sync.
//!
//! [`StoreOptions::commit_delay`]: super::StoreOptions::commit_delay

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// A queued job the group can take: `push` returns false for a stop.
pub(super) trait Group<J> {
    /// Takes a job; false when it asks the writer to stop.
    fn push(&mut self, job: J) -> bool;
    /// Whether no more jobs fit (the group is full, or holds a job that
    /// commits on its own).
    fn closed(&self, max_group: usize) -> bool;
}

/// A clock for the wait: a runtime of the writer thread's own (it may run
/// outside any runtime, and never on a caller's paused clock).
pub(super) struct Gather {
    delay: Duration,
    rt: tokio::runtime::Runtime,
}

impl Gather {
    /// `None` for no delay (or when no timer can be made: then the writer
    /// commits at once, as without one).
    pub(super) fn new(delay: Duration) -> Option<Gather> {
        if delay.is_zero() {
            return None;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build();
        match rt {
            Ok(rt) => Some(Gather { delay, rt }),
            Err(e) => {
                tracing::warn!(error = %e, "no timer for the commit delay; committing at once");
                None
            }
        }
    }

    /// Adds jobs to `group` as they come until it is closed or the delay
    /// has passed. Returns true when a stop (or the channel's end) came.
    pub(super) fn fill<J>(
        &self,
        rx: &mut mpsc::Receiver<J>,
        group: &mut impl Group<J>,
        max_group: usize,
    ) -> bool {
        let deadline = Instant::now() + self.delay;
        while !group.closed(max_group) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let next = self
                .rt
                .block_on(async { tokio::time::timeout(left, rx.recv()).await });
            match next {
                Ok(Some(job)) => {
                    if !group.push(job) {
                        return true;
                    }
                }
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
        false
    }
}
