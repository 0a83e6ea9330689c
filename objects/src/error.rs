//! Errors: one enum per layer, converted into the top-level [`Error`].

use std::time::Duration;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when talking to an object or its storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object's mailbox is full: too many events are queued. Do not retry at
    /// once; the object is busy and a retry adds to the queue.
    #[error("object {id} is overloaded: {capacity} events already queued")]
    Overloaded {
        /// The object's id, as hex.
        id: String,
        /// The mailbox bound that was reached.
        capacity: usize,
    },
    /// A handler failed (error, panic, or a failed commit): the instance was
    /// dropped, its uncommitted writes and held output discarded. The next
    /// event constructs a fresh instance from storage.
    #[error("object {id} was reset: {cause}")]
    Reset {
        /// The object's id, as hex.
        id: String,
        /// Why it was reset.
        cause: String,
    },
    /// The call did not complete within its deadline (see `docs/semantics.md`:
    /// a call cycle between objects ends here).
    #[error("call to object {id} exceeded its deadline of {deadline:?}")]
    DeadlineExceeded {
        /// The object's id, as hex.
        id: String,
        /// The deadline that passed.
        deadline: Duration,
    },
    /// A call would wait on an object that is already waiting on this call
    /// (A calls B calls A). Refused at once instead of waiting for a deadline.
    #[error("call cycle: object {id} is already handling an event further up this call chain")]
    CallCycle {
        /// The object that would have been re-entered, as hex.
        id: String,
    },
    /// The runtime is shutting down and takes no new events.
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// The handler is not implemented by this object type.
    #[error("{0} is not implemented by this object")]
    NotImplemented(&'static str),
    /// An error raised by application code inside a handler.
    #[error("{0}")]
    App(String),
    /// Id parsing or validation failed.
    #[error(transparent)]
    Id(#[from] crate::id::IdError),
    /// A storage operation failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// An offline admin operation (export, import, backup) failed.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    /// A WebSocket operation failed.
    #[error(transparent)]
    WebSocket(#[from] crate::websocket::WebSocketError),
    /// A namespace was registered twice, or looked up but never registered.
    #[error("namespace {0:?}: {1}")]
    Namespace(String, &'static str),
}

impl Error {
    /// An application error with a message, for use inside handlers.
    pub fn app(message: impl std::fmt::Display) -> Self {
        Error::App(message.to_string())
    }

    /// True when the error means the object was reset.
    pub fn is_reset(&self) -> bool {
        matches!(self, Error::Reset { .. })
    }

    /// True when the error means the object's mailbox was full.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Error::Overloaded { .. })
    }
}
