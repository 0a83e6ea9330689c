//! Errors of the storage layer. Each keeps its cause as its `source()`;
//! the message repeats the cause's text too, so a log line that prints
//! only the message still says what went wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A boxed cause whose type is not part of this crate's API.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors from storage operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The key is longer than the limit (see `docs/storage.md`).
    #[error("key of {len} bytes is over the limit of {max} bytes")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is longer than [`MAX_VALUE_BYTES`](crate::MAX_VALUE_BYTES).
    #[error("value of {len} bytes is over the limit of {max} bytes")]
    ValueTooLarge {
        /// The encoded value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_KEYS_PER_CALL`](crate::MAX_KEYS_PER_CALL) keys in one call.
    #[error("{len} keys in one call, over the limit of {max}")]
    TooManyKeys {
        /// Keys given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The event buffered more than [`MAX_EVENT_BYTES`](crate::MAX_EVENT_BYTES) of writes.
    #[error("this event buffered over {0} bytes of writes; call sync() to commit part of them")]
    EventTooLarge(usize),
    /// Invalid list options.
    #[error("invalid list options: {0}")]
    InvalidList(&'static str),
    /// An operation that is not allowed inside a transaction.
    #[error("{0} is not allowed inside a transaction")]
    InTransaction(&'static str),
    /// An alarm time of 0 (Cloudflare refuses it too).
    #[error("alarm time must be after the Unix epoch")]
    InvalidAlarm,
    /// Invalid timer settings (see [`Timers`](crate::Timers)).
    #[error("invalid timer: {0}")]
    InvalidTimer(&'static str),
    /// The object already has the most timers it may have.
    #[error("too many timers: an object may have at most {max}")]
    TooManyTimers {
        /// The limit.
        max: usize,
    },
    /// Encoding or decoding a typed value failed.
    #[error("value codec: {0}")]
    Codec(#[source] BoxError),
    /// The data dir reached its size limit; nothing was written. Reads keep
    /// working. Free space with deletes or raise `StoreOptions::max_size`.
    #[error("storage full: the data dir reached its size limit")]
    Full,
    /// A commit failed; the object was reset and its writes discarded.
    /// The cause is shared by every event of the failed commit group.
    #[error("commit failed: {0}")]
    CommitFailed(#[source] Arc<StorageError>),
    /// The data dir is already open, by another process or in this one.
    #[error("data dir {0} is in use by another process (or already open in this one)")]
    DataDirInUse(PathBuf),
    /// The store was written by an unknown format version.
    #[error("unknown store format {0}")]
    UnknownFormat(String),
    /// Stored bytes do not decode.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A backup target already holds a store.
    #[error("backup target {0} already exists")]
    BackupTargetExists(PathBuf),
    /// The writer has stopped (the runtime shut down).
    #[error("storage is closed")]
    Closed,
    /// A commit is on this node's disk but its shard's replicas will not
    /// confirm it here (the node stopped being the shard's primary): it
    /// was not acknowledged, and may be undone.
    #[error("not replicated: {0}")]
    Replication(String),
    /// An I/O error outside LMDB.
    #[error("I/O on {context}: {source}")]
    Io {
        /// The path or step concerned.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Any other LMDB error.
    #[error("LMDB error during {op}: {source}")]
    Lmdb {
        /// What was being done.
        op: &'static str,
        /// LMDB's error (its type is not part of this crate's API).
        #[source]
        source: BoxError,
    },
}

impl StorageError {
    /// A copy of the same kind and text, for an error that must be both
    /// returned and kept (a failed sync breaks the rest of the event). The
    /// copy's cause keeps its text but not its type.
    pub(crate) fn duplicate(&self) -> StorageError {
        use StorageError::*;
        let text = |e: &dyn std::error::Error| -> BoxError { e.to_string().into() };
        match self {
            KeyTooLarge { len, max } => KeyTooLarge {
                len: *len,
                max: *max,
            },
            ValueTooLarge { len, max } => ValueTooLarge {
                len: *len,
                max: *max,
            },
            TooManyKeys { len, max } => TooManyKeys {
                len: *len,
                max: *max,
            },
            EventTooLarge(n) => EventTooLarge(*n),
            InvalidList(m) => InvalidList(m),
            InTransaction(m) => InTransaction(m),
            InvalidAlarm => InvalidAlarm,
            InvalidTimer(m) => InvalidTimer(m),
            TooManyTimers { max } => TooManyTimers { max: *max },
            Codec(e) => Codec(text(e.as_ref())),
            Full => Full,
            CommitFailed(e) => CommitFailed(e.clone()),
            DataDirInUse(p) => DataDirInUse(p.clone()),
            UnknownFormat(m) => UnknownFormat(m.clone()),
            Corrupt(m) => Corrupt(m.clone()),
            BackupTargetExists(p) => BackupTargetExists(p.clone()),
            Closed => Closed,
            Replication(m) => Replication(m.clone()),
            Io { context, source } => Io {
                context: context.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Lmdb { op, source } => Lmdb {
                op,
                source: text(source.as_ref()),
            },
        }
    }

    pub(crate) fn codec(e: &serde_json::Error) -> Self {
        StorageError::Codec(e.to_string().into())
    }

    pub(crate) fn io(path: &Path, e: std::io::Error) -> Self {
        StorageError::Io {
            context: path.display().to_string(),
            source: e,
        }
    }

    pub(crate) fn lmdb(op: &'static str, e: heed::Error) -> Self {
        match e {
            heed::Error::Mdb(heed::MdbError::MapFull) => StorageError::Full,
            e => StorageError::Lmdb {
                op,
                source: Box::new(e),
            },
        }
    }
}
