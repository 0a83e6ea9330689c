//! The cluster's seam below the dispatcher: where an object's events go
//! ([`Route`]), what travels between nodes (`wire`), and the pure
//! placement and lease rules (`shard`). The shell that talks to etcd and
//! QUIC (`crate::cluster`, the cargo feature `cluster`) implements
//! [`Route`]; `dispatch` asks it before it queues an event. `replica` is
//! the pure replication state machine (primary, followers, epochs).

pub(crate) mod handoff_wire;
// Used by the cluster (and tests); the rest of the crate has no use for it.
#[cfg_attr(not(any(test, feature = "cluster")), allow(dead_code, unused_imports))]
pub(crate) mod replica;
pub(crate) mod shard;
pub(crate) mod socket_wire;
pub(crate) mod wire;

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::id::ObjectId;

pub(crate) use shard::Place;
pub(crate) use wire::{Kind, Refusal};

/// Where an event held during a hand-off goes when the hand-off ends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Release<'a> {
    /// The move was called off: run it here.
    Here,
    /// The shard moved: send it to `node` at `epoch` (before any event
    /// that was not held, so a stub's events keep their order).
    To { node: &'a str, epoch: u64 },
    /// Place it again, as a new event (the move ended some other way, or
    /// it was never held).
    Again,
}

/// An event held during a hand-off.
pub(crate) type Held = Box<dyn FnOnce(Release<'_>) + Send>;

/// An event on its way to the node that owns its object.
pub(crate) struct Outgoing {
    pub(crate) ns: Arc<str>,
    pub(crate) id: [u8; 32],
    pub(crate) kind: Kind,
    pub(crate) chain: Vec<[u8; 32]>,
    pub(crate) body: Box<RawValue>,
}

/// The answer from the owner: the reply's JSON, or why there is none.
pub(crate) type Answer = Result<Box<RawValue>, Refusal>;

/// Where events go in a cluster, and how they get there.
pub(crate) trait Route: Send + Sync {
    /// Where the object's events go now (by this node's monotonic clock).
    fn place(&self, id: &[u8; 32]) -> Place {
        let view = self
            .view()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        view.place(shard::shard_of(id, view.shards), std::time::Instant::now())
    }

    /// The node's view. A sender that finds an object local activates it
    /// under the view's read lock, so a hand-off (which marks the shard
    /// under the write lock, then waits for its objects to leave memory)
    /// never misses an activation that slipped in between.
    fn view(&self) -> &std::sync::RwLock<shard::View>;

    /// Runs `then` once the hand-off of the object's shard has ended (at
    /// once, with [`Release::Again`], when none is under way), after the
    /// events held before it.
    ///
    /// # Errors
    ///
    /// Too many events are held already: the bound, for `Overloaded`.
    fn hold(&self, id: &[u8; 32], then: Held) -> Result<(), usize>;

    /// Queues `out` for `node`, to be sent after everything queued for that
    /// node before it (so calls through one stub keep their order).
    ///
    /// # Errors
    ///
    /// The node's queue is full ([`Refusal::Overloaded`]) or the node is
    /// not reachable.
    fn send(
        &self,
        node: &str,
        epoch: u64,
        out: Outgoing,
    ) -> Result<oneshot::Receiver<Answer>, Refusal>;

    /// A peer answered that `owner` has the object's shard at `epoch`.
    fn learned(&self, id: &[u8; 32], owner: &str, epoch: u64) {
        let mut view = self
            .view()
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let shard = shard::shard_of(id, view.shards);
        let owner = shard::Owner {
            node: owner.to_string(),
            epoch,
        };
        view.learned(shard, owner);
    }
}

/// The cause of a [`Error::Reset`] that happened on another node: its text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RemoteCause(pub(crate) String);

/// How an error crosses to the calling node.
pub(crate) fn refusal(e: &Error) -> Refusal {
    match e {
        Error::Overloaded { capacity, .. } => Refusal::Overloaded {
            capacity: *capacity,
        },
        Error::Reset { cause, .. } => Refusal::Reset {
            cause: cause.to_string(),
        },
        Error::DeadlineExceeded { deadline, .. } => Refusal::DeadlineExceeded {
            deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        },
        Error::CallCycle { .. } => Refusal::CallCycle,
        Error::ShuttingDown => Refusal::ShuttingDown,
        Error::NotImplemented(h) => Refusal::NotImplemented {
            handler: (*h).to_string(),
        },
        Error::Unavailable { reason, .. } => Refusal::Unavailable {
            reason: reason.clone(),
        },
        e => Refusal::Failed {
            message: e.to_string(),
        },
    }
}

/// The handler names `NotImplemented` can carry, as static text.
const HANDLERS: &[&str] = &[
    "fetch",
    "call",
    "alarm",
    "websocket_message",
    "websocket_close",
    "websocket_error",
];

/// The error a caller gets for a refusal from the owner of `id`.
pub(crate) fn into_error(r: Refusal, id: &ObjectId) -> Error {
    let id = id.clone();
    match r {
        Refusal::Overloaded { capacity } => Error::Overloaded { id, capacity },
        Refusal::Reset { cause } => Error::Reset {
            id,
            cause: Arc::new(RemoteCause(cause)),
        },
        Refusal::DeadlineExceeded { deadline_ms } => Error::DeadlineExceeded {
            id,
            deadline: Duration::from_millis(deadline_ms),
        },
        Refusal::CallCycle => Error::CallCycle { id },
        Refusal::ShuttingDown => Error::ShuttingDown,
        Refusal::NotImplemented { handler } => match HANDLERS.iter().find(|h| **h == handler) {
            Some(h) => Error::NotImplemented(h),
            None => Error::Unavailable {
                id,
                reason: format!("the owner does not implement {handler:?}"),
            },
        },
        Refusal::Moved { owner, epoch } => Error::Unavailable {
            id,
            reason: format!(
                "the object's shard moved to {owner} (epoch {epoch}) and retries ran out"
            ),
        },
        Refusal::Unavailable { reason } => Error::Unavailable { id, reason },
        Refusal::Failed { message } => Error::Unavailable {
            id,
            reason: format!("the owner refused the event: {message}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_as_the_same_variants() {
        let id = ObjectId::from_parts([1; 32], None);
        let cases = vec![
            Error::Overloaded {
                id: id.clone(),
                capacity: 8,
            },
            Error::Reset {
                id: id.clone(),
                cause: Arc::new(RemoteCause("boom".into())),
            },
            Error::DeadlineExceeded {
                id: id.clone(),
                deadline: Duration::from_millis(1500),
            },
            Error::CallCycle { id: id.clone() },
            Error::ShuttingDown,
            Error::NotImplemented("fetch"),
            Error::Unavailable {
                id: id.clone(),
                reason: "down".into(),
            },
        ];
        for e in cases {
            let back = into_error(refusal(&e), &id);
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&e),
                "{e}"
            );
        }
    }
}
