//! The Edge Chat Demo on `objects`: chat rooms and per-IP rate limiters as
//! durable objects behind a thin axum front door, speaking three client
//! dialects over the same rooms (see `docs/chat-demo.md`).
//!
//! - [`ChatRoom`]: one object per room; sockets hibernate with their
//!   sessions in attachments; history in storage, stored before anyone
//!   sees a message.
//! - [`RateLimiter`]: one object per client IP, shared by every room.
//! - [`Directory`]: the list of public rooms, kept by the rooms.
//! - [`app`]: the router; [`serve`] runs it with peer addresses.
//! - [`protocol`]: the pure wire codecs of the three dialects.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! use chat_demo::{AppState, ChatOptions, serve};
//!
//! let rt = objects::Runtime::builder().data_dir("./data").open()?;
//! let state = AppState::new(&rt, ChatOptions::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8787").await?;
//! serve(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! rt.shutdown().await;
//! # Ok(()) }
//! ```

mod admission;
mod connections;
mod counters;
pub mod directory;
mod front;
mod limiter;
pub mod protocol;
mod room;

pub use counters::CHAT_METRICS;
pub use directory::Directory;
pub use front::{
    AdminOptions, AppState, ChatOptions, ClientIpHeader, ClusterOps, DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT, DEFAULT_HISTORY_MAX_MESSAGES, DEFAULT_HISTORY_PAGES_PER_MINUTE,
    DEFAULT_IPV6_PREFIX, DEFAULT_JOINS_PER_MINUTE, DEFAULT_KEEP_ALIVE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_TCP_CONNECTIONS,
    DEFAULT_MAX_TCP_CONNECTIONS_PER_IP, DEFAULT_TRUSTED_PROXY_HOPS, HttpLimits,
    InspectorNeedsToken, MAX_BODY_BYTES, NodeHealth, OpFuture, OriginPolicy, ROOM_UNAVAILABLE,
    UnknownClientIpHeader, admin_app, app, install_prometheus, ip_key, origin, serve, serve_router,
};
pub use limiter::RateLimiter;

/// The runtime's WebSocket settings for the chat: the read limit is the
/// largest frame any dialect accepts ([`protocol::MAX_FRAME_BYTES`]), so
/// a bigger one is refused (1009) before it is buffered whole; the rest
/// are the runtime's defaults.
pub fn websocket_options() -> objects::WebSocketOptions {
    objects::WebSocketOptions::default().with_max_message_bytes(protocol::MAX_FRAME_BYTES)
}
pub use room::{ChatRoom, RoomEnv};

/// Bytes of client frames one room may have queued
/// ([`objects::RuntimeOptions::mailbox_bytes`]): 64 frames of the largest
/// size, or about a thousand ordinary messages. Past it, the sockets of
/// that room wait (their clients feel TCP backpressure) instead of growing
/// memory; nothing is dropped.
pub const ROOM_MAILBOX_BYTES: usize = 64 * protocol::MAX_FRAME_BYTES;
