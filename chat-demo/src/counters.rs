//! The chat server's own metrics, beside the runtime's (`objects::METRICS`):
//! what the front door refuses and what the rooms rate-limit. Recorded
//! through the `metrics` facade, so they cost a no-op without a recorder
//! (no `--admin-listen`).

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
];

/// Sets the help texts of [`CHAT_METRICS`] in the installed recorder.
pub(crate) fn describe() {
    for (name, _, help) in CHAT_METRICS {
        metrics::describe_counter!(*name, *help);
    }
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
