//! The chat server's own metrics, beside the runtime's (`objects::METRICS`):
//! what the front door refuses, what the rooms rate-limit, and the frames
//! the rooms receive and send by dialect. Recorded through the `metrics`
//! facade, so they cost a no-op without a recorder (no `--admin-listen`);
//! the frame counts are not even looked up then.

use std::sync::OnceLock;

use metrics::Counter;

use crate::protocol::Dialect;

/// Name, type and help of each chat metric (the exposition's `# HELP`).
pub const CHAT_METRICS: &[(&str, &str, &str)] = &[
    (
        "chat_connections_refused_total",
        "counter",
        "TCP connections closed right after accept because a connection cap (total or per IP) was reached",
    ),
    (
        "chat_upgrades_refused_total",
        "counter",
        "WebSocket upgrades answered without 101, by reason: handshake, origin, body, not_upgradable, connections_per_ip, joins_per_minute, room_busy, shutting_down, room_unavailable, room_failed, room (the room's own refusal)",
    ),
    (
        "chat_rate_limited_total",
        "counter",
        "chat messages (what=message) and history pages (what=history_page) refused by the per-IP rate limit",
    ),
    (
        "chat_http_responses_total",
        "counter",
        "HTTP responses of the chat address by status class (1xx for an accepted WebSocket upgrade)",
    ),
    (
        "chat_websocket_frames_total",
        "counter",
        "WebSocket messages the rooms received from clients (direction=in) and handed to sockets (direction=out, one per recipient), by dialect (a, b, c)",
    ),
];

/// The frame counters by dialect (A, B, C), registered once with the
/// recorder, so counting a frame is an atomic add on a handle.
#[derive(Debug)]
pub(crate) struct FrameCounters {
    /// Frames received, indexed by [`dialect_index`].
    received: [Counter; 3],
    /// Frames handed to sockets, indexed by [`dialect_index`].
    sent: [Counter; 3],
}

/// Set when the Prometheus recorder is installed; unset (nothing counted,
/// nothing to record into) without it.
static FRAMES: OnceLock<FrameCounters> = OnceLock::new();

/// A dialect's slot in [`FrameCounters`] and in [`frames_sent`]'s counts.
pub(crate) fn dialect_index(dialect: Dialect) -> usize {
    match dialect {
        Dialect::A => 0,
        Dialect::B => 1,
        Dialect::C => 2,
    }
}

/// The `dialect` label of each slot.
const DIALECT_LABELS: [&str; 3] = ["a", "b", "c"];

/// Registers the chat's counter handles with the installed recorder.
fn register_frames() -> FrameCounters {
    let counter = |direction: &'static str, i: usize| {
        metrics::counter!(
            "chat_websocket_frames_total",
            "dialect" => DIALECT_LABELS[i],
            "direction" => direction,
        )
    };
    FrameCounters {
        received: std::array::from_fn(|i| counter("in", i)),
        sent: std::array::from_fn(|i| counter("out", i)),
    }
}

/// A client of `dialect` sent the room a frame.
pub(crate) fn frame_received(dialect: Dialect) {
    if let Some(frames) = FRAMES.get() {
        frames.received[dialect_index(dialect)].increment(1);
    }
}

/// The room handed `count[i]` frames to sockets of the dialect in slot
/// `i` (A, B, C).
pub(crate) fn frames_sent(count: [u64; 3]) {
    if let Some(frames) = FRAMES.get() {
        for (counter, n) in frames.sent.iter().zip(count) {
            if n > 0 {
                counter.increment(n);
            }
        }
    }
}

/// The room handed one frame to a socket of `dialect`.
pub(crate) fn frame_sent(dialect: Dialect) {
    if let Some(frames) = FRAMES.get() {
        frames.sent[dialect_index(dialect)].increment(1);
    }
}

/// Sets the help texts of [`CHAT_METRICS`] in the installed recorder and
/// registers the frame counters' handles with it (once per process).
pub(crate) fn register() {
    for (name, _, help) in CHAT_METRICS {
        metrics::describe_counter!(*name, *help);
    }
    FRAMES.get_or_init(register_frames);
}

/// An upgrade was refused, for `reason`.
pub(crate) fn upgrade_refused(reason: &'static str) {
    metrics::counter!("chat_upgrades_refused_total", "reason" => reason).increment(1);
}

/// A message or a history page (`what`) was refused by the rate limit.
pub(crate) fn rate_limited(what: &'static str) {
    metrics::counter!("chat_rate_limited_total", "what" => what).increment(1);
}

/// The chat address answered with `status`.
pub(crate) fn http_response(status: http::StatusCode) {
    let class = match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("chat_http_responses_total", "class" => class).increment(1);
}
