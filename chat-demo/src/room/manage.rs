//! Extension `manage` in the room: claiming, the topic, deletion.
//!
//! Keys: `meta/owner` holds the owner token's hash
//! ([`token_id`](crate::protocol::manage::token_id)), `meta/topic` the
//! topic. Deleting the room deletes every key and the alarm in one event,
//! closes every socket with [`DELETED_CLOSE_CODE`] and takes the room out
//! of the directory: its name starts empty, and anyone may claim it again.

use crate::protocol::time::NowMs;
use objects::{Context, WebSocket};
/// Results inside handlers: any error, boxed.
type Result<T, E = objects::BoxError> = std::result::Result<T, E>;

use super::frames::CountedSend;
use super::session::Session;
use super::{ChatRoom, ProtocolError};
use crate::directory::{self, DIRECTORY_NAME};
use crate::protocol::limit::RATE_LIMITED;
use http::StatusCode;

use crate::protocol::manage::{
    DELETED_CLOSE_CODE, DELETED_REASON, PLAIN_REFUSED_REASON, encode_owner, encode_room, token_id,
};
use crate::protocol::{Dialect, password};

const OWNER: &str = "meta/owner";
const TOPIC: &str = "meta/topic";
const PASSWORD: &str = "meta/password";

/// Whether the room is claimed, its topic, whether it has a password.
///
/// # Errors
///
/// A storage read error.
pub(super) fn state(storage: &objects::Storage) -> Result<(bool, String, bool)> {
    let owned = storage.get_bytes(OWNER)?.is_some();
    let topic = storage.get::<String>(TOPIC)?.unwrap_or_default();
    let password = storage.get_bytes(PASSWORD)?.is_some();
    Ok((owned, topic, password))
}

/// Checks a password against the stored hash off the async workers.
async fn verified(given: &str, stored: String) -> bool {
    let given = given.to_owned();
    tokio::task::spawn_blocking(move || password::verify(&given, &stored))
        .await
        .unwrap_or(false)
}

impl ChatRoom {
    /// Claims an unclaimed room: a new random owner token, sent to the
    /// claimer only; the room keeps its hash.
    pub(super) async fn claim(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        sender: &Session,
    ) -> Result<()> {
        if !self.charge(ctx, ws, sender).await {
            return Ok(());
        }
        if ctx.storage().get_bytes(OWNER)?.is_some() {
            return self.refuse(ctx, ws, sender, &ProtocolError::AlreadyClaimed);
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| objects::BoxError::from(format!("no randomness for a token: {e}")))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        ctx.storage().put(OWNER, &token_id(&token))?;
        tracing::info!(socket = ws.sid(), "room claimed");
        ctx.send_to(Dialect::A, ws, encode_owner(&token));
        self.send_room_state(ctx)
    }

    /// Sets (or clears, when empty) the topic, for the owner.
    pub(super) async fn set_topic(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        sender: &Session,
        token: &str,
        topic: &str,
    ) -> Result<()> {
        if !self.owner_checked(ctx, ws, sender, token).await? {
            return Ok(());
        }
        if topic.is_empty() {
            ctx.storage().delete(TOPIC)?;
        } else {
            ctx.storage().put(TOPIC, &topic)?;
        }
        self.send_room_state(ctx)
    }

    /// Sets (or clears, when empty) the room's password, for the owner. The
    /// room stores an argon2id hash with a random salt, computed off the
    /// async workers. Sockets already in the room stay.
    pub(super) async fn set_password(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        sender: &Session,
        token: &str,
        password: &str,
    ) -> Result<()> {
        if !self.owner_checked(ctx, ws, sender, token).await? {
            return Ok(());
        }
        if password.is_empty() {
            ctx.storage().delete(PASSWORD)?;
        } else {
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt)
                .map_err(|e| objects::BoxError::from(format!("no randomness for a salt: {e}")))?;
            let password = password.to_owned();
            let hashed = tokio::task::spawn_blocking(move || password::hash(&password, salt))
                .await
                .map_err(|e| objects::BoxError::from(format!("hashing task failed: {e}")))?
                .map_err(objects::BoxError::from)?;
            ctx.storage().put(PASSWORD, &hashed)?;
        }
        tracing::info!(
            socket = ws.sid(),
            set = !password.is_empty(),
            "room password"
        );
        self.send_room_state(ctx)
    }

    /// Dialect A: lets a named session in when the room has no password,
    /// or when `given` matches it; otherwise answers the error and leaves
    /// the socket unnamed, free to try again. Every attempt at a protected
    /// room is charged to the IP's rate budget before the (slow) check, so
    /// guessing costs the guesser.
    pub(super) async fn password_gate(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        session: &Session,
        given: Option<&str>,
    ) -> Result<bool> {
        let Some(stored) = ctx.storage().get::<String>(PASSWORD)? else {
            return Ok(true);
        };
        if !self.charge(ctx, ws, session).await {
            return Ok(false);
        }
        let error = match given {
            None => ProtocolError::PasswordRequired,
            Some(given) if verified(given, stored).await => return Ok(true),
            Some(_) => ProtocolError::WrongPassword,
        };
        tracing::debug!(socket = ws.sid(), %error, "password refused");
        self.refuse(ctx, ws, session, &error)?;
        Ok(false)
    }

    /// Dialects B and C, before the upgrade: `None` to let the socket in,
    /// or the HTTP refusal. B cannot give a password; C gives it in its
    /// query, and each attempt is charged as in [`Self::password_gate`].
    pub(super) async fn password_refusal(
        &mut self,
        ctx: &mut Context,
        session: &Session,
        given: Option<&str>,
    ) -> Result<Option<(StatusCode, &'static str)>> {
        let Some(stored) = ctx.storage().get::<String>(PASSWORD)? else {
            return Ok(None);
        };
        if session.dialect == Dialect::B {
            return Ok(Some((StatusCode::FORBIDDEN, PLAIN_REFUSED_REASON)));
        }
        let limiter = self.env.limiters.get_by_name(&session.ip);
        let check = crate::limiter::Check {
            now_ms: ctx.now_ms(),
        };
        match limiter.ask(check).await {
            Ok(Ok(())) => {}
            // Its node is not available now (in a cluster): 503, as for a
            // room there; the attempt is refused either way.
            Err(e) if e.is_unavailable() => {
                let text = crate::limiter::LIMITER_UNAVAILABLE;
                return Ok(Some((StatusCode::SERVICE_UNAVAILABLE, text)));
            }
            Ok(Err(_)) | Err(_) => {
                return Ok(Some((StatusCode::TOO_MANY_REQUESTS, RATE_LIMITED)));
            }
        }
        Ok(match given {
            None => Some((
                StatusCode::FORBIDDEN,
                ProtocolError::PasswordRequired.client_text(),
            )),
            Some(given) if verified(given, stored).await => None,
            Some(_) => Some((
                StatusCode::FORBIDDEN,
                ProtocolError::WrongPassword.client_text(),
            )),
        })
    }

    /// Deletes the room, for the owner: history, index, direct messages,
    /// ownership, topic and alarm go in this event; every socket is closed
    /// with [`DELETED_CLOSE_CODE`]; the directory forgets the room.
    pub(super) async fn delete_room(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        sender: &Session,
        token: &str,
    ) -> Result<()> {
        if !self.owner_checked(ctx, ws, sender, token).await? {
            return Ok(());
        }
        ctx.storage().delete_all()?;
        ctx.storage().delete_alarm();
        self.last_timestamp = 0;
        self.expiry_set = false;
        self.reported = None;
        tracing::info!(socket = ws.sid(), "room deleted");
        if let Some(name) = self.public_name.clone() {
            let remove = self
                .env
                .directory
                .get_by_name(DIRECTORY_NAME)
                .ask(directory::Remove(name));
            tokio::spawn(async move {
                if let Err(error) = remove.await {
                    tracing::warn!(%error, "directory removal dropped");
                }
            });
        }
        for socket in ctx.websockets(None) {
            if let Some(session) = self.sessions.get(ctx, socket).cloned() {
                self.close_later(ctx, socket, &session, DELETED_CLOSE_CODE, DELETED_REASON)?;
            }
        }
        Ok(())
    }

    /// Charges the request and checks the owner token; false (and the
    /// sender told) when either fails.
    async fn owner_checked(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        sender: &Session,
        token: &str,
    ) -> Result<bool> {
        // Charged first: guessing tokens costs the guesser's rate budget.
        if !self.charge(ctx, ws, sender).await {
            return Ok(false);
        }
        let owner: Option<String> = ctx.storage().get(OWNER)?;
        if owner.as_deref() != Some(token_id(token).as_str()) {
            self.refuse(ctx, ws, sender, &ProtocolError::WrongToken)?;
            return Ok(false);
        }
        Ok(true)
    }

    /// The room frame to every named A session with `manage`.
    fn send_room_state(&mut self, ctx: &mut Context) -> Result<()> {
        let (owned, topic, password) = state(ctx.storage())?;
        let members = self.sessions.members(ctx);
        let to = members.select(|_, s| s.is_named_a() && s.ext.manage);
        if !to.is_empty() {
            ctx.broadcast_to(to, encode_room(owned, &topic, password));
        }
        Ok(())
    }
}
