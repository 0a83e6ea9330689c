//! Extension `typing`: "alice is typing…". Passed on to the sessions that
//! opted in, throttled per socket, never stored; clients let an indicator
//! expire on their own after [`a::TYPING_SHOWN_MS`] unless it is renewed.

use crate::protocol::time::NowMs;
use objects::{Context, WebSocket};

use super::ChatRoom;
use super::frames::CountedSend;
use super::session::Session;
use crate::protocol::{Dialect, a};

impl ChatRoom {
    /// Passes `sender`'s typing signal on to the other named sessions (A
    /// and C) that opted in, unless one from this socket went out less
    /// than [`a::TYPING_THROTTLE_MS`] ago. Costs no storage and no rate
    /// budget: it is never stored, and the throttle bounds it per socket.
    pub(super) fn typing(&mut self, ctx: &mut Context, ws: WebSocket, sender: &Session) {
        let Some(name) = sender.name.as_deref() else {
            return;
        };
        let now = ctx.now_ms();
        if let Some(last) = self.typing_at.get(&ws)
            && now < last.saturating_add(a::TYPING_THROTTLE_MS)
        {
            return;
        }
        self.typing_at.insert(ws, now);
        let members = self.sessions.members(ctx);
        let to = members.select(|w, s| {
            w != ws
                && s.ext.typing
                && s.name.is_some()
                && matches!(s.dialect, Dialect::A | Dialect::C)
        });
        if !to.is_empty() {
            ctx.broadcast_to(to, a::encode_typing(name));
        }
    }
}
