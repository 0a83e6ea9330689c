//! A dialect-A hello: the socket gets its name, the roster, the backlog
//! and its extensions' state, then the room learns of it.

use objects::{Context, WebSocket};

use super::fanout::Presence;
use super::frames::CountedSend;
use super::session::Session;
use super::{ChatRoom, Result, direct, history, manage};
use crate::protocol::a::{self, Extensions};
use crate::protocol::{Dialect, HISTORY_ON_JOIN, ProtocolError, dm};

impl ChatRoom {
    /// A dialect-A hello: roster, backlog, its own `joined` and `ready` to
    /// the newcomer, the join to everyone else.
    pub(super) fn hello(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        mut session: Session,
        name: String,
        ext: Extensions,
        user: Option<String>,
    ) -> Result<()> {
        if let Some(id) = &user
            && self.name_held_by_other(ctx, &name, id)
        {
            return self.refuse(ctx, ws, &session, &ProtocolError::NameHeld);
        }
        // The fallible reads first: a failure then changes nothing.
        let backlog = history::recent(ctx.storage(), HISTORY_ON_JOIN)?;
        let direct = match &user {
            Some(id) => direct::recent(ctx.storage(), id)?,
            None => Vec::new(),
        };
        let room_state = if ext.manage {
            Some(manage::state(ctx.storage())?)
        } else {
            None
        };
        session.name = Some(name.clone());
        session.ext = ext;
        session.user = user;
        self.sessions.set(ctx, ws, session)?;
        tracing::debug!(socket = ws.sid(), name = %name, "named");
        let members = self.sessions.members(ctx);
        for other in members.names_except(Some(ws)) {
            ctx.send_to(Dialect::A, ws, a::encode_joined(other));
        }
        for message in &backlog {
            ctx.send_to(Dialect::A, ws, a::encode_chat_ext(message, ext));
        }
        // The newcomer is told of itself too, after the roster and the
        // backlog: the original broadcast the join to every named session,
        // the newcomer included, and its page builds the roster from
        // `joined` frames only.
        ctx.send_to(Dialect::A, ws, a::encode_joined(&name));
        ctx.send_to(Dialect::A, ws, a::encode_ready());
        self.notify(ctx, ws, Some(&name), Presence::Joined);
        // Extension `manage`: whether the room is claimed, and its topic.
        if let Some((owned, topic, password)) = room_state {
            ctx.send_to(
                Dialect::A,
                ws,
                crate::protocol::manage::encode_room(owned, &topic, password),
            );
        }
        // Extension `dm`: this user's own direct messages, after `ready`.
        for message in &direct {
            ctx.send_to(Dialect::A, ws, dm::encode_dm(message));
        }
        Ok(())
    }
}
