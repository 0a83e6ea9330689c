//! Sending with the count: every frame a room hands to a socket goes
//! through [`CountedSend`], which counts it by the recipient's dialect
//! (`chat_websocket_frames_total{direction="out"}`). A broadcast counts
//! its recipients per dialect while they are chosen ([`Recipients`]), so
//! a delivery costs no more than before: one atomic add per dialect per
//! broadcast, no allocation.

use std::ops::Deref;

use objects::{Context, Message, WebSocket};

use crate::counters::{dialect_index, frame_sent, frames_sent};
use crate::protocol::Dialect;
use crate::protocol::time::NowMs;

/// The sockets chosen for one broadcast, with how many are of each
/// dialect (filled by [`Members::select`](super::session::Members::select)).
#[derive(Debug, Default)]
pub(crate) struct Recipients {
    sockets: Vec<WebSocket>,
    /// Recipients per dialect, by [`dialect_index`].
    per_dialect: [u64; 3],
}

impl Recipients {
    /// Adds a recipient of `dialect`.
    pub(super) fn push(&mut self, ws: WebSocket, dialect: Dialect) {
        self.sockets.push(ws);
        self.per_dialect[dialect_index(dialect)] += 1;
    }
}

impl Deref for Recipients {
    type Target = [WebSocket];

    fn deref(&self) -> &[WebSocket] {
        &self.sockets
    }
}

/// [`Context::send`] and [`Context::broadcast`], counted.
pub(super) trait CountedSend {
    /// Sends `msg` to `ws`, a socket of `dialect`.
    fn send_to(&mut self, dialect: Dialect, ws: WebSocket, msg: impl Into<Message>);

    /// Sends `ws`, a socket of `dialect`, an error frame in its dialect
    /// (C's carries the server's clock).
    fn send_error(&mut self, dialect: Dialect, ws: WebSocket, text: &str);

    /// Sends `msg` to every socket of `to`.
    fn broadcast_to(&mut self, to: Recipients, msg: impl Into<Message>);
}

impl CountedSend for Context {
    fn send_to(&mut self, dialect: Dialect, ws: WebSocket, msg: impl Into<Message>) {
        frame_sent(dialect);
        self.send(ws, msg);
    }

    fn send_error(&mut self, dialect: Dialect, ws: WebSocket, text: &str) {
        let frame = dialect.encode_error(text, self.now_ms());
        self.send_to(dialect, ws, frame);
    }

    fn broadcast_to(&mut self, to: Recipients, msg: impl Into<Message>) {
        frames_sent(to.per_dialect);
        self.broadcast(to.sockets, msg);
    }
}
