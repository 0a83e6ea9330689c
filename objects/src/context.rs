//! What a handler sees of its object: id, storage, clock, sockets.

use std::any::TypeId;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::background::{Background, Sink, SpawnError};
use crate::error::BoxError;
use crate::http::{Request, Response};
use crate::id::ObjectId;
use crate::options::NsLimits;
use crate::shared::Shared;
use crate::storage::{Storage, Timers};
use crate::stream::{self, BodySender, BodyStream, OpenGuard, Unsent};
use crate::websocket::registry::{self, MAX_SOCKETS};
use crate::websocket::socket::{self, Deliver, Outgoing, Table};
use crate::websocket::{Message, WebSocket, WebSocketError};

/// Outbox entries a live object keeps room for between events.
const OUTBOX_KEPT: usize = 128;

/// The object's side of the runtime, passed to every handler.
///
/// Everything an event sends through its context (WebSocket frames and
/// closes) is held until the event's writes are durable: the output gate.
pub struct Context {
    id: ObjectId,
    storage: Storage,
    shared: Arc<Shared>,
    sockets: Arc<Table>,
    deliver: Arc<dyn Deliver>,
    /// Frames and stream chunks held by the output gate, in send order.
    outbox: Vec<Out>,
    /// Streamed bodies of this object still open (their readers alive).
    open_streams: Arc<AtomicUsize>,
    /// Set by [`abort`](Context::abort) during the running event.
    aborted: Option<String>,
    /// Futures started by [`spawn`](Context::spawn).
    background: Background,
    /// Where their results go (this object's mailbox).
    sink: Arc<dyn Sink>,
    /// The object type handlers run on, checked by `spawn`.
    object_type: TypeId,
    limits: NsLimits,
}

/// One output held by the gate.
enum Out {
    Socket(u64, Outgoing),
    Stream(BodySender, Bytes),
    /// A remote socket's tags and attachment go to its edge.
    #[cfg(feature = "cluster")]
    Keep(u64),
}

/// A finished background future's continuation, as the activation runs it.
pub(crate) type Continuation<O> =
    Box<dyn FnOnce(&mut O, &mut Context) -> Result<(), BoxError> + Send>;

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn to_ws(msg: Message) -> WsMessage {
    match msg {
        Message::Text(t) => WsMessage::text(t),
        Message::Binary(b) => WsMessage::Binary(b),
    }
}

impl Context {
    pub(crate) fn new(
        id: ObjectId,
        storage: Storage,
        shared: Arc<Shared>,
        sockets: Arc<Table>,
        deliver: Arc<dyn Deliver>,
        spawn: (Arc<dyn Sink>, TypeId, NsLimits),
    ) -> Self {
        let (sink, object_type, limits) = spawn;
        Context {
            id,
            storage,
            shared,
            sockets,
            deliver,
            outbox: Vec::new(),
            open_streams: Arc::new(AtomicUsize::new(0)),
            aborted: None,
            background: Background::new(limits.max_background),
            sink,
            object_type,
            limits,
        }
    }

    /// This object's id.
    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    /// The name this object's id was derived from, when it came from a name.
    pub fn name(&self) -> Option<&str> {
        self.id.name()
    }

    /// This object's storage.
    pub fn storage(&mut self) -> &mut Storage {
        &mut self.storage
    }

    /// This object's named durable timers, multiplexed over its one
    /// alarm: due timers run the [`Object::timer`](crate::Object::timer)
    /// handler. Changes commit with this event's writes.
    pub fn timers(&mut self) -> Timers<'_> {
        let now = self.now();
        Timers {
            storage: &mut self.storage,
            now,
        }
    }

    /// Wall-clock time, from the runtime's clock.
    pub fn now(&self) -> SystemTime {
        self.shared.clock.now()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, registry::Registry<socket::SocketHandle>> {
        crate::sync::lock(&self.sockets)
    }

    /// Accepts a WebSocket upgrade into the runtime, with up to 10 tags.
    /// Return the response from `fetch`; the socket is served once the
    /// event's writes are durable and the 101 has gone out. The socket then
    /// outlives this instance: the object may hibernate while it is open.
    ///
    #[doc = include_str!("docs/accept_websocket.md")]
    ///
    /// # Errors
    ///
    /// Not an upgrade request, tags over the limits, or the object already
    /// holding [`MAX_SOCKETS`] sockets.
    pub fn accept_websocket(
        &mut self,
        req: &mut Request,
        tags: &[&str],
    ) -> Result<(WebSocket, Response), WebSocketError> {
        if self.shared.refuses_sockets() {
            return Err(WebSocketError::ShuttingDown);
        }
        let response = socket::handshake(req)?;
        let tags = registry::check_tags(tags)?;
        #[cfg(feature = "cluster")]
        if let Some(remote) = req
            .extensions_mut()
            .remove::<crate::websocket::remote::RemoteUpgrade>()
        {
            return self.accept_remote(remote, tags, response);
        }
        if req
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_none()
        {
            return Err(WebSocketError::NotAnUpgrade);
        }
        if self.table().len() >= MAX_SOCKETS {
            return Err(WebSocketError::TooManySockets(MAX_SOCKETS));
        }
        let upgrade = hyper::upgrade::on(req);
        let sid = self.shared.next_sid.fetch_add(1, Ordering::Relaxed);
        let handle = socket::spawn(
            self.shared.socket_tasks.token(),
            self.deliver.clone(),
            self.sockets.clone(),
            *self.id.as_bytes(),
            sid,
            upgrade,
            &self.shared.options.websocket,
        );
        self.table().accept(sid, handle.clone(), tags)?;
        self.outbox.push(Out::Socket(sid, Outgoing::Live));
        if self.shared.refuses_sockets() {
            // Shutdown began while we accepted: its sweep may have missed us.
            handle.close(1001, "server shutting down".into());
        }
        Ok((WebSocket { sid }, response))
    }

    /// Accepts an upgrade whose connection stays on another node (the
    /// edge): the socket is kept here like a local one, its frames cross
    /// the link.
    #[cfg(feature = "cluster")]
    fn accept_remote(
        &mut self,
        remote: crate::websocket::remote::RemoteUpgrade,
        tags: Vec<String>,
        response: Response,
    ) -> Result<(WebSocket, Response), WebSocketError> {
        use crate::websocket::remote::{RemoteHandle, RemoteSocket};
        let sid = self.shared.next_sid.fetch_add(1, Ordering::Relaxed);
        let link = remote.link.clone();
        let handle = socket::SocketHandle::remote(RemoteHandle {
            link: link.clone(),
            esid: remote.esid,
        });
        let pair = {
            let mut t = self.table();
            t.accept(sid, handle, tags)?;
            t.auto_response().cloned()
        };
        link.register(
            remote.esid,
            RemoteSocket {
                deliver: self.deliver.clone(),
                table: self.sockets.clone(),
                id: *self.id.as_bytes(),
                sid,
            },
        );
        if pair.is_some() {
            link.auto_response(self.id.as_bytes(), pair);
        }
        self.outbox.push(Out::Socket(sid, Outgoing::Live));
        self.outbox.push(Out::Keep(sid));
        Ok((WebSocket { sid }, response))
    }

    /// The open accepted sockets, optionally only those with `tag`.
    pub fn websockets(&self, tag: Option<&str>) -> Vec<WebSocket> {
        self.table()
            .list(tag)
            .into_iter()
            .map(|sid| WebSocket { sid })
            .collect()
    }

    /// A socket's tags.
    ///
    /// # Errors
    ///
    /// [`WebSocketError::UnknownSocket`] if it is not accepted here.
    pub fn tags(&self, ws: WebSocket) -> Result<Vec<String>, WebSocketError> {
        self.table()
            .tags(ws.sid)
            .map(<[String]>::to_vec)
            .ok_or(WebSocketError::UnknownSocket)
    }

    /// Reads a socket's attachment (`None` if never set).
    ///
    /// # Errors
    ///
    /// Unknown socket, or an attachment that does not decode as `T`.
    pub fn attachment<T: DeserializeOwned>(
        &self,
        ws: WebSocket,
    ) -> Result<Option<T>, WebSocketError> {
        let t = self.table();
        t.attachment(ws.sid)?
            .map(|b| serde_json::from_slice(b).map_err(|e| WebSocketError::Codec(e.to_string())))
            .transpose()
    }

    /// Sets a socket's attachment: a small value kept with the socket
    /// across hibernation (at most [`MAX_ATTACHMENT_BYTES`](crate::MAX_ATTACHMENT_BYTES)
    /// as JSON). On error the previous attachment is kept.
    ///
    /// # Errors
    ///
    /// Unknown socket, a value that does not serialise, or over the limit.
    pub fn set_attachment<T: Serialize + ?Sized>(
        &mut self,
        ws: WebSocket,
        value: &T,
    ) -> Result<(), WebSocketError> {
        let bytes = serde_json::to_vec(value).map_err(|e| WebSocketError::Codec(e.to_string()))?;
        let mut t = self.table();
        t.set_attachment(ws.sid, Some(bytes.into()))?;
        // A remote socket's edge learns it once the event is released.
        #[cfg(feature = "cluster")]
        if t.any_handle(ws.sid)
            .is_some_and(|h| h.remote_parts().is_some())
        {
            drop(t);
            self.outbox.push(Out::Keep(ws.sid));
        }
        Ok(())
    }

    /// Sends a message on a socket. Held until this event's writes are
    /// durable; dropped if the socket has closed by then.
    pub fn send(&mut self, ws: WebSocket, msg: impl Into<Message>) {
        self.outbox
            .push(Out::Socket(ws.sid, Outgoing::Frame(to_ws(msg.into()))));
    }

    /// Sends one message to many sockets: encoded once, the bytes shared.
    ///
    #[doc = include_str!("docs/broadcast.md")]
    pub fn broadcast(
        &mut self,
        sockets: impl IntoIterator<Item = WebSocket>,
        msg: impl Into<Message>,
    ) {
        let frame = to_ws(msg.into());
        for ws in sockets {
            self.outbox
                .push(Out::Socket(ws.sid, Outgoing::Frame(frame.clone())));
        }
    }

    /// Closes a socket with a code and reason (after this event's writes are
    /// durable). The close handler runs when the socket task finishes.
    pub fn close(&mut self, ws: WebSocket, code: u16, reason: impl Into<String>) {
        self.outbox
            .push(Out::Socket(ws.sid, Outgoing::Close(code, reason.into())));
    }

    /// Sets (or with `None` clears) the auto-response: a text message equal
    /// to the request is answered with the response by the runtime, without
    /// waking the object.
    ///
    /// # Errors
    ///
    /// A string over 2048 characters.
    pub fn set_auto_response(&mut self, pair: Option<(&str, &str)>) -> Result<(), WebSocketError> {
        let pair = pair.map(|(a, b)| (a.to_string(), b.to_string()));
        let mut t = self.table();
        t.set_auto_response(pair.clone())?;
        // Sockets connected to other nodes are answered there.
        #[cfg(feature = "cluster")]
        {
            let mut links: Vec<Arc<dyn crate::websocket::remote::EdgeLink>> = Vec::new();
            for h in t.handles() {
                if let Some((l, _)) = h.remote_parts()
                    && !links.iter().any(|x| x.edge() == l.edge())
                {
                    links.push(l.clone());
                }
            }
            drop(t);
            for l in links {
                l.auto_response(self.id.as_bytes(), pair.clone());
            }
        }
        Ok(())
    }

    /// The configured auto-response pair.
    pub fn auto_response(&self) -> Option<(String, String)> {
        self.table().auto_response().cloned()
    }

    /// When the runtime last auto-responded on this socket.
    pub fn auto_response_timestamp(&self, ws: WebSocket) -> Option<SystemTime> {
        self.table()
            .auto_response_ms(ws.sid)
            .map(crate::clock::from_ms)
    }

    /// Starts `work` outside this object's input gate: events keep
    /// running while it is pending. When it finishes, `then` runs on the
    /// object as an ordinary event, through the mailbox (so it never
    /// overlaps a handler), in the order the futures finish; its writes
    /// commit and its frames leave as any event's do. `then` names the
    /// object type: `|room: &mut Room, ctx, out| …`.
    ///
    /// Bounds: at most [`max_background`](crate::RuntimeOptions::max_background)
    /// futures per object at once, counting each until its result is taken
    /// out of the mailbox (so a continuation may spawn again); each may run for the namespace's event
    /// time limit, past which it is dropped (and `then` never runs).
    /// Cancelled, with their results dropped, when the instance is reset
    /// (handler error, panic, time limit, abort, failed commit) and at
    /// shutdown. An object is not evicted while it has futures running.
    ///
    /// # Errors
    ///
    /// [`SpawnError::Full`] past the bound, [`SpawnError::WrongObject`]
    /// if `then` takes another type than this object's,
    /// [`SpawnError::ShuttingDown`].
    pub fn spawn<O, T, F, C>(&mut self, work: F, then: C) -> Result<(), SpawnError>
    where
        O: Send + 'static,
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
        C: FnOnce(&mut O, &mut Context, T) -> Result<(), BoxError> + Send + 'static,
    {
        if TypeId::of::<O>() != self.object_type {
            return Err(SpawnError::WrongObject);
        }
        if self.shared.is_shutting_down() {
            return Err(SpawnError::ShuttingDown);
        }
        let (epoch, cancel, running) = self.background.claim()?;
        self.deliver.metrics().background_spawned.increment(1);
        let sink = self.sink.clone();
        let id = *self.id.as_bytes();
        let shutdown = self.shared.shutdown.clone();
        let limit = self.limits.event_time_limit;
        let task = async move {
            let out = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                () = shutdown.cancelled() => return,
                r = tokio::time::timeout(limit, work) => match r {
                    Ok(out) => out,
                    Err(_) => {
                        tracing::warn!(limit = ?limit, "background work ran past the event time limit; dropped");
                        return;
                    }
                },
            };
            let cont: Continuation<O> = Box::new(move |o, ctx| then(o, ctx, out));
            // Still counted while it waits for mailbox room and while it is
            // queued, so the object is not evicted under it; the slot is
            // given back when the activation takes the result.
            sink.deliver(id, epoch, Box::new(cont), running).await;
        };
        let span = tracing::Span::current();
        self.shared
            .tasks
            .spawn(tracing::Instrument::instrument(task, span));
        Ok(())
    }

    /// Background futures of this object still running.
    pub(crate) fn background_running(&self) -> usize {
        self.background.running()
    }

    /// True if a background result of `epoch` belongs to this instance.
    pub(crate) fn background_is_current(&self, epoch: u64) -> bool {
        self.background.is_current(epoch)
    }

    /// The instance is dropped: cancel its background work.
    pub(crate) fn reset_background(&mut self) {
        self.background.reset();
    }

    /// Resets this object on purpose, as an event past its time limit
    /// would: when the running handler returns (whatever it returns), the
    /// instance is dropped, this event's writes and frames are discarded
    /// and its caller gets [`Error::Reset`](crate::Error::Reset) whose
    /// source is [`Aborted`](crate::Aborted) with `reason`. Sockets stay
    /// open; the next event constructs a fresh instance.
    ///
    /// Returns the error to return from the handler:
    /// `return Err(ctx.abort("state is inconsistent"));`
    pub fn abort(&mut self, reason: impl Into<String>) -> BoxError {
        let reason = reason.into();
        self.aborted = Some(reason.clone());
        Box::new(crate::error::Aborted { reason })
    }

    /// The reason given to [`abort`](Context::abort) during the event that
    /// just ran, if any (cleared).
    pub(crate) fn take_abort(&mut self) -> Option<String> {
        self.aborted.take()
    }

    /// A new streamed body: keep the sender (in the instance) and return
    /// the body in a [`StreamResponse`](crate::StreamResponse) from
    /// [`Object::fetch_stream`](crate::Object::fetch_stream). While a
    /// body's reader is connected the object is not evicted; the body ends
    /// when every clone of the sender is dropped (a reset drops the
    /// instance, and so ends its streams).
    pub fn body_channel(&mut self) -> (BodySender, BodyStream) {
        stream::channel(OpenGuard::new(&self.open_streams))
    }

    /// Sends a chunk on a streamed body. Held until this event's writes
    /// are durable, like socket frames; dropped if the reader has gone. A
    /// reader that falls behind (more than [`MAX_STREAM_CHUNKS`](crate::MAX_STREAM_CHUNKS)
    /// chunks or [`MAX_STREAM_BYTES`](crate::MAX_STREAM_BYTES) queued, or
    /// one chunk larger than that) is cut.
    pub fn stream_send(&mut self, body: &BodySender, chunk: impl Into<Bytes>) {
        self.outbox.push(Out::Stream(body.clone(), chunk.into()));
    }

    /// Streamed bodies whose readers are still connected.
    pub(crate) fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::Acquire)
    }

    pub(crate) fn holds_sockets(&self) -> bool {
        !self.table().is_empty()
    }

    pub(crate) fn forget_socket(&self, sid: u64) {
        self.table().remove(sid);
    }

    pub(crate) fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    pub(crate) fn truncate_outbox(&mut self, len: usize) {
        self.outbox.truncate(len);
    }

    /// The output gate opens: hand every held frame to its socket.
    pub(crate) fn release_outbox(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let mut t = crate::sync::lock(&self.sockets);
        let (mut accepted, mut frames) = (0, 0);
        // Links to the nodes of remote sockets that got something.
        #[cfg(feature = "cluster")]
        let mut links: Vec<Arc<dyn crate::websocket::remote::EdgeLink>> = Vec::new();
        // Remote sockets whose tags and attachment go to their edge.
        #[cfg(feature = "cluster")]
        let mut keeps: Vec<u64> = Vec::new();
        // Drained, not replaced: the next event reuses the capacity.
        for out in self.outbox.drain(..) {
            let (sid, out) = match out {
                Out::Socket(sid, out) => (sid, out),
                Out::Stream(tx, chunk) => {
                    if tx.send(chunk) == Err(Unsent::Cut) {
                        tracing::debug!("streamed body cut: its reader fell behind");
                    }
                    continue;
                }
                #[cfg(feature = "cluster")]
                Out::Keep(sid) => {
                    if !keeps.contains(&sid) {
                        keeps.push(sid);
                    }
                    continue;
                }
            };
            match out {
                Outgoing::Live => {
                    t.mark_live(sid);
                    accepted += 1;
                }
                out => {
                    if let Some(h) = t.handle(sid) {
                        frames += u64::from(matches!(out, Outgoing::Frame(_)));
                        h.send(out);
                        #[cfg(feature = "cluster")]
                        if let Some((l, _)) = h.remote_parts()
                            && !links.iter().any(|x| Arc::ptr_eq(x, l))
                        {
                            links.push(l.clone());
                        }
                    }
                }
            }
        }
        #[cfg(feature = "cluster")]
        for sid in keeps {
            if let Some((l, esid)) = t.handle(sid).and_then(|h| h.remote_parts())
                && let Some(tags) = t.tags(sid)
            {
                let attachment = t.attachment(sid).ok().flatten().cloned();
                l.keep(esid, tags.to_vec(), attachment);
                if !links.iter().any(|x| Arc::ptr_eq(x, l)) {
                    links.push(l.clone());
                }
            }
        }
        drop(t);
        #[cfg(feature = "cluster")]
        for l in links {
            l.flush();
        }
        crate::storage::record!(
            self.storage.recorder(),
            crate::storage::journal::Step::FramesOut {
                object: *self.id.as_bytes(),
                frames: usize::try_from(frames).unwrap_or(usize::MAX),
            }
        );
        // A broadcast to a crowd leaves a large buffer; keep a modest one.
        self.outbox.shrink_to(OUTBOX_KEPT);
        let m = self.deliver.metrics();
        if accepted > 0 {
            m.sockets_accepted.increment(accepted);
        }
        if frames > 0 {
            m.messages_out.increment(frames);
        }
    }
}
