//! WebSocket hibernation: the runtime owns accepted sockets, so an object
//! can be evicted while its sockets stay open.

mod coalesce;
pub(crate) mod moved;
mod queue;
pub(crate) mod registry;
#[cfg(feature = "cluster")]
pub(crate) mod remote;
pub(crate) mod socket;

use bytes::Bytes;

pub use registry::{
    MAX_ATTACHMENT_BYTES, MAX_AUTO_RESPONSE_CHARS, MAX_SOCKETS, MAX_TAG_CHARS, MAX_TAGS,
};

/// How an accepted WebSocket closed, for
/// [`Object::websocket_close`](crate::Object::websocket_close).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseEvent {
    /// The close code the peer sent (1005 when its Close frame had none;
    /// 1006 when it vanished without one).
    pub code: u16,
    /// The reason the peer gave (may be empty).
    pub reason: String,
    /// False when the peer vanished without a Close frame.
    pub clean: bool,
}

/// Errors from WebSocket operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebSocketError {
    /// The request is not a WebSocket upgrade.
    #[error("expected a WebSocket upgrade request")]
    NotAnUpgrade,
    /// More than 10 distinct tags.
    #[error("at most {max} tags per WebSocket, got {len}")]
    TooManyTags {
        /// Distinct tags given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A tag longer than 256 characters.
    #[error("tag of {len} characters is over the limit of {max}")]
    TagTooLong {
        /// The tag's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An attachment over the size limit; the previous one is kept.
    #[error("attachment of {len} bytes is over the limit of {max} bytes")]
    AttachmentTooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The object already holds the most sockets allowed.
    #[error("this object already holds {0} WebSockets")]
    TooManySockets(usize),
    /// The runtime is shutting down and accepts no new sockets.
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// The socket is not (or no longer) accepted by this object.
    #[error("unknown or closed WebSocket")]
    UnknownSocket,
    /// An auto-response request or response over 2048 characters.
    #[error("auto-response string of {len} characters is over the limit of {max}")]
    AutoResponseTooLong {
        /// The string's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An attachment that does not encode or decode.
    #[error("attachment codec: {0}")]
    Codec(String),
}

/// A handle to a WebSocket accepted by an object. Cheap to copy; valid
/// across hibernation (the runtime keeps the socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WebSocket {
    pub(crate) sid: u64,
}

impl WebSocket {
    /// A number identifying this socket within the runtime.
    pub fn sid(&self) -> u64 {
        self.sid
    }
}

/// A WebSocket data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Text(s)
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::Text(s.to_string())
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Message::Binary(b)
    }
}
