//! Extension `reactions` in the room: a reaction rewrites the stored
//! message (its reactions live in its record) and tells every session that
//! opted in.

use objects::{Context, WebSocket};
/// Results inside handlers: any error, boxed.
type Result<T, E = objects::BoxError> = std::result::Result<T, E>;

use super::frames::CountedSend;
use super::history;
use super::session::Session;
use super::{ChatRoom, ProtocolError};
use crate::protocol::a;
use crate::protocol::reactions::Change;

impl ChatRoom {
    /// Adds (`on`) or removes the sender's `emoji` on message `id`. Charged
    /// to the sender's rate budget like a message: it is a write.
    pub(super) async fn react(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        sender: &Session,
        id: u64,
        emoji: &str,
        on: bool,
    ) -> Result<()> {
        if !self.charge(ctx, ws, sender).await {
            return Ok(());
        }
        let Some(mut message) = history::message(ctx.storage(), id)? else {
            return self.refuse(ctx, ws, sender, &ProtocolError::NoSuchMessage);
        };
        // Only named A sessions get here (the extension is A's).
        let user = sender.name.as_deref().unwrap_or(a::DEFAULT_NAME);
        match message.reactions.apply(user, emoji, on) {
            Err(error) => self.refuse(ctx, ws, sender, &error),
            Ok(Change::Unchanged) => Ok(()),
            Ok(Change::Changed) => {
                // Stored in this event: the output gate holds the update
                // below until the new reactions are on disk.
                ctx.storage().put(&history::key(id), &message)?;
                tracing::debug!(socket = ws.sid(), id, on, "reaction");
                let members = self.sessions.members(ctx);
                let to = members.select(|_, s| s.is_named_a() && s.ext.reactions);
                if !to.is_empty() {
                    ctx.broadcast_to(to, a::encode_reactions(id, &message.reactions));
                }
                Ok(())
            }
        }
    }
}
