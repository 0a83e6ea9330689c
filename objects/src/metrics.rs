//! What the runtime counts, through the [`metrics`] facade: whatever
//! recorder the application installs (Prometheus, StatsD, none) gets them.
//!
//! Counters and histograms are recorded as things happen, through handles
//! registered when the runtime opens (the storage writer's) and when each
//! namespace is registered (the rest, labelled `namespace` like the
//! gauges), so the hot path pays one atomic add and no name lookup; install
//! the recorder before opening the runtime.
//! Figures that are a state rather than an event (live objects, open
//! sockets, pending alarms, bytes stored) are read when asked for, by
//! [`Runtime::stats`](crate::Runtime::stats), and published as gauges by
//! [`Runtime::publish_metrics`](crate::Runtime::publish_metrics), which an
//! exporter calls before it renders.

#[cfg(not(feature = "metrics"))]
use self::off::{Counter, Histogram};
#[cfg(feature = "metrics")]
use metrics::{Counter, Histogram, Unit};

/// Every metric name the library records, with its unit and help text.
/// `docs/operations.md` lists the same.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        "objects_activations_total",
        "counter",
        "objects brought into memory (first use or woken)",
    ),
    (
        "objects_evictions_total",
        "counter",
        "objects evicted when idle or hibernated",
    ),
    (
        "objects_resets_total",
        "counter",
        "instances dropped after a handler error, panic or failed commit",
    ),
    (
        "objects_event_timeouts_total",
        "counter",
        "objects reset because an event ran past its time limit",
    ),
    (
        "objects_aborts_total",
        "counter",
        "objects reset on purpose by a handler (Context::abort)",
    ),
    (
        "objects_background_spawned_total",
        "counter",
        "background futures started (Context::spawn)",
    ),
    (
        "objects_overloads_total",
        "counter",
        "events refused because a mailbox was full",
    ),
    (
        "objects_calls_total",
        "counter",
        "fetch and call events sent through stubs",
    ),
    (
        "objects_call_seconds",
        "histogram",
        "stub call latency: enqueue until the reply, commit included",
    ),
    (
        "objects_events_total",
        "counter",
        "events run (calls, fetches, alarms, socket events)",
    ),
    (
        "objects_commits_total",
        "counter",
        "commit groups written (one LMDB transaction and one data sync each)",
    ),
    (
        "objects_store_syncs_total",
        "counter",
        "explicit syncs of the store file: a group's meta page made durable when no next group came to do it",
    ),
    (
        "objects_commit_failures_total",
        "counter",
        "object batches whose commit failed",
    ),
    (
        "objects_commit_batch_size",
        "histogram",
        "object batches per LMDB transaction (group commit)",
    ),
    (
        "objects_commit_seconds",
        "histogram",
        "LMDB transaction time, writes and fsync",
    ),
    (
        "objects_alarms_fired_total",
        "counter",
        "alarm and timer handler runs that succeeded",
    ),
    (
        "objects_alarms_retried_total",
        "counter",
        "alarm and timer runs that failed and were scheduled again",
    ),
    (
        "objects_alarms_dropped_total",
        "counter",
        "alarms and timers dropped after their last retry",
    ),
    (
        "objects_sockets_accepted_total",
        "counter",
        "WebSockets accepted by objects",
    ),
    (
        "objects_sockets_closed_total",
        "counter",
        "accepted WebSockets that ended (any reason)",
    ),
    (
        "objects_sockets_cut_slow_total",
        "counter",
        "WebSockets closed with 1008 because their reader fell behind",
    ),
    (
        "objects_websocket_messages_in_total",
        "counter",
        "WebSocket messages received from peers",
    ),
    (
        "objects_websocket_messages_out_total",
        "counter",
        "WebSocket messages queued to peers (a broadcast counts each recipient)",
    ),
    (
        "objects_shard_handoffs_total",
        "counter",
        "shards this node handed to another node (cluster), by outcome: moved or called_off",
    ),
    (
        "objects_shard_handoff_pause_seconds",
        "histogram",
        "how long a shard's events waited while this node handed it off (cluster)",
    ),
    ("objects_live", "gauge", "objects in memory, per namespace"),
    (
        "objects_hibernated",
        "gauge",
        "objects not in memory that hold accepted WebSockets, per namespace",
    ),
    (
        "objects_sockets_open",
        "gauge",
        "accepted WebSockets open, per namespace",
    ),
    (
        "objects_mailbox_queued",
        "gauge",
        "events waiting in mailboxes, per namespace",
    ),
    (
        "objects_mailbox_queued_max",
        "gauge",
        "the deepest mailbox, per namespace",
    ),
    ("objects_alarms_pending", "gauge", "alarms scheduled"),
    (
        "objects_store_bytes",
        "gauge",
        "bytes of the LMDB map in use",
    ),
    (
        "objects_store_map_bytes",
        "gauge",
        "size of the LMDB map (the most the store can hold)",
    ),
];

/// Handles for the runtime's counters and histograms (cheap to clone).
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) activations: Counter,
    pub(crate) evictions: Counter,
    pub(crate) resets: Counter,
    pub(crate) event_timeouts: Counter,
    pub(crate) aborts: Counter,
    pub(crate) background_spawned: Counter,
    pub(crate) overloads: Counter,
    pub(crate) calls: Counter,
    pub(crate) call_seconds: Histogram,
    pub(crate) events: Counter,
    pub(crate) alarms_fired: Counter,
    pub(crate) alarms_retried: Counter,
    pub(crate) alarms_dropped: Counter,
    pub(crate) sockets_accepted: Counter,
    pub(crate) sockets_closed: Counter,
    pub(crate) sockets_cut_slow: Counter,
    pub(crate) messages_in: Counter,
    pub(crate) messages_out: Counter,
}

impl Metrics {
    /// Registers one namespace's counters and histograms with the installed
    /// recorder (no-op handles when none is installed), each labelled
    /// `namespace`.
    pub(crate) fn register(namespace: &str) -> Metrics {
        let label = [("namespace", namespace.to_owned())];
        Metrics {
            activations: counter("objects_activations_total", &label),
            evictions: counter("objects_evictions_total", &label),
            resets: counter("objects_resets_total", &label),
            event_timeouts: counter("objects_event_timeouts_total", &label),
            aborts: counter("objects_aborts_total", &label),
            background_spawned: counter("objects_background_spawned_total", &label),
            overloads: counter("objects_overloads_total", &label),
            calls: counter("objects_calls_total", &label),
            call_seconds: histogram("objects_call_seconds", &label),
            events: counter("objects_events_total", &label),
            alarms_fired: counter("objects_alarms_fired_total", &label),
            alarms_retried: counter("objects_alarms_retried_total", &label),
            alarms_dropped: counter("objects_alarms_dropped_total", &label),
            sockets_accepted: counter("objects_sockets_accepted_total", &label),
            sockets_closed: counter("objects_sockets_closed_total", &label),
            sockets_cut_slow: counter("objects_sockets_cut_slow_total", &label),
            messages_in: counter("objects_websocket_messages_in_total", &label),
            messages_out: counter("objects_websocket_messages_out_total", &label),
        }
    }
}

/// Handles for the storage writer's figures.
pub(crate) struct WriterMetrics {
    pub(crate) commits: Counter,
    pub(crate) failures: Counter,
    pub(crate) batch_size: Histogram,
    pub(crate) seconds: Histogram,
    pub(crate) syncs: Counter,
}

impl WriterMetrics {
    pub(crate) fn register() -> WriterMetrics {
        WriterMetrics {
            commits: counter("objects_commits_total", &[]),
            failures: counter("objects_commit_failures_total", &[]),
            batch_size: histogram("objects_commit_batch_size", &[]),
            seconds: histogram("objects_commit_seconds", &[]),
            syncs: counter("objects_store_syncs_total", &[]),
        }
    }
}

/// A counter handle, with `labels`.
#[cfg(feature = "metrics")]
fn counter(name: &'static str, labels: &[(&'static str, String)]) -> Counter {
    metrics::counter!(name, labels)
}

/// A histogram handle, with `labels`.
#[cfg(feature = "metrics")]
fn histogram(name: &'static str, labels: &[(&'static str, String)]) -> Histogram {
    metrics::histogram!(name, labels)
}

/// Without the `metrics` feature: handles that record nothing.
#[cfg(not(feature = "metrics"))]
fn counter(_: &'static str, _: &[(&'static str, String)]) -> Counter {
    Counter
}

/// Without the `metrics` feature: handles that record nothing.
#[cfg(not(feature = "metrics"))]
fn histogram(_: &'static str, _: &[(&'static str, String)]) -> Histogram {
    Histogram
}

/// Stand-ins for the `metrics` handles when the feature is off: the same
/// calls, compiled to nothing.
#[cfg(not(feature = "metrics"))]
mod off {
    #[derive(Clone, Debug, Default)]
    pub(crate) struct Counter;

    impl Counter {
        pub(crate) fn increment(&self, _: u64) {}
    }

    #[derive(Clone, Debug, Default)]
    pub(crate) struct Histogram;

    impl Histogram {
        pub(crate) fn record(&self, _: f64) {}
    }
}

/// Records a hand-off this node made: `moved` or `called_off`, and how
/// long the shard's events waited.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) fn shard_handoff(outcome: &'static str, paused: std::time::Duration) {
    counter(
        "objects_shard_handoffs_total",
        &[("outcome", outcome.to_owned())],
    )
    .increment(1);
    histogram("objects_shard_handoff_pause_seconds", &[]).record(paused.as_secs_f64());
}

/// Counts an alarm of `namespace` scheduled again after a failure the
/// runtime saw (not its handler's), from the alarm driver.
pub(crate) fn alarm_retried(namespace: &str) {
    counter(
        "objects_alarms_retried_total",
        &[("namespace", namespace.to_owned())],
    )
    .increment(1);
}

/// Sets the help text (and unit) of every metric of [`METRICS`] in the
/// installed recorder.
#[cfg(not(feature = "metrics"))]
pub(crate) fn describe() {}

/// Sets the help text (and unit) of every metric of [`METRICS`] in the
/// installed recorder.
#[cfg(feature = "metrics")]
pub(crate) fn describe() {
    for (name, kind, help) in METRICS {
        let unit = if name.ends_with("_seconds") {
            Some(Unit::Seconds)
        } else if name.ends_with("_bytes") {
            Some(Unit::Bytes)
        } else {
            None
        };
        let name = *name;
        let help = *help;
        match (*kind, unit) {
            ("counter", _) => metrics::describe_counter!(name, help),
            ("histogram", Some(u)) => metrics::describe_histogram!(name, u, help),
            ("histogram", None) => metrics::describe_histogram!(name, help),
            (_, Some(u)) => metrics::describe_gauge!(name, u, help),
            _ => metrics::describe_gauge!(name, help),
        }
    }
}

/// A snapshot of the runtime's state figures (see
/// [`Runtime::stats`](crate::Runtime::stats)).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RuntimeStats {
    /// Per registered namespace, by name.
    pub namespaces: Vec<NamespaceStats>,
    /// Alarms scheduled.
    pub alarms_pending: usize,
    /// Bytes of the LMDB map in use.
    pub store_bytes: u64,
    /// Size of the LMDB map.
    pub store_map_bytes: u64,
}

/// One namespace's state figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NamespaceStats {
    /// The namespace's name.
    pub name: String,
    /// Objects in memory.
    pub live: usize,
    /// Objects not in memory that hold accepted WebSockets.
    pub hibernated: usize,
    /// Accepted WebSockets open.
    pub sockets_open: usize,
    /// Events waiting in mailboxes.
    pub mailbox_queued: usize,
    /// The deepest mailbox.
    pub mailbox_queued_max: usize,
}

impl RuntimeStats {
    /// Sets the gauges of [`METRICS`] from this snapshot (the `metrics`
    /// feature).
    #[cfg(feature = "metrics")]
    pub fn publish(&self) {
        for ns in &self.namespaces {
            let label = [("namespace", ns.name.clone())];
            metrics::gauge!("objects_live", &label).set(ns.live as f64);
            metrics::gauge!("objects_hibernated", &label).set(ns.hibernated as f64);
            metrics::gauge!("objects_sockets_open", &label).set(ns.sockets_open as f64);
            metrics::gauge!("objects_mailbox_queued", &label).set(ns.mailbox_queued as f64);
            metrics::gauge!("objects_mailbox_queued_max", &label).set(ns.mailbox_queued_max as f64);
        }
        metrics::gauge!("objects_alarms_pending").set(self.alarms_pending as f64);
        metrics::gauge!("objects_store_bytes").set(self.store_bytes as f64);
        metrics::gauge!("objects_store_map_bytes").set(self.store_map_bytes as f64);
    }
}
