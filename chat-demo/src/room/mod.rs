//! The `ChatRoom` object: one per room, serving all three dialects over the
//! same sockets, history and rate limit.

mod direct;
mod fanout;
mod frames;
mod hello;
mod history;
mod manage;
mod notices;
mod reactions;
mod search;
mod session;
mod typing;

use crate::protocol::time::{NowMs, from_millis};
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use objects::BoxError;
use objects::CloseEvent;
use objects::{Context, Message, Namespace, Object, Request, Response, WebSocket};
/// Results inside handlers: any error, boxed.
type Result<T, E = objects::BoxError> = std::result::Result<T, E>;
use tracing::Instrument;

use crate::admission::Admission;
use crate::connections::{Budget, IpBudget};
use crate::directory::{ACTIVITY_REPORT_MS, DIRECTORY_NAME, Directory, RoomStatus};
use crate::limiter::RateLimiter;
use crate::protocol::a::{self, ClientFrame, Extensions};
use crate::protocol::limit::{RATE_LIMITED, RateLimitOptions};
use crate::protocol::{
    ChatMessage, Dialect, FRAME_TOO_BIG, HISTORY_ON_JOIN, ProtocolError, b, c, dm,
};
use fanout::{Presence, announce, broadcast_to_a, send_presence};
use frames::CountedSend;
pub(crate) use history::StoreGuard;
use session::{Closing, Session, Sessions};

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
    /// The rate limiters, the directory and the limits.
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
    /// When each socket's last typing signal was passed on (the throttle;
    /// losing it to hibernation lets one more through).
    typing_at: HashMap<WebSocket, u64>,
    /// The room's name when it is public (reached by name); private rooms
    /// are never listed.
    public_name: Option<String>,
    /// The last status sent to the directory and when: a cache (losing it
    /// costs one repeated report).
    reported: Option<(RoomStatus, u64)>,
    /// Messages stored: a cache of the stored count, filled on first need
    /// (a room from before the count was kept is counted then, once).
    count: Option<u64>,
    /// Stored messages not yet in the search index (`search::record`).
    unindexed: Option<usize>,
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

/// What every room of a process shares: the rate limiter namespace, the
/// directory and the limits (built by [`AppState::new`](crate::AppState::new)).
#[derive(Debug)]
pub struct RoomEnv {
    /// The rate limiters, one per client IP.
    limiters: Namespace<RateLimiter>,
    /// How long messages are kept, in ms; `None` keeps them for ever.
    retention_ms: Option<u64>,
    /// The directory of public rooms, which named rooms report to.
    directory: Namespace<Directory>,
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

impl RoomEnv {
    pub(crate) fn new(
        limiters: Namespace<RateLimiter>,
        retention: Option<std::time::Duration>,
        directory: Namespace<Directory>,
        max_messages: Option<u64>,
        history_pages: IpBudget,
        store: Option<StoreGuard>,
    ) -> RoomEnv {
        RoomEnv {
            max_messages,
            limiters,
            directory,
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

    async fn new(ctx: &mut Context, env: Arc<RoomEnv>) -> Result<Self, BoxError> {
        let label = match ctx.name() {
            Some(name) => name.to_owned(),
            // Private rooms: a prefix identifies the room in logs without
            // handing readers of the logs the whole (secret) id.
            None => format!("id:{}", &ctx.id().to_hex()[..12]),
        };
        let expiry_set = ctx.storage().alarm()?.is_some();
        Ok(ChatRoom {
            count: None,
            unindexed: None,
            env,
            label,
            last_timestamp: history::latest(ctx.storage())?.max(direct::latest(ctx.storage())?),
            sessions: Sessions::default(),
            expiry_set,
            typing_at: HashMap::new(),
            public_name: ctx.name().map(str::to_owned),
            reported: None,
            notices: Budget::default(),
            presence_stale: false,
        })
    }

    /// History bounds: deletes the oldest messages past the room's cap,
    /// then those older than the retention (direct messages too), and
    /// comes back at once while there is more to delete, else when the
    /// next one is due to go.
    async fn alarm(
        &mut self,
        ctx: &mut Context,
        _info: objects::AlarmInfo,
    ) -> Result<(), BoxError> {
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
            let cutoff = now.saturating_sub(retention);
            let (deleted, left) = history::expire(ctx.storage(), cutoff)?;
            // Direct messages age out on the same clock.
            let (deleted_direct, left_direct) = direct::expire(ctx.storage(), cutoff)?;
            count = count.saturating_sub(deleted as u64);
            more |= left || left_direct;
            tracing::debug!(
                deleted,
                deleted_direct,
                left,
                left_direct,
                "history expired"
            );
        }
        if count != count_before {
            history::set_count(ctx.storage(), count)?;
        }
        self.count = Some(count);
        let next = if more {
            Some(now)
        } else if let Some(retention) = self.env.retention_ms {
            let oldest = match (
                history::oldest(ctx.storage())?,
                direct::oldest(ctx.storage())?,
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            oldest.map(|t| t.saturating_add(retention))
        } else {
            None
        };
        if let Some(at) = next {
            ctx.storage().set_alarm(from_millis(at))?;
            self.expiry_set = true;
        }
        Ok(())
    }

    async fn fetch(&mut self, ctx: &mut Context, req: Request) -> Result<Response, BoxError> {
        let span = self.span();
        self.admit(ctx, req).instrument(span).await
    }

    async fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        msg: Message,
    ) -> Result<(), BoxError> {
        let span = self.span();
        self.on_message(ctx, ws, msg).instrument(span).await
    }

    async fn websocket_close(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        close: CloseEvent,
    ) -> Result<(), BoxError> {
        let _span = self.span().entered();
        self.on_close(ctx, ws, close.code, close.clean);
        Ok(())
    }

    async fn websocket_error(
        &mut self,
        _ctx: &mut Context,
        ws: WebSocket,
        error: String,
    ) -> Result<(), BoxError> {
        // The close event follows; the quit notice goes out there.
        let _span = self.span().entered();
        tracing::debug!(socket = ws.sid(), %error, "socket error");
        Ok(())
    }
}

impl ChatRoom {
    fn span(&self) -> tracing::Span {
        // `room`, not `name`: JSON logs put a span's fields beside its name.
        tracing::info_span!("room", room = %self.label)
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
            user: None,
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
                Ok(name) => {
                    session.name = Some(name);
                    session.ext = c::ext_from_query(admission.ext.as_deref());
                }
                Err(error) => {
                    return Ok(text_response(StatusCode::BAD_REQUEST, error.client_text()));
                }
            }
            backlog = history::recent(ctx.storage(), HISTORY_ON_JOIN)?;
        }
        // A password-protected room: B cannot join it, C must give the
        // password in its query (A gives it in its hello). Refused before
        // the upgrade, so no socket is opened just to be closed.
        if session.dialect != Dialect::A
            && let Some((status, text)) = self
                .password_refusal(ctx, &session, admission.password.as_deref())
                .await?
        {
            return Ok(text_response(status, text));
        }
        let (ws, response) = match ctx.accept_websocket(&mut req, &[session.dialect.label()]) {
            Ok(accepted) => accepted,
            Err(objects::WebSocketError::TooManySockets(max)) => {
                return Ok(text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("This room is full ({max} connections)."),
                ));
            }
            Err(objects::WebSocketError::ShuttingDown) => {
                return Ok(text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The server is shutting down.",
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
                ctx.send_to(Dialect::C, ws, c::encode_chat(message));
            }
            self.notify(ctx, ws, Some(&name), Presence::Joined);
        } else {
            // A (unnamed until its hello) and B change only the count.
            self.notify(ctx, ws, None, Presence::Joined);
        }
        self.report(ctx);
        Ok(response)
    }

    async fn on_message(&mut self, ctx: &mut Context, ws: WebSocket, msg: Message) -> Result<()> {
        let Some(session) = self.sessions.get(ctx, ws).cloned() else {
            tracing::warn!(socket = ws.sid(), "frame from a socket without a session");
            return Ok(());
        };
        crate::counters::frame_received(session.dialect);
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
                ctx.send_error(session.dialect, ws, BINARY_NOT_SUPPORTED);
                return Ok(());
            }
        };
        match session.dialect {
            Dialect::A if session.name.is_none() => match a::decode(&text, false) {
                Ok(ClientFrame::Hello {
                    name,
                    ext,
                    key,
                    password,
                }) => {
                    if !self
                        .password_gate(ctx, ws, &session, password.as_deref())
                        .await?
                    {
                        return Ok(());
                    }
                    let user = key.as_deref().map(dm::user_id);
                    self.hello(ctx, ws, session, name, ext, user)
                }
                // `decode` before the hello yields only hellos.
                Ok(_) => Ok(()),
                Err(error) => self.refuse(ctx, ws, &session, &error),
            },
            Dialect::A => match a::decode(&text, true) {
                Ok(ClientFrame::Message(message)) => {
                    self.chat(ctx, ws, &session, message, None).await
                }
                Ok(ClientFrame::Reply { message, parent }) if session.ext.threads => {
                    if !history::exists(ctx.storage(), parent)? {
                        return self.refuse(ctx, ws, &session, &ProtocolError::NoSuchMessage);
                    }
                    self.chat(ctx, ws, &session, message, Some(parent)).await
                }
                // Not opted in: `replyTo` is one more field it ignores.
                Ok(ClientFrame::Reply { message, .. }) => {
                    self.chat(ctx, ws, &session, message, None).await
                }
                Ok(ClientFrame::React { id, emoji, on }) if session.ext.reactions => {
                    self.react(ctx, ws, &session, id, &emoji, on).await
                }
                Ok(ClientFrame::HistoryRequest { before, limit }) if session.ext.history => {
                    // A page is read from storage and can be 150 KB: it
                    // is charged to the IP's history budget.
                    if !self.env.history_pages.charge(&session.ip, ctx.now_ms()) {
                        tracing::debug!(socket = ws.sid(), "history pages rate limited");
                        crate::counters::rate_limited("history_page");
                        ctx.send_to(Dialect::A, ws, a::encode_error(RATE_LIMITED));
                        return Ok(());
                    }
                    let (messages, more) = history::page(ctx.storage(), before, limit)?;
                    ctx.send_to(
                        Dialect::A,
                        ws,
                        a::encode_history_page(&messages, more, session.ext),
                    );
                    Ok(())
                }
                // Not opted in: the request is not understood.
                Ok(ClientFrame::Search {
                    query,
                    terms,
                    before,
                    limit,
                }) if session.ext.search => {
                    self.search(ctx, ws, &session, &query, &terms, before, limit)
                        .await
                }
                Ok(ClientFrame::Dm { to, message }) if session.ext.dm => {
                    self.direct(ctx, ws, &session, &to, message).await
                }
                Ok(ClientFrame::Claim) if session.ext.manage => self.claim(ctx, ws, &session).await,
                Ok(ClientFrame::SetTopic { token, topic }) if session.ext.manage => {
                    self.set_topic(ctx, ws, &session, &token, &topic).await
                }
                Ok(ClientFrame::SetPassword { token, password }) if session.ext.manage => {
                    self.set_password(ctx, ws, &session, &token, &password)
                        .await
                }
                Ok(ClientFrame::Delete { token }) if session.ext.manage => {
                    self.delete_room(ctx, ws, &session, &token).await
                }
                Ok(ClientFrame::Typing) if session.ext.typing => {
                    self.typing(ctx, ws, &session);
                    Ok(())
                }
                Ok(
                    ClientFrame::HistoryRequest { .. }
                    | ClientFrame::React { .. }
                    | ClientFrame::Search { .. }
                    | ClientFrame::Dm { .. }
                    | ClientFrame::Claim
                    | ClientFrame::SetTopic { .. }
                    | ClientFrame::SetPassword { .. }
                    | ClientFrame::Delete { .. }
                    | ClientFrame::Typing,
                ) => self.refuse(ctx, ws, &session, &ProtocolError::MissingMessage),
                // `decode` after the hello never yields a hello.
                Ok(ClientFrame::Hello { .. }) => Ok(()),
                Err(error) => self.refuse(ctx, ws, &session, &error),
            },
            Dialect::B => match b::decode(&text) {
                Ok(Some(message)) => self.chat(ctx, ws, &session, message, None).await,
                Ok(None) => Ok(()),
                Err(error) => self.refuse(ctx, ws, &session, &error),
            },
            Dialect::C if session.ext.typing && c::is_typing(&text) => {
                self.typing(ctx, ws, &session);
                Ok(())
            }
            Dialect::C => match c::decode(&text) {
                Ok(Some(message)) => self.chat(ctx, ws, &session, message, None).await,
                Ok(None) => Ok(()),
                Err(error) => self.refuse(ctx, ws, &session, &error),
            },
        }
    }

    /// Charges one message to the sender's IP; false (and the sender told)
    /// when its budget is spent.
    pub(super) async fn charge(&self, ctx: &mut Context, ws: WebSocket, sender: &Session) -> bool {
        let limiter = self.env.limiters.get_by_name(&sender.ip);
        let check = crate::limiter::Check {
            now_ms: ctx.now_ms(),
        };
        match limiter.ask(check).await {
            Ok(Ok(())) => true,
            Ok(Err(cooldown_ms)) => {
                tracing::debug!(socket = ws.sid(), cooldown_ms, "rate limited");
                crate::counters::rate_limited("message");
                ctx.send_error(sender.dialect, ws, RATE_LIMITED);
                false
            }
            Err(error) => {
                // Fail closed: a limiter that cannot answer (overloaded,
                // shutting down) must not turn into no limit at all.
                tracing::warn!(socket = ws.sid(), %error, "rate limiter unavailable");
                crate::counters::rate_limited("message");
                let text = crate::limiter::failure_text(&error);
                ctx.send_error(sender.dialect, ws, text);
                false
            }
        }
    }

    /// A chat message from any dialect (a reply when `reply_to` is set):
    /// rate limit, store, broadcast.
    async fn chat(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        sender: &Session,
        text: String,
        reply_to: Option<u64>,
    ) -> Result<()> {
        if self.env.store.as_ref().is_some_and(StoreGuard::is_full) {
            tracing::warn!(socket = ws.sid(), "message refused: storage full");
            ctx.send_error(sender.dialect, ws, STORAGE_FULL);
            return Ok(());
        }
        if !self.charge(ctx, ws, sender).await {
            return Ok(());
        }
        // A message ends "typing": the sender's next signal goes through.
        self.typing_at.remove(&ws);
        let timestamp = history::next_timestamp(ctx.now_ms(), self.last_timestamp);
        let message = ChatMessage {
            name: sender.dialect.sender_name(sender.name.as_deref()),
            message: text,
            timestamp,
            plain: sender.dialect == Dialect::B,
            reply_to,
            ..ChatMessage::default()
        };
        // Counted before the message is written (a room from before the
        // count is counted by listing, which would see it).
        let count = self.message_count(ctx)? + 1;
        // Stored in this event, so the output gate holds the broadcast
        // below until the message is durable.
        ctx.storage().put(&history::key(timestamp), &message)?;
        search::record(ctx.storage(), &message, &mut self.unindexed)?;
        self.last_timestamp = timestamp;
        history::set_count(ctx.storage(), count)?;
        self.count = Some(count);
        if self.env.max_messages.is_some_and(|max| count > max) {
            // Over the cap: the alarm trims the oldest right away (one
            // alarm serves the cap and the retention).
            let now = ctx.now_ms().max(1);
            ctx.storage().set_alarm(from_millis(now))?;
            self.expiry_set = true;
        } else if let Some(retention) = self.env.retention_ms
            && !self.expiry_set
        {
            ctx.storage()
                .set_alarm(from_millis(timestamp.saturating_add(retention)))?;
            self.expiry_set = true;
        }
        tracing::debug!(socket = ws.sid(), timestamp, "message");
        self.report(ctx);
        let members = self.sessions.members(ctx);
        broadcast_to_a(ctx, &members, &message);
        let to_b = members.select(|_, s| s.dialect == Dialect::B);
        let to_c = members.select(|w, s| s.dialect == Dialect::C && w != ws);
        if !to_b.is_empty() {
            ctx.broadcast_to(to_b, b::encode_chat(&message));
        }
        if !to_c.is_empty() {
            ctx.broadcast_to(to_c, c::encode_chat(&message));
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
