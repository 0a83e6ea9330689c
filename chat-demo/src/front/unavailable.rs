//! What the front door answers when a room cannot take an upgrade: 503
//! for what passes (a busy room, a server shutting down, a room that did
//! not answer in time, a room whose node is not available now, in a
//! cluster), 500 for a fault.

use axum::response::Response;
use http::StatusCode;

use super::text;

/// The answer when a room is on a node that is not available now: its
/// owner is down, or this node's lease lapsed (`objects::Error::Unavailable`).
pub const ROOM_UNAVAILABLE: &str =
    "This room is on a server that is not available right now; try again shortly.";

/// The metric's reason and the answer for a room's `fetch` that failed.
pub(super) fn fetch_failed(error: &objects::Error) -> (&'static str, Response) {
    let busy = |reason, body| (reason, text(StatusCode::SERVICE_UNAVAILABLE, body));
    match error {
        e if e.is_overloaded() => busy("room_busy", "This room is busy; try again later."),
        objects::Error::ShuttingDown => busy("shutting_down", "The server is shutting down."),
        e if e.is_unavailable() => {
            tracing::warn!(error = %e, "room unavailable");
            busy("room_unavailable", ROOM_UNAVAILABLE)
        }
        // The room (or, in a cluster, the link to its node) did not answer
        // within the call deadline: passing, like a busy room.
        objects::Error::DeadlineExceeded { .. } => {
            tracing::warn!(error = %error, "room did not answer in time");
            busy(
                "room_timeout",
                "This room did not answer in time; try again shortly.",
            )
        }
        e => {
            tracing::warn!(error = %e, "room failed to accept a socket");
            (
                "room_failed",
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The room could not accept the connection.",
                ),
            )
        }
    }
}
