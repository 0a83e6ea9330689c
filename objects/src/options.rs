//! The runtime's tunables.

use std::time::Duration;

use crate::storage::StoreOptions;
use crate::websocket::socket::WebSocketOptions;

/// Tunables of a runtime. Every bound the runtime keeps is here.
///
/// ```
/// use std::time::Duration;
/// let opts = objects::RuntimeOptions::default()
///     .with_idle_timeout(Duration::from_secs(10))
///     .with_mailbox_capacity(64);
/// assert_eq!(opts.mailbox_capacity, 64);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RuntimeOptions {
    /// Events queued per object before callers get [`Error::Overloaded`](crate::Error::Overloaded).
    /// Default 1024.
    pub mailbox_capacity: usize,
    /// Time without events after which an object is evicted from memory.
    /// Cloudflare evicts after 70 to 140 s; default 70 s.
    pub idle_timeout: Duration,
    /// How long a caller waits for an event to be handled (queueing, running
    /// and committing) before it gets [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded). Default 30 s.
    pub call_timeout: Duration,
    /// Most events of one object run back to back before their writes
    /// commit together (their output is held until then). Default 64.
    pub max_events_per_commit: usize,
    /// Time after which an object whose only work is accepted WebSockets
    /// is evicted (hibernated); its sockets stay open. Default 10 s.
    pub hibernation_timeout: Duration,
    /// Storage options.
    pub store: StoreOptions,
    /// WebSocket options.
    pub websocket: WebSocketOptions,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            mailbox_capacity: 1024,
            idle_timeout: Duration::from_secs(70),
            call_timeout: Duration::from_secs(30),
            max_events_per_commit: 64,
            hibernation_timeout: Duration::from_secs(10),
            store: StoreOptions::default(),
            websocket: WebSocketOptions::default(),
        }
    }
}

with_setters!(RuntimeOptions {
    with_mailbox_capacity => mailbox_capacity: usize,
    with_idle_timeout => idle_timeout: Duration,
    with_call_timeout => call_timeout: Duration,
    with_max_events_per_commit => max_events_per_commit: usize,
    with_hibernation_timeout => hibernation_timeout: Duration,
    with_store => store: StoreOptions,
    with_websocket => websocket: WebSocketOptions,
});
