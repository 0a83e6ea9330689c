//! The `ChatRoom` object: one per room, serving all three dialects over the
//! same sockets, history and rate limit.

mod history;
mod session;

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use objects::{Context, Message, Namespace, Object, Request, Response, Result, WebSocket};
use tracing::Instrument;

use crate::admission::Admission;
use crate::connections::{Budget, Connections, IpBudget};
use crate::limiter::RateLimiter;
use crate::protocol::a::{self, ClientFrame, Extensions};
use crate::protocol::limit::{RATE_LIMITED, RateLimitOptions};
use crate::protocol::{ChatMessage, Dialect, FRAME_TOO_BIG, HISTORY_ON_JOIN, ProtocolError, b, c};
use session::{Closing, Members, Session, Sessions};

/// The error text for a binary frame, in every dialect.
const BINARY_NOT_SUPPORTED: &str = "Binary frames are not supported.";

/// The error text for a message refused because the store is (nearly)
/// full, in every dialect.
pub(crate) const STORAGE_FULL: &str = "Storage full, message not sent.";

/// One chat room: its sockets (accepted into the runtime, so the room can
/// hibernate while they stay open) and its stored history.
///
/// Reached with `id_from_name(name)` for a named room or
/// `id_from_string(hex)` for a private one. The front door hands it
/// WebSocket upgrades carrying an admission header (dialect, client IP, C
/// name). Every socket's session lives in its attachment; the instance
/// keeps only caches it rebuilds (the last timestamp, read back from
/// storage in the constructor, and a copy of the attachments), so an
/// instance may be dropped after any event without losing anything.
///
/// Messages are stored under `msg/<timestamp>` in the same event that
/// broadcasts them, so the output gate holds every frame until the message
/// is on disk.
#[derive(Debug)]
pub struct ChatRoom {
    /// The rate limiters and the per-IP connection counts.
    env: Arc<RoomEnv>,
    /// The room's name (or an id prefix) for logs.
    label: String,
    /// The newest stored timestamp: a cache of storage, rebuilt by `new`.
    last_timestamp: u64,
    /// A cache of the sockets' attachments.
    sessions: Sessions,
    /// Whether an expiry alarm is set (with a retention): a cache of
    /// storage, rebuilt by `new`.
    expiry_set: bool,
    /// Messages stored: a cache of the stored count, filled on first need
    /// (a room from before the count was kept is counted then, once).
    count: Option<u64>,
    /// The room's budget of join/leave notices (with the presence roster
    /// each sends): churn past it is not announced one by one. In memory
    /// only: a fresh instance starts with a full burst.
    notices: Budget,
    /// Notices were held back: the presence roster is sent at the next
    /// notice or message the budget allows.
    presence_stale: bool,
}

/// The notice budget of a room: a burst of about 20 joins and leaves,
/// then one a second. Each notice goes to every member, so without it
/// connect/close churn would reach every member at any rate, around the
/// message rate limit.
const NOTICE_LIMIT: RateLimitOptions = RateLimitOptions {
    per_message_ms: 1_000,
    grace_ms: 20_000,
};

/// What every room of a process shares: the rate limiter namespace and
/// the per-IP connection counts (built by [`AppState::new`](crate::AppState::new)).
#[derive(Debug)]
pub struct RoomEnv {
    /// The rate limiters, one per client IP.
    limiters: Namespace<RateLimiter>,
    /// Open sockets per client IP: the room gives a socket's slot back
    /// when the socket closes.
    connections: Arc<Connections>,
    /// How long messages are kept, in ms; `None` keeps them for ever.
    retention_ms: Option<u64>,
    /// The most messages a room keeps; the oldest go first. `None`: no
    /// cap.
    max_messages: Option<u64>,
    /// History pages per client IP per minute, across rooms.
    history_pages: IpBudget,
    /// How full the store is, so messages are refused with an error
    /// before a commit could fail (which would reset the room and tell
    /// the sender nothing).
    store: Option<StoreGuard>,
}

/// Refuses new messages once the store's free space falls under a
/// reserve, kept so deletes (retention, which needs pages to write its
/// deletes) still commit.
#[derive(Debug)]
pub(crate) struct StoreGuard {
    usage: objects::StoreUsage,
}

impl StoreGuard {
    pub(crate) fn new(usage: objects::StoreUsage) -> StoreGuard {
        StoreGuard { usage }
    }

    /// Whether less than the reserve (1/32 of the store, at least 256 KiB)
    /// is left.
    fn is_full(&self) -> bool {
        let (used, max) = self.usage.bytes();
        let reserve = (max / 32).max(256 * 1024);
        used.saturating_add(reserve) > max
    }
}

impl RoomEnv {
    pub(crate) fn new(
        limiters: Namespace<RateLimiter>,
        connections: Arc<Connections>,
        retention: Option<std::time::Duration>,
        max_messages: Option<u64>,
        history_pages: IpBudget,
        store: Option<StoreGuard>,
    ) -> RoomEnv {
        RoomEnv {
            max_messages,
            limiters,
            connections,
            history_pages,
            store,
            retention_ms: retention.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

impl Object for ChatRoom {
    type Env = RoomEnv;
    /// The room takes no RPC calls.
    type Call = ();
    /// The room takes no RPC calls.
    type Reply = ();

    async fn new(ctx: &mut Context, env: Arc<RoomEnv>) -> Result<Self> {
        let label = match ctx.name() {
            Some(name) => name.to_owned(),
            // Private rooms: a prefix identifies the room in logs without
            // handing readers of the logs the whole (secret) id.
            None => format!("id:{}", &ctx.id().to_hex()[..12]),
        };
        let expiry_set = ctx.storage().alarm()?.is_some();
        Ok(ChatRoom {
            count: None,
            env,
            label,
            last_timestamp: history::latest(ctx.storage())?,
            sessions: Sessions::default(),
            expiry_set,
            notices: Budget::default(),
            presence_stale: false,
        })
    }

    /// History bounds: deletes the oldest messages past the room's cap,
    /// then those older than the retention, and comes back at once while
    /// there is more to delete, else when the next one is due to go.
    async fn alarm(&mut self, ctx: &mut Context, _info: objects::AlarmInfo) -> Result<()> {
        let _span = self.span().entered();
        self.expiry_set = false;
        let now = ctx.now_ms();
        let mut more = false;
        let count_before = self.message_count(ctx)?;
        let mut count = count_before;
        if let Some(max) = self.env.max_messages
            && count > max
        {
            let trimmed = history::trim(ctx.storage(), count - max)?;
            count = count.saturating_sub(trimmed as u64);
            more = count > max;
            tracing::debug!(trimmed, more, "history over its cap trimmed");
        }
        if let Some(retention) = self.env.retention_ms {
            let (deleted, left) = history::expire(ctx.storage(), now.saturating_sub(retention))?;
            count = count.saturating_sub(deleted as u64);
            more |= left;
            tracing::debug!(deleted, left, "history expired");
        }
        if count != count_before {
            history::set_count(ctx.storage(), count)?;
        }
        self.count = Some(count);
        let next = if more {
            Some(now)
        } else if let Some(retention) = self.env.retention_ms {
            history::oldest(ctx.storage())?.map(|t| t.saturating_add(retention))
        } else {
            None
        };
        if let Some(at) = next {
            ctx.storage().set_alarm(at)?;
            self.expiry_set = true;
        }
        Ok(())
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> Result<Response> {
        let span = self.span();
        self.admit(ctx, req).instrument(span).await
    }

    async fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        msg: Message,
    ) -> Result<()> {
        let span = self.span();
        self.on_message(ctx, ws, msg).instrument(span).await
    }

    async fn websocket_close(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        code: u16,
        _reason: String,
        clean: bool,
    ) -> Result<()> {
        let _span = self.span().entered();
        self.on_close(ctx, ws, code, clean);
        Ok(())
    }

    async fn websocket_error(
        &mut self,
        _ctx: &mut Context,
        ws: WebSocket,
        error: String,
    ) -> Result<()> {
        // The close event follows; the quit notice goes out there.
        let _span = self.span().entered();
        tracing::debug!(socket = ws.sid(), %error, "socket error");
        Ok(())
    }
}

impl ChatRoom {
    fn span(&self) -> tracing::Span {
        tracing::info_span!("room", name = %self.label)
    }

    /// Accepts a socket handed over by the front door.
    async fn admit(&mut self, ctx: &mut Context, mut req: Request) -> Result<Response> {
        let Some(admission) = Admission::from_headers(req.headers()) else {
            return Ok(text_response(
                StatusCode::BAD_REQUEST,
                "missing admission: connect through the front door",
            ));
        };
        let mut session = Session {
            dialect: admission.dialect,
            name: None,
            ext: Extensions::default(),
            ip: admission.ip,
            closing: None,
        };
        // Dialect C is named by its query (the front door refuses an
        // over-long name before the upgrade; checked again here, before
        // accepting, so a room reached some other way holds the same line).
        // The backlog is read before accepting too: a failure then leaves
        // no socket behind.
        let mut backlog = Vec::new();
        if session.dialect == Dialect::C {
            match c::name_from_query(admission.name.as_deref()) {
                Ok(name) => session.name = Some(name),
                Err(error) => {
                    return Ok(text_response(StatusCode::BAD_REQUEST, error.client_text()));
                }
            }
            backlog = history::recent(ctx.storage(), HISTORY_ON_JOIN)?;
        }
        let tag = match session.dialect {
            Dialect::A => "A",
            Dialect::B => "B",
            Dialect::C => "C",
        };
        let (ws, response) = match ctx.accept_websocket(&mut req, &[tag]) {
            Ok(accepted) => accepted,
            Err(objects::WebSocketError::TooManySockets(max)) => {
                return Ok(text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("This room is full ({max} connections)."),
                ));
            }
            Err(error) => return Ok(text_response(StatusCode::BAD_REQUEST, &error.to_string())),
        };
        let dialect = session.dialect;
        let name = session.name.clone();
        self.sessions.set(ctx, ws, session)?;
        tracing::debug!(
            socket = ws.sid(),
            ?dialect,
            name = name.as_deref().unwrap_or(""),
            "connected"
        );
        if let Some(name) = name {
            for message in &backlog {
                ctx.send(ws, c::encode_chat(message));
            }
            self.notify(ctx, ws, Some(&name), Presence::Joined);
        } else {
            // A (unnamed until its hello) and B change only the count.
            self.notify(ctx, ws, None, Presence::Joined);
        }
        Ok(response)
    }

    async fn on_message(&mut self, ctx: &mut Context, ws: WebSocket, msg: Message) -> Result<()> {
        let Some(session) = self.sessions.get(ctx, ws).cloned() else {
            tracing::warn!(socket = ws.sid(), "frame from a socket without a session");
            return Ok(());
        };
        if session.closing.is_some() {
            // Refused and about to be closed: nothing more to say.
            return Ok(());
        }
        let size = match &msg {
            Message::Text(text) => text.len(),
            Message::Binary(bytes) => bytes.len(),
        };
        if size > session.dialect.max_frame_bytes() {
            tracing::debug!(socket = ws.sid(), size, "frame over the dialect's limit");
            return self.close_later(ctx, ws, &session, 1009, FRAME_TOO_BIG);
        }
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(_) => {
                ctx.send(ws, encode_error(session.dialect, BINARY_NOT_SUPPORTED));
                return Ok(());
            }
        };
        match session.dialect {
            Dialect::A if session.name.is_none() => match a::decode(&text, false) {
                Ok(ClientFrame::Hello { name, ext }) => self.hello(ctx, ws, session, name, ext),
                // `decode` before the hello yields only hellos.
                Ok(_) => Ok(()),
                Err(error) => self.refuse(ctx, ws, &session, &error),
            },
            Dialect::A => match a::decode(&text, true) {
                Ok(ClientFrame::Message(message)) => self.chat(ctx, ws, &session, message).await,
                Ok(ClientFrame::HistoryRequest { before, limit }) if session.ext.history => {
                    // A page is read from storage and can be 150 KB: it
                    // is charged to the IP's history budget.
                    if !self.env.history_pages.charge(&session.ip, ctx.now_ms()) {
                        tracing::debug!(socket = ws.sid(), "history pages rate limited");
                        ctx.send(ws, a::encode_error(RATE_LIMITED));
                        return Ok(());
                    }
                    let (messages, more) = history::page(ctx.storage(), before, limit)?;
                    ctx.send(ws, a::encode_history_page(&messages, more));
                    Ok(())
                }
                // Not opted in: the request is not understood.
                Ok(ClientFrame::HistoryRequest { .. }) => {
                    self.refuse(ctx, ws, &session, &ProtocolError::MissingMessage)
                }
                // `decode` after the hello never yields a hello.
                Ok(ClientFrame::Hello { .. }) => Ok(()),
                Err(error) => self.refuse(ctx, ws, &session, &error),
            },
            Dialect::B => match b::decode(&text) {
                Ok(Some(message)) => self.chat(ctx, ws, &session, message).await,
                Ok(None) => Ok(()),
                Err(error) => self.refuse(ctx, ws, &session, &error),
            },
            Dialect::C => match c::decode(&text) {
                Ok(Some(message)) => self.chat(ctx, ws, &session, message).await,
                Ok(None) => Ok(()),
                Err(error) => self.refuse(ctx, ws, &session, &error),
            },
        }
    }

    /// A dialect-A hello: roster, backlog and `ready` to the newcomer, the
    /// join to everyone else.
    fn hello(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        mut session: Session,
        name: String,
        ext: Extensions,
    ) -> Result<()> {
        // The fallible read first: a failure then changes nothing.
        let backlog = history::recent(ctx.storage(), HISTORY_ON_JOIN)?;
        session.name = Some(name.clone());
        session.ext = ext;
        self.sessions.set(ctx, ws, session)?;
        tracing::debug!(socket = ws.sid(), name = %name, "named");
        let members = self.sessions.members(ctx);
        for other in members.names_except(Some(ws)) {
            ctx.send(ws, a::encode_joined(other));
        }
        for message in &backlog {
            ctx.send(ws, a::encode_chat(message));
        }
        ctx.send(ws, a::encode_ready());
        self.notify(ctx, ws, Some(&name), Presence::Joined);
        Ok(())
    }

    /// A chat message from any dialect: rate limit, store, broadcast.
    async fn chat(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        sender: &Session,
        text: String,
    ) -> Result<()> {
        if self.env.store.as_ref().is_some_and(StoreGuard::is_full) {
            tracing::warn!(socket = ws.sid(), "message refused: storage full");
            ctx.send(ws, encode_error(sender.dialect, STORAGE_FULL));
            return Ok(());
        }
        if !self.charge(ctx, ws, sender).await {
            return Ok(());
        }
        let timestamp = history::next_timestamp(ctx.now_ms(), self.last_timestamp);
        let message = ChatMessage {
            name: match sender.dialect {
                Dialect::B => b::SENDER_NAME.to_owned(),
                Dialect::A => sender
                    .name
                    .clone()
                    .unwrap_or_else(|| a::DEFAULT_NAME.to_owned()),
                Dialect::C => sender
                    .name
                    .clone()
                    .unwrap_or_else(|| c::DEFAULT_NAME.to_owned()),
            },
            message: text,
            timestamp,
            plain: sender.dialect == Dialect::B,
        };
        // Counted before the message is written (a room from before the
        // count is counted by listing, which would see it).
        let count = self.message_count(ctx)? + 1;
        // Stored in this event, so the output gate holds the broadcast
        // below until the message is durable.
        ctx.storage().put(&history::key(timestamp), &message)?;
        self.last_timestamp = timestamp;
        history::set_count(ctx.storage(), count)?;
        self.count = Some(count);
        if self.env.max_messages.is_some_and(|max| count > max) {
            // Over the cap: the alarm trims the oldest right away (one
            // alarm serves the cap and the retention).
            let now = ctx.now_ms().max(1);
            ctx.storage().set_alarm(now)?;
            self.expiry_set = true;
        } else if let Some(retention) = self.env.retention_ms
            && !self.expiry_set
        {
            ctx.storage()
                .set_alarm(timestamp.saturating_add(retention))?;
            self.expiry_set = true;
        }
        tracing::debug!(socket = ws.sid(), timestamp, "message");
        let members = self.sessions.members(ctx);
        let to_a = members.select(|_, s| s.is_named_a());
        let to_b = members.select(|_, s| s.dialect == Dialect::B);
        let to_c = members.select(|w, s| s.dialect == Dialect::C && w != ws);
        if !to_a.is_empty() {
            ctx.broadcast(to_a, a::encode_chat(&message));
        }
        if !to_b.is_empty() {
            ctx.broadcast(to_b, b::encode_chat(&message));
        }
        if !to_c.is_empty() {
            ctx.broadcast(to_c, c::encode_chat(&message));
        }
        if self.presence_stale && self.notices.spend(ctx.now_ms(), &NOTICE_LIMIT) {
            self.presence_stale = false;
            send_presence(ctx, &members);
        }
        Ok(())
    }

    /// The number of stored messages, from the cache or storage.
    fn message_count(&mut self, ctx: &mut Context) -> Result<u64> {
        if let Some(count) = self.count {
            return Ok(count);
        }
        let count = history::count(ctx.storage())?;
        self.count = Some(count);
        Ok(count)
    }

    /// Charges one unit of the sender's IP budget (the rate limiter shared
    /// by every room); on refusal the sender gets the rate limit error and
    /// false comes back.
    async fn charge(&self, ctx: &mut Context, ws: WebSocket, sender: &Session) -> bool {
        let limiter = self.env.limiters.get_by_name(&sender.ip);
        match limiter.call(ctx.now_ms()).await {
            Ok(Ok(())) => true,
            Ok(Err(cooldown_ms)) => {
                tracing::debug!(socket = ws.sid(), cooldown_ms, "rate limited");
                ctx.send(ws, encode_error(sender.dialect, RATE_LIMITED));
                false
            }
            Err(error) => {
                // Fail closed: a limiter that cannot answer (overloaded,
                // shutting down) must not turn into no limit at all.
                tracing::warn!(socket = ws.sid(), %error, "rate limiter unavailable");
                ctx.send(ws, encode_error(sender.dialect, RATE_LIMITED));
                false
            }
        }
    }

    /// Answers a refused frame in the sender's dialect, closing the socket
    /// when the error calls for it (an over-long name).
    fn refuse(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        session: &Session,
        error: &ProtocolError,
    ) -> Result<()> {
        tracing::debug!(socket = ws.sid(), %error, "frame refused");
        let text = error.client_text();
        ctx.send(ws, encode_error(session.dialect, text));
        if let Some(code) = error.closes_socket() {
            self.close_later(ctx, ws, session, code, text)?;
        }
        Ok(())
    }

    /// Closes a socket after the frames sent to it in this event (the
    /// runtime queues the close behind them). The session is marked, so
    /// frames that arrive before the close completes are ignored.
    fn close_later(
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

    fn on_close(&mut self, ctx: &mut Context, ws: WebSocket, code: u16, clean: bool) {
        let Some(session) = self.sessions.remove(ctx, ws) else {
            return;
        };
        // The front door took a slot for this socket before handing it
        // over; this handler runs once per accepted socket.
        self.env.connections.release(&session.ip);
        tracing::debug!(socket = ws.sid(), dialect = ?session.dialect, code, clean, "disconnected");
        // The closed socket is no longer listed among the members.
        self.notify(ctx, ws, session.name.as_deref(), Presence::Left);
    }

    /// Tells the members that `who` (named `name`, if it has a name)
    /// arrived or left, with the presence roster, if the room's notice
    /// budget allows; otherwise the roster is marked stale and goes out
    /// with the next notice or message the budget allows.
    fn notify(&mut self, ctx: &mut Context, who: WebSocket, name: Option<&str>, what: Presence) {
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
}

/// Whether a user arrived or went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    Joined,
    Left,
}

/// Tells the named A sessions (`joined`/`quit`) and the C sessions
/// (`joined the chat`/`left the chat`), except `who` itself, that `name`
/// arrived or left. B clients get no notices.
fn announce(ctx: &mut Context, members: &Members<'_>, who: WebSocket, name: &str, what: Presence) {
    let to_a = members.select(|w, s| w != who && s.is_named_a());
    let to_c = members.select(|w, s| w != who && s.dialect == Dialect::C);
    if !to_a.is_empty() {
        let frame = match what {
            Presence::Joined => a::encode_joined(name),
            Presence::Left => a::encode_quit(name),
        };
        ctx.broadcast(to_a, frame);
    }
    if !to_c.is_empty() {
        let frame = match what {
            Presence::Joined => c::encode_joined(name),
            Presence::Left => c::encode_left(name),
        };
        ctx.broadcast(to_c, frame);
    }
}

/// Extension `presence`: the room's count and names, to every named A
/// session that opted in.
fn send_presence(ctx: &mut Context, members: &Members<'_>) {
    let to = members.select(|_, s| s.is_named_a() && s.ext.presence);
    if to.is_empty() {
        return;
    }
    let frame = a::encode_presence(members.count(), &members.names_except(None));
    ctx.broadcast(to, frame);
}

/// An error frame in a dialect.
fn encode_error(dialect: Dialect, text: &str) -> String {
    match dialect {
        Dialect::A => a::encode_error(text),
        Dialect::B => b::encode_error(text),
        Dialect::C => c::encode_error(text),
    }
}

/// A plain-text response.
fn text_response(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Bytes::from(text.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain;charset=UTF-8"),
    );
    response
}
