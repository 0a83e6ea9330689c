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
    /// Bytes of WebSocket messages queued per object: a socket whose next
    /// message would go past it waits (its client feels TCP backpressure)
    /// until the object has taken enough of the queue. One message larger
    /// than the whole budget waits for an empty queue. Default 4 MiB.
    pub mailbox_bytes: usize,
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
    /// Most objects of one namespace in memory at once. Past it, the
    /// idlest of a sample of live objects is asked to leave (as on an idle
    /// timeout: once its mailbox is empty; its sockets stay open and its
    /// next event brings it back). Default: no cap.
    pub max_live_objects: usize,
    /// How long one event (a handler, or the constructor before it) may
    /// run. An event past it resets the object: the instance is dropped,
    /// the event's writes and frames are discarded, its caller gets
    /// [`Error::Reset`](crate::Error::Reset) whose cause is
    /// [`EventTimeout`](crate::EventTimeout); sockets stay open. Default
    /// 30 s (Cloudflare's limit on `blockConcurrencyWhile`).
    pub event_time_limit: Duration,
    /// Background tasks ([`Context::spawn`](crate::Context::spawn)) one
    /// object may have running at once (a finished one counts until its
    /// result is taken from the mailbox); one more is refused. Default 64.
    pub max_background: usize,
    /// Storage options.
    pub store: StoreOptions,
    /// WebSocket options.
    pub websocket: WebSocketOptions,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            mailbox_capacity: 1024,
            mailbox_bytes: 4 << 20,
            idle_timeout: Duration::from_secs(70),
            call_timeout: Duration::from_secs(30),
            max_events_per_commit: 64,
            hibernation_timeout: Duration::from_secs(10),
            max_live_objects: usize::MAX,
            event_time_limit: Duration::from_secs(30),
            max_background: 64,
            store: StoreOptions::default(),
            websocket: WebSocketOptions::default(),
        }
    }
}

with_setters!(RuntimeOptions {
    with_mailbox_capacity => mailbox_capacity: usize,
    with_mailbox_bytes => mailbox_bytes: usize,
    with_idle_timeout => idle_timeout: Duration,
    with_call_timeout => call_timeout: Duration,
    with_max_events_per_commit => max_events_per_commit: usize,
    with_hibernation_timeout => hibernation_timeout: Duration,
    with_max_live_objects => max_live_objects: usize,
    with_event_time_limit => event_time_limit: Duration,
    with_max_background => max_background: usize,
    with_store => store: StoreOptions,
    with_websocket => websocket: WebSocketOptions,
});

/// Settings of one namespace that override the runtime's
/// ([`RuntimeOptions`]); a field left `None` takes the runtime's value.
/// Give them to [`Runtime::namespace_with`](crate::Runtime::namespace_with).
///
/// ```
/// use std::time::Duration;
/// let opts = objects::NamespaceOptions::default()
///     .with_event_time_limit(Duration::from_secs(5))
///     .with_mailbox_capacity(16);
/// assert_eq!(opts.idle_timeout, None);
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct NamespaceOptions {
    /// See [`RuntimeOptions::idle_timeout`].
    pub idle_timeout: Option<Duration>,
    /// See [`RuntimeOptions::hibernation_timeout`].
    pub hibernation_timeout: Option<Duration>,
    /// See [`RuntimeOptions::mailbox_capacity`].
    pub mailbox_capacity: Option<usize>,
    /// See [`RuntimeOptions::mailbox_bytes`].
    pub mailbox_bytes: Option<usize>,
    /// See [`RuntimeOptions::event_time_limit`].
    pub event_time_limit: Option<Duration>,
    /// See [`RuntimeOptions::max_background`].
    pub max_background: Option<usize>,
}

impl NamespaceOptions {
    /// Sets [`idle_timeout`](Self::idle_timeout).
    #[must_use]
    pub fn with_idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// Sets [`hibernation_timeout`](Self::hibernation_timeout).
    #[must_use]
    pub fn with_hibernation_timeout(mut self, d: Duration) -> Self {
        self.hibernation_timeout = Some(d);
        self
    }

    /// Sets [`mailbox_capacity`](Self::mailbox_capacity) (at least 1).
    #[must_use]
    pub fn with_mailbox_capacity(mut self, n: usize) -> Self {
        self.mailbox_capacity = Some(n.max(1));
        self
    }

    /// Sets [`mailbox_bytes`](Self::mailbox_bytes) (at least 1).
    #[must_use]
    pub fn with_mailbox_bytes(mut self, n: usize) -> Self {
        self.mailbox_bytes = Some(n.max(1));
        self
    }

    /// Sets [`event_time_limit`](Self::event_time_limit).
    #[must_use]
    pub fn with_event_time_limit(mut self, d: Duration) -> Self {
        self.event_time_limit = Some(d);
        self
    }

    /// Sets [`max_background`](Self::max_background).
    #[must_use]
    pub fn with_max_background(mut self, n: usize) -> Self {
        self.max_background = Some(n);
        self
    }

    /// These settings over the runtime's defaults.
    pub(crate) fn resolve(&self, rt: &RuntimeOptions) -> NsLimits {
        NsLimits {
            idle_timeout: self.idle_timeout.unwrap_or(rt.idle_timeout),
            hibernation_timeout: self.hibernation_timeout.unwrap_or(rt.hibernation_timeout),
            mailbox_capacity: self.mailbox_capacity.unwrap_or(rt.mailbox_capacity).max(1),
            mailbox_bytes: self.mailbox_bytes.unwrap_or(rt.mailbox_bytes).max(1),
            event_time_limit: self.event_time_limit.unwrap_or(rt.event_time_limit),
            max_background: self.max_background.unwrap_or(rt.max_background),
        }
    }
}

/// One namespace's settings, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NsLimits {
    pub(crate) idle_timeout: Duration,
    pub(crate) hibernation_timeout: Duration,
    pub(crate) mailbox_capacity: usize,
    pub(crate) mailbox_bytes: usize,
    pub(crate) event_time_limit: Duration,
    pub(crate) max_background: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_settings_override_only_what_they_set() {
        let rt = RuntimeOptions::default().with_idle_timeout(Duration::from_secs(5));
        let ns = NamespaceOptions::default()
            .with_event_time_limit(Duration::from_secs(2))
            .with_mailbox_capacity(0);
        let l = ns.resolve(&rt);
        assert_eq!(l.idle_timeout, Duration::from_secs(5));
        assert_eq!(l.event_time_limit, Duration::from_secs(2));
        assert_eq!(l.mailbox_capacity, 1);
        assert_eq!(l.hibernation_timeout, rt.hibernation_timeout);
        assert_eq!(l.max_background, rt.max_background);
    }
}
