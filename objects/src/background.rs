//! Background work of one object: futures that run outside its input gate
//! and whose results come back through its mailbox as ordinary events
//! (`Context::spawn`).
//!
//! This module keeps the bookkeeping: how many futures one instance has
//! running (bounded), which instance they belong to (an epoch that moves
//! on at every reset, so a late result of a dropped instance is never run)
//! and the token that cancels them. Delivery into the mailbox goes through
//! [`Sink`], which the namespace implements (this module needs nothing
//! above it).

use std::any::Any;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

/// A finished background future's continuation, type-erased: the
/// activation turns it back into a closure over its own object type.
pub(crate) type Done = Box<dyn Any + Send>;

/// Where finished background work goes: the object's mailbox.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Queues the continuation `done` of a future spawned by instance
    /// `epoch` of object `id`, waiting for room in its mailbox. The
    /// future's [`Running`] slot travels with it and is given back when
    /// the event is taken out of the mailbox (or dropped), so a
    /// continuation that spawns again finds its own slot free. False if it
    /// could not be queued (shutdown).
    fn deliver(
        &self,
        id: [u8; 32],
        epoch: u64,
        done: Done,
        running: Running,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// Why [`Context::spawn`](crate::Context::spawn) refused a future.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The object already has the most background futures running that
    /// its namespace allows
    /// ([`max_background`](crate::RuntimeOptions::max_background)).
    #[error(
        "too much background work: {running} futures already running (the most this object may run at once is {max})"
    )]
    Full {
        /// Futures running when the spawn was refused.
        running: usize,
        /// The namespace's bound.
        max: usize,
    },
    /// The continuation takes another type than this object's.
    #[error("the continuation takes another object type than this object's")]
    WrongObject,
    /// The runtime is shutting down.
    #[error("the runtime is shutting down")]
    ShuttingDown,
}

/// One live object's background work.
pub(crate) struct Background {
    /// Cancelled (and replaced) when the instance is dropped.
    token: CancellationToken,
    /// Which instance spawns now; results of other epochs are dropped.
    epoch: u64,
    /// Futures running (not yet finished or cancelled).
    running: Arc<AtomicUsize>,
    max: usize,
}

/// Held by a running future, then by its queued result; counts it until
/// the result is taken from the mailbox, or either is dropped.
pub(crate) struct Running(Arc<AtomicUsize>);

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Background {
    pub(crate) fn new(max: usize) -> Self {
        Background {
            token: CancellationToken::new(),
            epoch: 0,
            running: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Claims a slot for one more future.
    pub(crate) fn claim(&self) -> Result<(u64, CancellationToken, Running), SpawnError> {
        let mut now = self.running.load(Ordering::Acquire);
        loop {
            if now >= self.max {
                return Err(SpawnError::Full {
                    running: now,
                    max: self.max,
                });
            }
            match self
                .running
                .compare_exchange(now, now + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(seen) => now = seen,
            }
        }
        Ok((
            self.epoch,
            self.token.clone(),
            Running(self.running.clone()),
        ))
    }

    /// Futures still running.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// True if a result of `epoch` belongs to the current instance.
    pub(crate) fn is_current(&self, epoch: u64) -> bool {
        epoch == self.epoch
    }

    /// The instance is gone: cancel its futures; any result already
    /// queued is dropped when it is taken from the mailbox.
    pub(crate) fn reset(&mut self) {
        self.token.cancel();
        self.token = CancellationToken::new();
        self.epoch += 1;
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_counts_running_futures_and_a_reset_moves_the_epoch() {
        let mut b = Background::new(2);
        let (e0, t0, r1) = b.claim().expect("first");
        let (_, _, r2) = b.claim().expect("second");
        let full = b.claim().expect_err("third is refused");
        assert!(matches!(full, SpawnError::Full { running: 2, max: 2 }));
        assert!(full.to_string().contains("at once is 2"), "{full}");
        drop(r1);
        assert_eq!(b.running(), 1);
        let (_, _, r3) = b.claim().expect("room again");
        assert!(b.is_current(e0));
        b.reset();
        assert!(t0.is_cancelled());
        assert!(!b.is_current(e0));
        drop((r2, r3));
        assert_eq!(b.running(), 0);
    }
}
