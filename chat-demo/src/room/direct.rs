//! Extension `dm` in the room: direct messages stored per user id, so a
//! user's history is one prefix of storage and nobody else's session ever
//! reads it.
//!
//! Key layout: `dmk/<user id>/<timestamp as 20 digits>` holds the
//! [`DirectMessage`] as JSON, once under the sender's id and once under the
//! recipient's (once when they are the same); `dmt/<timestamp>` holds the
//! two user ids, a time-ordered index that retention walks; `dm-last`
//! holds the newest direct message's timestamp, so the room's timestamps
//! keep increasing across restarts whatever kind of message came last.

use crate::protocol::time::NowMs;
use objects::{Context, ListOptions, Storage, StorageError, WebSocket};
/// Results inside handlers: any error, boxed.
type Result<T, E = objects::BoxError> = std::result::Result<T, E>;

use super::frames::CountedSend;
use super::session::Session;
use super::{ChatRoom, history};
use crate::protocol::ProtocolError;
use crate::protocol::dm::{DM_HISTORY, DirectMessage, encode_dm};

/// The key holding the newest direct message's timestamp.
const LAST: &str = "dm-last";

/// The prefix of the time-ordered index.
const BY_TIME: &str = "dmt/";

fn time_key(timestamp: u64) -> String {
    format!("{BY_TIME}{timestamp:020}")
}

/// Deletes the direct messages stamped before `cutoff`, at most
/// [`history::EXPIRE_BATCH`]; answers how many went and whether older ones
/// remain.
///
/// # Errors
///
/// A storage error.
pub(crate) fn expire(storage: &mut Storage, cutoff: u64) -> Result<(usize, bool), StorageError> {
    let batch = history::EXPIRE_BATCH.min(objects::MAX_KEYS_PER_CALL);
    let opts = ListOptions::new()
        .prefix(BY_TIME)
        .end(time_key(cutoff))
        .limit(batch);
    let old = storage.list::<Vec<String>>(&opts)?;
    for (key, ids) in &old {
        let Ok(timestamp) = key[BY_TIME.len()..].parse::<u64>() else {
            continue;
        };
        for id in ids {
            storage.delete(&self::key(id, timestamp))?;
        }
        storage.delete(key)?;
    }
    let more = old.len() == batch
        && !storage
            .list_bytes(
                &ListOptions::new()
                    .prefix(BY_TIME)
                    .end(time_key(cutoff))
                    .limit(1),
            )?
            .is_empty();
    Ok((old.len(), more))
}

/// The oldest stored direct message's timestamp, if any.
///
/// # Errors
///
/// A storage read error.
pub(crate) fn oldest(storage: &Storage) -> Result<Option<u64>, StorageError> {
    let first = storage.list_bytes(&ListOptions::new().prefix(BY_TIME).limit(1))?;
    Ok(first
        .first()
        .and_then(|(k, _)| k[BY_TIME.len()..].parse().ok()))
}

fn prefix(user: &str) -> String {
    format!("dmk/{user}/")
}

fn key(user: &str, timestamp: u64) -> String {
    format!("dmk/{user}/{timestamp:020}")
}

/// The newest direct message's timestamp (0 when none).
///
/// # Errors
///
/// A storage read error.
pub(crate) fn latest(storage: &Storage) -> Result<u64, StorageError> {
    Ok(storage.get::<u64>(LAST)?.unwrap_or(0))
}

/// A user's newest [`DM_HISTORY`] direct messages, oldest first.
///
/// # Errors
///
/// A storage read error, or a stored value that does not decode.
pub(crate) fn recent(storage: &Storage, user: &str) -> Result<Vec<DirectMessage>, StorageError> {
    let opts = ListOptions::new()
        .prefix(prefix(user))
        .reverse(true)
        .limit(DM_HISTORY);
    let mut newest: Vec<DirectMessage> = storage
        .list::<DirectMessage>(&opts)?
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    newest.reverse();
    Ok(newest)
}

impl ChatRoom {
    /// Whether `name` is held by a connected session of another user id.
    pub(super) fn name_held_by_other(&mut self, ctx: &Context, name: &str, user: &str) -> bool {
        let members = self.sessions.members(ctx);
        !members
            .select(|_, s| {
                s.is_named_a()
                    && s.name.as_deref() == Some(name)
                    && s.user.as_deref().is_some_and(|u| u != user)
            })
            .is_empty()
    }

    /// A direct message from `sender` to the user holding the name `to`:
    /// stored under both ids and sent to every socket of either, nobody
    /// else. Charged to the rate budget like a message.
    pub(super) async fn direct(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        sender: &Session,
        to: &str,
        text: String,
    ) -> Result<()> {
        let (Some(from_id), Some(from)) = (sender.user.clone(), sender.name.clone()) else {
            return self.refuse(ctx, ws, sender, &ProtocolError::InvalidKey);
        };
        let to_id = {
            let members = self.sessions.members(ctx);
            let holders = members.select(|_, s| {
                s.is_named_a() && s.ext.dm && s.user.is_some() && s.name.as_deref() == Some(to)
            });
            holders
                .first()
                .and_then(|w| self.sessions.get(ctx, *w))
                .and_then(|s| s.user.clone())
        };
        let Some(to_id) = to_id else {
            return self.refuse(ctx, ws, sender, &ProtocolError::NoSuchRecipient);
        };
        if !self.charge(ctx, ws, sender).await {
            return Ok(());
        }
        let timestamp = history::next_timestamp(ctx.now_ms(), self.last_timestamp);
        let message = DirectMessage {
            from,
            to: to.to_owned(),
            from_id: from_id.clone(),
            to_id: to_id.clone(),
            message: text,
            timestamp,
        };
        // Stored in this event: the output gate holds the frames below
        // until both copies are on disk.
        ctx.storage().put(&key(&from_id, timestamp), &message)?;
        if to_id != from_id {
            ctx.storage().put(&key(&to_id, timestamp), &message)?;
        }
        ctx.storage().put(LAST, &timestamp)?;
        ctx.storage()
            .put(&time_key(timestamp), &vec![from_id.clone(), to_id.clone()])?;
        self.last_timestamp = timestamp;
        if let Some(retention) = self.env.retention_ms
            && !self.expiry_set
        {
            ctx.storage().set_alarm(crate::protocol::time::from_millis(
                timestamp.saturating_add(retention),
            ))?;
            self.expiry_set = true;
        }
        tracing::debug!(socket = ws.sid(), timestamp, "direct message");
        let members = self.sessions.members(ctx);
        let parties = members.select(|_, s| {
            s.is_named_a()
                && s.ext.dm
                && s.user
                    .as_deref()
                    .is_some_and(|u| u == from_id || u == to_id)
        });
        ctx.broadcast_to(parties, encode_dm(&message));
        Ok(())
    }
}
