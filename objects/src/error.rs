//! Errors: one enum per layer, converted into the top-level [`Error`].

use std::sync::Arc;
use std::time::Duration;

use crate::id::ObjectId;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a handler may fail with: any error, boxed (as tower and hyper do),
/// so `?` works on any `std::error::Error` inside a handler. The runtime
/// keeps it as the [`source`](std::error::Error::source) of the
/// [`Error::Reset`] the caller gets.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong when talking to an object or its storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object's mailbox is full: too many events are queued. Do not retry at
    /// once; the object is busy and a retry adds to the queue.
    #[error("object {id} is overloaded: {capacity} events already queued")]
    Overloaded {
        /// The object.
        id: ObjectId,
        /// The mailbox bound that was reached.
        capacity: usize,
    },
    /// A handler failed (error, panic, or a failed commit): the instance was
    /// dropped, its uncommitted writes and held output discarded. The next
    /// event constructs a fresh instance from storage.
    #[error("object {id} was reset: {cause}")]
    Reset {
        /// The object.
        id: ObjectId,
        /// Why it was reset: the handler's error, a panic, or the failed
        /// commit (shared by every event of the group it failed).
        #[source]
        cause: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The call did not complete within its deadline (see `docs/semantics.md`:
    /// a call cycle between objects ends here).
    #[error("call to object {id} exceeded its deadline of {deadline:?}")]
    DeadlineExceeded {
        /// The object.
        id: ObjectId,
        /// The deadline that passed.
        deadline: Duration,
    },
    /// A call would wait on an object that is already waiting on this call
    /// (A calls B calls A). Refused at once instead of waiting for a deadline.
    #[error("call cycle: object {id} is already handling an event further up this call chain")]
    CallCycle {
        /// The object that would have been re-entered.
        id: ObjectId,
    },
    /// The runtime is shutting down and takes no new events.
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// The handler is not implemented by this object type.
    #[error("{0} is not implemented by this object")]
    NotImplemented(&'static str),
    /// Id parsing or validation failed.
    #[error(transparent)]
    Id(#[from] crate::id::IdError),
    /// A storage operation failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// An offline admin operation (export, import, backup) failed.
    #[error(transparent)]
    #[cfg(feature = "admin")]
    Admin(#[from] crate::admin::AdminError),
    /// A WebSocket operation failed.
    #[error(transparent)]
    WebSocket(#[from] crate::websocket::WebSocketError),
    /// A namespace was registered twice, or looked up but never registered.
    #[error("namespace {0:?}: {1}")]
    Namespace(String, &'static str),
    /// In a cluster: no node may serve the object now (its shard's owner
    /// is down, has no owner yet, or this node's lease lapsed), or the
    /// owner could not be reached. Nothing was run; retry later.
    #[error("object {id} is unavailable: {reason}")]
    Unavailable {
        /// The object.
        id: ObjectId,
        /// Why, for the operator.
        reason: String,
    },
}

/// Why an object was reset when an event ran past its time limit: the
/// [`source`](std::error::Error::source) of the [`Error::Reset`] its caller
/// gets (downcast to tell it apart).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the event ran past its time limit of {limit:?}")]
#[non_exhaustive]
pub struct EventTimeout {
    /// The namespace's event time limit.
    pub limit: Duration,
}

/// Why an object was reset when a handler called
/// [`Context::abort`](crate::Context::abort): the source of the
/// [`Error::Reset`] its caller gets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("aborted by the object: {reason}")]
#[non_exhaustive]
pub struct Aborted {
    /// The reason the handler gave.
    pub reason: String,
}

impl Error {
    /// True when the error means the object was reset.
    pub fn is_reset(&self) -> bool {
        matches!(self, Error::Reset { .. })
    }

    /// True when the error means the object's mailbox was full.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Error::Overloaded { .. })
    }

    /// True when the error means no node may serve the object now.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}
