//! How sockets leave a room and what the others are told: refused frames,
//! closes, the join/leave notices under the room's notice budget, and the
//! room's reports to the directory.

use super::*;
use crate::directory;

impl ChatRoom {
    /// Answers a refused frame in the sender's dialect, closing the socket
    /// when the error calls for it (an over-long name).
    pub(super) fn refuse(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        session: &Session,
        error: &ProtocolError,
    ) -> Result<()> {
        tracing::debug!(socket = ws.sid(), %error, "frame refused");
        let text = error.client_text();
        ctx.send(ws, encode_error(ctx, session.dialect, text));
        if let Some(code) = error.closes_socket() {
            self.close_later(ctx, ws, session, code, text)?;
        }
        Ok(())
    }

    /// Closes a socket after the frames sent to it in this event (the
    /// runtime queues the close behind them). The session is marked, so
    /// frames that arrive before the close completes are ignored.
    pub(super) fn close_later(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        session: &Session,
        code: u16,
        reason: &str,
    ) -> Result<()> {
        let mut session = session.clone();
        session.closing = Some(Closing {
            code,
            reason: reason.to_owned(),
        });
        self.sessions.set(ctx, ws, session)?;
        tracing::debug!(socket = ws.sid(), code, "closing refused socket");
        ctx.close(ws, code, reason);
        Ok(())
    }

    pub(super) fn on_close(&mut self, ctx: &mut Context, ws: WebSocket, code: u16, clean: bool) {
        let Some(session) = self.sessions.remove(ctx, ws) else {
            return;
        };
        self.typing_at.remove(&ws);
        tracing::debug!(socket = ws.sid(), dialect = ?session.dialect, code, clean, "disconnected");
        // The closed socket is no longer listed among the members.
        self.notify(ctx, ws, session.name.as_deref(), Presence::Left);
        // Queued in this handler, so before anyone can act on the frames
        // above (they leave once the event is done). A socket closed by the
        // room's deletion does not put the room back in the directory.
        let deleted = session
            .closing
            .as_ref()
            .is_some_and(|c| c.code == crate::protocol::manage::DELETED_CLOSE_CODE);
        if !deleted {
            self.report(ctx);
        }
    }

    /// Tells the members that `who` (named `name`, if it has a name)
    /// arrived or left, with the presence roster, if the room's notice
    /// budget allows; otherwise the roster is marked stale and goes out
    /// with the next notice or message the budget allows.
    pub(super) fn notify(
        &mut self,
        ctx: &mut Context,
        who: WebSocket,
        name: Option<&str>,
        what: Presence,
    ) {
        if !self.notices.spend(ctx.now_ms(), &NOTICE_LIMIT) {
            self.presence_stale = true;
            return;
        }
        self.presence_stale = false;
        let members = self.sessions.members(ctx);
        if let Some(name) = name {
            announce(ctx, &members, who, name, what);
        }
        send_presence(ctx, &members);
    }

    /// Tells the directory this public room's status, coalesced: only when
    /// the number of connections changed, the room got its first message,
    /// or the last activity changed and the last report is
    /// [`ACTIVITY_REPORT_MS`] old. The room does not wait for the answer.
    pub(super) fn report(&mut self, ctx: &Context) {
        let Some(name) = self.public_name.clone() else {
            return;
        };
        let online = u32::try_from(ctx.websockets(None).len()).unwrap_or(u32::MAX);
        let status = RoomStatus {
            name,
            online,
            last_activity: self.last_timestamp,
        };
        let now = ctx.now_ms();
        if let Some((last, at)) = &self.reported
            && last.online == status.online
            && (last.last_activity == status.last_activity
                || (last.last_activity != 0 && now < at.saturating_add(ACTIVITY_REPORT_MS)))
        {
            return;
        }
        let stub = self.env.directory.get_by_name(DIRECTORY_NAME);
        // Queued before `call` returns (so ahead of anything a client can
        // do after this event); the answer is not needed, but the future
        // must live until then or the runtime skips the call as abandoned.
        // The task ends with the answer, the refusal of a full mailbox or
        // the runtime's call timeout.
        let update = stub.call(directory::Request::Update(directory::Update(
            status.clone(),
        )));
        tokio::spawn(async move {
            if let Err(error) = update.await {
                tracing::debug!(%error, "directory report dropped");
            }
        });
        self.reported = Some((status, now));
    }
}
