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
//! use objects::{BoxError, Context, Object, Runtime};
//! use std::sync::Arc;
//!
//! struct Counter { n: u64 }
//!
//! impl Object for Counter {
//!     type Env = ();
//!     type Call = u64;
//!     type Reply = u64;
//!     async fn new(ctx: &mut Context, _env: Arc<()>) -> Result<Self, BoxError> {
//!         Ok(Counter { n: ctx.storage().get("n")?.unwrap_or(0) })
//!     }
//!     async fn call(&mut self, ctx: &mut Context, add: u64) -> Result<u64, BoxError> {
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
//!
//! # Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `metrics` | on | counters, histograms and gauges through the [`metrics`](https://docs.rs/metrics) facade (`METRICS`, `Runtime::publish_metrics`); without it the same calls compile to nothing and the `metrics` crate is not built |
//! | `admin` | on | the operator's tools: `Admin` (offline backup, listing, export and import of a data dir) and the inspector's views (`Runtime::list_objects`, `Runtime::view_object`) |
//! | `cluster` | off | objects placed across nodes: ownership in etcd, calls over QUIC with mutual TLS, shards handed between live nodes (`Cluster`); needs `protoc` to build |
//! | `testing` | off | test hooks: the storage model and interpreter (`objects::testing`), `Runtime::inject_commit_failures`; not for production |
//!
//! `objects = { version = "0.1", default-features = false }` leaves out
//! `metrics` and `admin`; add back what you need with `features = [...]`.
//! CI builds and lints the library with no optional feature and with each
//! one alone. WebSocket support has no feature: it runs through the core
//! (the `Object` trait's socket handlers, mailboxes, hibernation, the
//! output gate) and through public types, so it is not a part that could
//! be left out whole; the crate's README says what it costs to build.

/// `with_<field>` setters for an options struct whose fields are public
/// but which is `#[non_exhaustive]` (so it cannot be built with a struct
/// literal outside this crate, and adding a field breaks nobody).
macro_rules! with_setters {
    ($ty:ty { $($setter:ident => $field:ident: $fty:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
                #[must_use]
                pub fn $setter(mut self, value: $fty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

// Each module uses only modules of lower layers: docs/architecture.md draws
// the layers and tests/layers.rs holds their order and checks it. The one
// pair that use each other is `dispatch` and `activation`.
mod activation;
#[cfg(feature = "admin")]
mod admin;
mod alarm;
mod background;
mod clock;
#[cfg(feature = "cluster")]
mod cluster;
mod context;
mod dispatch;
mod error;
mod event;
#[cfg(feature = "cluster")]
mod forward;
mod gate;
mod http;
mod id;
mod metrics;
mod namespace;
mod object;
mod options;
mod registry;
// The cluster's seam and pure rules; its shell is `cluster`.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
mod remote;
mod runtime;
mod shared;
mod storage;
mod stream;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
mod websocket;

#[cfg(feature = "admin")]
pub use admin::inspect::{
    MAX_LISTED_OBJECTS, MAX_VIEWED_ENTRIES, ObjectPage, ObjectSummary, ObjectView, SocketView,
    ViewOptions,
};
#[cfg(feature = "admin")]
pub use admin::{
    Admin, AdminError, Entry, Export, ExportFilter, ImportStats, MAX_LINE_BYTES, ObjectInfo,
};
pub use alarm::AlarmInfo;
pub use background::SpawnError;
pub use clock::{Clock, TokioClock};
#[cfg(feature = "cluster")]
pub use cluster::{
    Cluster, ClusterCa, ClusterError, ClusterOptions, ClusterStatus, HandOffReport,
    NodeCertificate, RestoreReport,
};
pub use context::Context;
pub use error::{Aborted, BoxError, Error, EventTimeout, Result};
pub use http::{BodyError, Request, Response, buffer_request};
pub use id::{IdError, ObjectId};
pub use metrics::{METRICS, NamespaceStats, RuntimeStats};
pub use namespace::{Namespace, Stub};
pub use object::{Handler, Method, Object};
pub use options::{NamespaceOptions, RuntimeOptions};
pub use runtime::{Runtime, RuntimeBuilder, ShutdownReport};
pub use storage::{
    ListOptions, MAX_EVENT_BYTES, MAX_KEYS_PER_CALL, MAX_TIMER_NAME, MAX_TIMERS, MAX_VALUE_BYTES,
    Storage, StorageError, StoreOptions, StoreUsage, StoredValue, Timer, TimerInfo, Timers,
};
pub use stream::{
    BodySender, BodyStream, MAX_STREAM_BYTES, MAX_STREAM_CHUNKS, StreamCut, StreamResponse,
};
pub use websocket::socket::WebSocketOptions;
pub use websocket::{
    CloseEvent, MAX_ATTACHMENT_BYTES, MAX_AUTO_RESPONSE_CHARS, MAX_SOCKETS, MAX_TAG_CHARS,
    MAX_TAGS, Message, WebSocket, WebSocketError,
};

/// The crate's README (its crates.io page), compiled as a doctest so its
/// example keeps up with the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
