//! Durable Objects for Rust.
//!
//! Many small named *objects*, each running one event at a time, each with
//! its own transactional storage on LMDB, alarms and WebSocket hibernation.
//! Objects are created on first use, evicted when idle, and woken by calls,
//! alarms or socket messages. The writes an event makes commit atomically,
//! and nothing the event sends leaves before they are durable.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> objects::Result<()> {
//! use objects::{Context, Object, Result, Runtime};
//! use std::sync::Arc;
//!
//! struct Counter { n: u64 }
//!
//! impl Object for Counter {
//!     type Env = ();
//!     type Call = u64;
//!     type Reply = u64;
//!     async fn new(ctx: &mut Context, _env: Arc<()>) -> Result<Self> {
//!         Ok(Counter { n: ctx.storage().get("n")?.unwrap_or(0) })
//!     }
//!     async fn call(&mut self, ctx: &mut Context, add: u64) -> Result<u64> {
//!         self.n += add;
//!         ctx.storage().put("n", &self.n)?;
//!         Ok(self.n)   // leaves only once "n" is on disk
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let rt = Runtime::builder().data_dir(dir.path()).open()?;
//! let counters = rt.namespace::<Counter>("counters", ())?;
//! let stub = counters.get_by_name("visits");
//! stub.call(1).await?;
//! assert_eq!(stub.call(2).await?, 3);
//! rt.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! See `docs/architecture.md` and `docs/semantics.md` in the repository for
//! the design and how it compares with Cloudflare's.

mod activation;
mod admin;
mod alarm;
mod clock;
mod context;
mod error;
mod id;
mod inspect;
mod metrics;
mod namespace;
mod object;
mod runtime;
mod storage;
mod websocket;

pub use admin::{
    Admin, AdminError, Entry, EntryValue, Export, ExportFilter, ImportStats, MAX_LINE_BYTES,
    ObjectInfo,
};
pub use clock::{Clock, TokioClock};
pub use context::Context;
pub use error::{Error, Result};
pub use id::{IdError, ObjectId};
pub use inspect::{
    MAX_LISTED_OBJECTS, MAX_VIEWED_ENTRIES, ObjectPage, ObjectSummary, ObjectView, SocketView,
    ValueView, ViewOptions,
};
pub use metrics::{METRICS, NamespaceStats, RuntimeStats};
pub use namespace::{Namespace, Stub};
pub use object::{AlarmInfo, Object, Request, Response};
pub use runtime::{Runtime, RuntimeBuilder, RuntimeOptions};
pub use storage::{
    ListOptions, MAX_EVENT_BYTES, MAX_KEYS_PER_CALL, MAX_VALUE_BYTES, Storage, StorageError,
    StoreOptions, StoreUsage, StoredValue,
};
pub use websocket::socket::WebSocketOptions;
pub use websocket::{
    MAX_ATTACHMENT_BYTES, MAX_AUTO_RESPONSE_CHARS, MAX_SOCKETS, MAX_TAG_CHARS, MAX_TAGS, Message,
    WebSocket, WebSocketError,
};
