//! What a room knows about each socket: kept in the socket's attachment
//! (which survives hibernation), mirrored in a cache the instance rebuilds.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use objects::{Context, WebSocket};
use serde::{Deserialize, Serialize};

use super::frames::Recipients;
use crate::protocol::Dialect;
use crate::protocol::a::Extensions;

/// One socket's session: everything the room needs after hibernation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The wire dialect (also the socket's tag).
    pub(crate) dialect: Dialect,
    /// The user's name: A after its hello, C from the query (none if the
    /// name was refused and the socket is closing), never for B.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// Dialect A: the extensions the hello opted in to (C: from its query).
    #[serde(default)]
    pub(crate) ext: Extensions,
    /// Extension `dm`: the id (hash) of the user key the hello presented;
    /// the key itself is not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    /// The client's IP, the rate limit key.
    pub(crate) ip: String,
    /// The socket was refused and is being closed (see
    /// `ChatRoom::close_later`); its frames are ignored meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) closing: Option<Closing>,
}

/// A close the room owes a socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Closing {
    /// The WebSocket close code.
    pub(crate) code: u16,
    /// The close reason.
    pub(crate) reason: String,
}

impl Session {
    /// A dialect-A session that has said hello.
    pub(crate) fn is_named_a(&self) -> bool {
        self.dialect == Dialect::A && self.name.is_some()
    }
}

/// The instance's cache of attachments, by socket. Only a cache: it starts
/// empty after every activation and fills from the attachments on demand,
/// and every change to a session goes to the attachment first.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    cache: HashMap<WebSocket, Session>,
}

impl Sessions {
    /// One socket's session (from the cache, or its attachment).
    pub(crate) fn get(&mut self, ctx: &Context, ws: WebSocket) -> Option<&Session> {
        match self.cache.entry(ws) {
            Entry::Occupied(entry) => Some(entry.into_mut()),
            Entry::Vacant(entry) => {
                let session = ctx.attachment::<Session>(ws).ok().flatten()?;
                Some(entry.insert(session))
            }
        }
    }

    /// Stores a session in the socket's attachment, then in the cache.
    ///
    /// # Errors
    ///
    /// The socket is gone, or the attachment is over the size limit (a
    /// session holds at most a 32-character name and an IP, far below it).
    pub(crate) fn set(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        session: Session,
    ) -> objects::Result<()> {
        ctx.set_attachment(ws, &session)?;
        self.cache.insert(ws, session);
        Ok(())
    }

    /// Forgets a closed socket, returning its session.
    pub(crate) fn remove(&mut self, ctx: &Context, ws: WebSocket) -> Option<Session> {
        self.cache
            .remove(&ws)
            .or_else(|| ctx.attachment::<Session>(ws).ok().flatten())
    }

    /// The open sockets and their sessions, in accept order.
    pub(crate) fn members(&mut self, ctx: &Context) -> Members<'_> {
        let open = ctx.websockets(None);
        for ws in &open {
            if let Entry::Vacant(entry) = self.cache.entry(*ws)
                && let Ok(Some(session)) = ctx.attachment::<Session>(*ws)
            {
                entry.insert(session);
            }
        }
        let cache = &self.cache;
        Members {
            list: open
                .into_iter()
                .filter_map(|ws| cache.get(&ws).map(|s| (ws, s)))
                .collect(),
        }
    }
}

/// A snapshot of the room's open sockets with their sessions.
#[derive(Debug)]
pub(crate) struct Members<'a> {
    list: Vec<(WebSocket, &'a Session)>,
}

impl<'a> Members<'a> {
    /// Every open socket, named or not, of every dialect.
    pub(crate) fn count(&self) -> usize {
        self.list.len()
    }

    /// The sockets whose session matches.
    pub(crate) fn select(&self, keep: impl Fn(WebSocket, &Session) -> bool) -> Recipients {
        let mut to = Recipients::default();
        for (ws, s) in &self.list {
            if keep(*ws, s) {
                to.push(*ws, s.dialect);
            }
        }
        to
    }

    /// The names of the named sessions (A after hello, and C), except
    /// `skip`, in accept order.
    pub(crate) fn names_except(&self, skip: Option<WebSocket>) -> Vec<&'a str> {
        self.list
            .iter()
            .filter(|(ws, _)| Some(*ws) != skip)
            .filter(|(_, s)| s.dialect != Dialect::B)
            .filter_map(|(_, s)| s.name.as_deref())
            .collect()
    }
}
