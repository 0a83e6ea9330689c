//! The `Directory` object: the list of public rooms with their online
//! counts and last activity, kept up to date by the rooms themselves
//! (calls between objects) and read by `GET /api/rooms`.
//!
//! One instance, `id_from_name("public")` in the `directory` namespace.
//! Storage: `room/<name>` holds a [`RoomStatus`] as JSON; listing walks
//! that prefix in name order. Private rooms (reached by id) never report,
//! so they are never listed.
//!
//! Rooms report coalesced, not per message: when their number of open
//! connections changes, and otherwise at most once per
//! [`ACTIVITY_REPORT_MS`] while messages flow (see `ChatRoom::report`).
//! A report is queued without the room waiting for the answer; a
//! directory too busy to take it drops it, and the room's next report puts
//! things right.

use std::sync::Arc;

use objects::BoxError;
use objects::{Context, Handler, ListOptions, Method, Object};
/// Results inside handlers: any error, boxed.
type Result<T, E = objects::BoxError> = std::result::Result<T, E>;
use serde::{Deserialize, Serialize};

/// The name of the one directory object.
pub const DIRECTORY_NAME: &str = "public";

/// Rooms report their activity at most this often while messages flow.
pub const ACTIVITY_REPORT_MS: u64 = 60_000;

/// Rooms per page when the request gives no `limit`.
pub const PAGE_DEFAULT: u32 = 50;

/// Most rooms per page; larger limits are clamped.
pub const PAGE_MAX: u32 = 100;

const PREFIX: &str = "room/";

/// One public room as listed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomStatus {
    /// The room's name.
    pub name: String,
    /// Open connections (every dialect, named or not) when last reported.
    pub online: u32,
    /// The newest message's timestamp (ms since the epoch), 0 if none.
    #[serde(rename = "lastActivity")]
    pub last_activity: u64,
}

/// A room's new status (from the room): stored unless unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update(pub RoomStatus);

impl Method for Update {
    type Reply = ();
}

/// A room was deleted: forget it (by name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remove(pub String);

impl Method for Remove {
    type Reply = ();
}

/// A page of rooms in name order, after `after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct List {
    /// Only rooms whose name sorts after this one.
    pub after: Option<String>,
    /// At most this many (clamped to [`PAGE_MAX`]).
    pub limit: u32,
}

/// The answer to [`List`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The rooms, in name order.
    pub rooms: Vec<RoomStatus>,
    /// Where to go on (the `after` of the next page), when more rooms exist.
    pub next: Option<String>,
}

impl Method for List {
    type Reply = Page;
}

/// The directory of public rooms (see the module docs). Keeps nothing in
/// memory: every answer comes from storage. Its requests are [`Update`],
/// [`Remove`] and [`List`], sent as one call, [`Request`]
/// (`stub.call(Request::List(..))`): in a cluster the directory runs on
/// one node, and only calls and fetches cross nodes. On its own node it
/// also answers them as typed methods (`stub.ask(..)`).
#[derive(Debug)]
pub struct Directory;

impl Object for Directory {
    type Env = ();
    /// One of its requests.
    type Call = Request;
    /// A page for [`Request::List`]; `None` for the others.
    type Reply = Option<Page>;

    async fn new(_ctx: &mut Context, _env: Arc<()>) -> Result<Self, BoxError> {
        Ok(Directory)
    }

    async fn call(&mut self, ctx: &mut Context, request: Request) -> Result<Option<Page>> {
        match request {
            Request::Update(update) => self.handle(ctx, update).await.map(|()| None),
            Request::Remove(remove) => self.handle(ctx, remove).await.map(|()| None),
            Request::List(list) => self.handle(ctx, list).await.map(Some),
        }
    }
}

/// A request to the directory, as one call (see [`Directory`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A room's new status.
    Update(Update),
    /// A room was deleted.
    Remove(Remove),
    /// A page of rooms; answered with `Some(page)`.
    List(List),
}

impl Handler<Update> for Directory {
    async fn handle(&mut self, ctx: &mut Context, Update(status): Update) -> Result<()> {
        let key = format!("{PREFIX}{}", status.name);
        // Unchanged: no write (rooms may repeat themselves after waking
        // from hibernation).
        if ctx.storage().get::<RoomStatus>(&key)?.as_ref() != Some(&status) {
            ctx.storage().put(&key, &status)?;
        }
        Ok(())
    }
}

impl Handler<Remove> for Directory {
    async fn handle(&mut self, ctx: &mut Context, Remove(name): Remove) -> Result<()> {
        ctx.storage().delete(&format!("{PREFIX}{name}"))?;
        Ok(())
    }
}

impl Handler<List> for Directory {
    async fn handle(&mut self, ctx: &mut Context, List { after, limit }: List) -> Result<Page> {
        let limit = usize::try_from(limit.min(PAGE_MAX)).unwrap_or(0);
        let mut opts = ListOptions::new()
            .prefix(PREFIX)
            .limit(limit.saturating_add(1));
        if let Some(after) = after {
            opts = opts.start_after(format!("{PREFIX}{after}"));
        }
        let mut rooms: Vec<RoomStatus> = ctx
            .storage()
            .list::<RoomStatus>(&opts)?
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        let more = rooms.len() > limit;
        rooms.truncate(limit);
        let next = if more {
            rooms.last().map(|r| r.name.clone())
        } else {
            None
        };
        Ok(Page { rooms, next })
    }
}
