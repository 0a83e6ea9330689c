//! The I/O shell of an accepted WebSocket: one task per socket that reads
//! frames into the object's mailbox and writes the object's frames out of a
//! bounded queue, pings idle peers and cuts slow readers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::queue::{Pushed, SendQueue};
use super::registry::Registry;
use super::{CloseEvent, Message, WebSocketError};
use crate::http::{Request, Response};

/// Tunables of accepted WebSockets.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebSocketOptions {
    /// Largest message accepted from a peer; a larger one closes the socket
    /// with 1009. Default 1 MiB (Cloudflare's limit).
    pub max_message_bytes: usize,
    /// Frames queued for one socket before it counts as a slow reader and
    /// is closed with 1008; the batch the socket is writing counts until it
    /// is written. Default 4096 (a room of 1,000 joining at once sends
    /// each member about 2,000 notices in a burst).
    pub send_queue: usize,
    /// Payload bytes queued for one socket (the batch being written
    /// included) before it counts as a slow reader and is closed with
    /// 1008, whatever the frame count. Default
    /// 512 KiB: a frame count alone lets a peer that never reads pin
    /// 4,096 large frames (hundreds of MB).
    pub send_queue_bytes: usize,
    /// Longest a write to the peer (queued frames, a ping, an automatic
    /// reply) may wait for the peer to take the bytes; past it the socket
    /// counts as a slow reader and is closed (1008, no Close frame: the
    /// peer's buffers are full). Default 30 s.
    pub write_timeout: Duration,
    /// A ping goes out after this long without hearing from the peer.
    /// Default 30 s.
    pub ping_interval: Duration,
    /// The peer is dead if nothing arrives this long after a ping; its
    /// socket is closed as 1006. Default 20 s.
    pub ping_timeout: Duration,
    /// Per-socket read buffer. Default 1 KiB: tungstenite's default is
    /// 128 KiB, which dominates the memory of idle sockets; chat frames are
    /// small, and larger messages are still read (in more reads).
    pub read_buffer: usize,
}

impl Default for WebSocketOptions {
    fn default() -> Self {
        WebSocketOptions {
            max_message_bytes: 1 << 20,
            send_queue: 4096,
            send_queue_bytes: 512 * 1024,
            write_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(20),
            read_buffer: 1024,
        }
    }
}

with_setters!(WebSocketOptions {
    with_max_message_bytes => max_message_bytes: usize,
    with_send_queue => send_queue: usize,
    with_ping_interval => ping_interval: Duration,
    with_ping_timeout => ping_timeout: Duration,
    with_read_buffer => read_buffer: usize,
    with_send_queue_bytes => send_queue_bytes: usize,
    with_write_timeout => write_timeout: Duration,
});

/// The close reason of a socket cut off because its reader fell behind.
const SLOW_READER: &str = "slow reader: send queue full";
/// The close reason of a socket whose object is no longer served by the
/// node its events go to.
pub(crate) const NOT_SERVED: &str = "the object's node does not serve it now; reconnect";
/// The close reason of a socket whose write waited past the deadline.
const WRITE_DEADLINE: &str = "slow reader: write deadline passed";

/// What the socket task is told to send.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    Frame(WsMessage),
    Close(u16, String),
    /// Not sent: marks the socket accepted for good once the event commits.
    Live,
}

/// How the runtime reaches a socket: its task here, or (in a cluster) the
/// node its connection is on.
#[derive(Debug, Clone)]
pub(crate) struct SocketHandle(Sink);

#[derive(Debug, Clone)]
enum Sink {
    Local(LocalHandle),
    #[cfg(feature = "cluster")]
    Remote(super::remote::RemoteHandle),
}

/// A socket whose task runs here. Each handle counts as a sender of the
/// send queue: when the last is dropped, the task ends.
#[derive(Debug)]
struct LocalHandle {
    shared: Arc<SocketShared>,
}

#[derive(Debug)]
struct SocketShared {
    kill: Notify,
    close: Mutex<Option<(u16, String)>>,
    /// Frames for the task, bounded in count and bytes (`queue.rs`).
    queue: Mutex<SendQueue<Outgoing>>,
    /// Wakes the task when the queue stops being empty, or ends.
    wake: Notify,
}

/// Room (in entries) a socket task keeps in its batch buffer between
/// batches; a burst's larger buffer is given back once written, so an idle
/// socket holds little.
const BATCH_KEEP: usize = 4;

impl Outgoing {
    /// The bytes this entry holds in the send queue.
    pub(crate) fn weight(&self) -> usize {
        match self {
            Outgoing::Frame(f) => f.len(),
            Outgoing::Close(_, reason) => reason.len(),
            Outgoing::Live => 0,
        }
    }
}

impl SocketHandle {
    /// A socket whose connection is on another node.
    #[cfg(feature = "cluster")]
    pub(crate) fn remote(handle: super::remote::RemoteHandle) -> SocketHandle {
        SocketHandle(Sink::Remote(handle))
    }

    /// The edge link and the socket's id there, for a socket whose
    /// connection is on another node.
    #[cfg(feature = "cluster")]
    pub(crate) fn remote_parts(&self) -> Option<(&Arc<dyn super::remote::EdgeLink>, u64)> {
        match &self.0 {
            Sink::Remote(r) => Some((&r.link, r.esid)),
            Sink::Local(_) => None,
        }
    }

    /// Queues a frame or a close (behind the frames sent before it); a
    /// queue full in frames or in bytes means a slow reader, which is cut
    /// off.
    pub(crate) fn send(&self, out: Outgoing) {
        match &self.0 {
            Sink::Local(h) => h.send(out),
            #[cfg(feature = "cluster")]
            Sink::Remote(r) => r.link.send(r.esid, out),
        }
    }

    /// Closes at once, ahead of queued frames (slow readers, shutdown).
    pub(crate) fn close(&self, code: u16, reason: String) {
        match &self.0 {
            Sink::Local(h) => h.close(code, reason),
            #[cfg(feature = "cluster")]
            Sink::Remote(r) => r.link.kill(r.esid, code, reason),
        }
    }
}

impl Clone for LocalHandle {
    fn clone(&self) -> Self {
        crate::sync::lock(&self.shared.queue).add_sender();
        LocalHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for LocalHandle {
    fn drop(&mut self) {
        if crate::sync::lock(&self.shared.queue).drop_sender() {
            self.shared.wake.notify_one();
        }
    }
}

impl LocalHandle {
    fn send(&self, out: Outgoing) {
        let weight = out.weight();
        let pushed = crate::sync::lock(&self.shared.queue).push(out, weight);
        match pushed {
            Pushed::Wake => self.shared.wake.notify_one(),
            Pushed::Queued | Pushed::Closed(_) => {}
            Pushed::Full(_) => self.close(1008, SLOW_READER.into()),
        }
    }

    fn close(&self, code: u16, reason: String) {
        crate::sync::lock(&self.shared.close).get_or_insert((code, reason));
        self.shared.kill.notify_one();
    }
}

/// The table of an object's sockets, shared by its activations and its
/// socket tasks.
pub(crate) type Table = Mutex<Registry<SocketHandle>>;

/// What a socket task reports to its object.
#[derive(Debug)]
pub(crate) enum SocketEvent {
    Message(Message),
    Close(CloseEvent),
    Error(String),
}

/// Where a socket task delivers its events (the namespace, type-erased).
pub(crate) trait Deliver: Send + Sync + 'static {
    /// Queues the event for the object, waiting for mailbox room.
    fn deliver(
        &self,
        id: [u8; 32],
        sid: u64,
        event: SocketEvent,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>>;
    fn now_ms(&self) -> u64;
    /// The socket task answered the auto-response request at `ms` (in a
    /// cluster, the object's node hears of it).
    fn auto_responded(&self, _id: [u8; 32], _sid: u64, _ms: u64) {}
    /// The runtime's counters.
    fn metrics(&self) -> &crate::metrics::Metrics;
}

/// Checks an upgrade request and builds the 101 response.
pub(crate) fn handshake(req: &Request) -> Result<Response, WebSocketError> {
    let h = req.headers();
    let has = |name: http::header::HeaderName, want: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(want)))
        })
    };
    if req.method() != http::Method::GET
        || !has(http::header::UPGRADE, "websocket")
        || !has(http::header::CONNECTION, "upgrade")
        || !has(http::header::SEC_WEBSOCKET_VERSION, "13")
    {
        return Err(WebSocketError::NotAnUpgrade);
    }
    let key = h
        .get(http::header::SEC_WEBSOCKET_KEY)
        .ok_or(WebSocketError::NotAnUpgrade)?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    http::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Bytes::new())
        .map_err(|_| WebSocketError::NotAnUpgrade)
}

/// Creates the handle and starts the task that serves the socket once the
/// HTTP connection is upgraded.
pub(crate) fn spawn(
    guard: tokio_util::task::task_tracker::TaskTrackerToken,
    deliver: Arc<dyn Deliver>,
    table: Arc<Table>,
    id: [u8; 32],
    sid: u64,
    upgrade: hyper::upgrade::OnUpgrade,
    opts: &WebSocketOptions,
) -> SocketHandle {
    let shared = Arc::new(SocketShared {
        kill: Notify::new(),
        close: Mutex::new(None),
        queue: Mutex::new(SendQueue::new(opts.send_queue, opts.send_queue_bytes)),
        wake: Notify::new(),
    });
    let handle = SocketHandle(Sink::Local(LocalHandle {
        shared: shared.clone(),
    }));
    let opts = opts.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let task = Task {
            deliver,
            table,
            id,
            sid,
            shared,
        };
        task.run(upgrade, opts).await;
    });
    handle
}

struct Task {
    deliver: Arc<dyn Deliver>,
    table: Arc<Table>,
    id: [u8; 32],
    sid: u64,
    shared: Arc<SocketShared>,
}

impl Drop for Task {
    fn drop(&mut self) {
        // Nothing is written any more: drop what waits, refuse what comes.
        crate::sync::lock(&self.shared.queue).close();
    }
}

/// `tokio::time::timeout`, with the timer made only if the first poll
/// finds `f` unfinished. Most flushes go straight into the kernel's buffer,
/// and every tokio timer, armed or not, takes the timer driver's one lock
/// when it is dropped: once per flush, on every socket of a broadcast
/// (and once per automatic reply). Every write the socket task bounds by
/// `write_timeout` goes through here.
///
/// `f` comes pinned by the caller: an async fn that took it by value and
/// pinned it here would hold it twice in its state (the argument and the
/// pinned local), and this future lives inside every socket's task.
async fn within<F: Future>(
    limit: Duration,
    mut f: std::pin::Pin<&mut F>,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(out) => Ok(out),
        std::task::Poll::Pending => tokio::time::timeout(limit, f).await,
    }
}

/// How long a Close frame may take to go out before the connection is
/// simply dropped.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(5);

type Ending = (u16, String, bool, Option<String>);

impl Task {
    /// We close the socket (the object asked, the runtime is stopping, or
    /// the reader is too slow): send a Close frame if it goes out in time.
    async fn closing<S>(&self, ws: &mut WebSocketStream<S>) -> Ending
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (code, reason) = crate::sync::lock(&self.shared.close)
            .take()
            .unwrap_or((1000, String::new()));
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.clone().into(),
        };
        // A slow reader's buffers are full: a Close frame would only wait.
        let sent = code != 1008
            && tokio::time::timeout(CLOSE_SEND_TIMEOUT, ws.send(WsMessage::Close(Some(frame))))
                .await
                .is_ok_and(|r| r.is_ok());
        let error = (code == 1008).then(|| reason.clone());
        (code, reason, sent, error)
    }

    /// A write waited past its deadline: the peer is not reading, so the
    /// socket is dropped without a Close frame, as a slow reader.
    fn cut_by_deadline(&self) -> Ending {
        (
            1008,
            WRITE_DEADLINE.into(),
            false,
            Some(WRITE_DEADLINE.into()),
        )
    }

    async fn run(self, upgrade: hyper::upgrade::OnUpgrade, opts: WebSocketOptions) {
        let upgraded = tokio::select! {
            u = upgrade => u.ok(),
            () = self.shared.kill.notified() => None,
        };
        let Some(upgraded) = upgraded else {
            // Was the 101 released (the accepting event committed)? Then
            // the object counts this socket and must hear it end; if the
            // event failed, the socket never existed for it.
            let live = {
                let mut t = crate::sync::lock(&self.table);
                let live = t.is_live(self.sid);
                if live {
                    t.mark_closed(self.sid);
                } else {
                    t.remove(self.sid);
                }
                live
            };
            if live {
                let close = SocketEvent::Close(CloseEvent {
                    code: 1006,
                    reason: "the client left before the WebSocket upgrade completed".into(),
                    clean: false,
                });
                if !self.deliver.deliver(self.id, self.sid, close).await {
                    crate::sync::lock(&self.table).remove(self.sid);
                }
            }
            return;
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(opts.read_buffer)
            .write_buffer_size(0)
            // Bounded, so a peer that does not read makes our writes wait
            // (and the send queue fill) instead of buffering without end.
            // Outgoing frames are not bound by the incoming message limit,
            // so the larger of the two byte bounds sizes it.
            .max_write_buffer_size(
                opts.max_message_bytes.max(opts.send_queue_bytes) + super::coalesce::MAX_GATHERED,
            )
            .max_message_size(Some(opts.max_message_bytes))
            .max_frame_size(Some(opts.max_message_bytes));
        // Frames are gathered below tungstenite and written once per flush.
        let io = super::coalesce::Coalesce::new(TokioIo::new(upgraded));
        let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let mut last_heard = Instant::now();
        let mut ping_out: Option<Instant> = None;
        // A frame on its way into the object's mailbox. While it waits for
        // room we stop reading (backpressure on the peer) but keep writing,
        // so a busy object does not make its readers look slow.
        let deliver = self.deliver.clone();
        let mut pending: Option<std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>>> = None;
        // One timer for the socket's life. Reads do not move it: when it
        // fires it checks the real deadline and re-arms if that is later,
        // so a busy socket costs no timer work per frame.
        let timer = tokio::time::sleep_until(last_heard + opts.ping_interval);
        tokio::pin!(timer);
        // One waiter on the kill switch for the socket's life, shared by
        // both selects below: a fresh one per wake would lock the Notify
        // twice per frame, and two at once would split `notify_one`.
        let kill = self.shared.kill.notified();
        tokio::pin!(kill);
        // The send queue's wake-up, renewed each time it fires, and the
        // buffer its batches are taken into.
        let wake = self.shared.wake.notified();
        tokio::pin!(wake);
        let mut batch: VecDeque<(Outgoing, usize)> = VecDeque::new();
        let (code, reason, clean, error) = loop {
            tokio::select! {
                biased;
                () = &mut kill => {
                    break self.closing(&mut ws).await;
                }
                delivered = async { if let Some(p) = pending.as_mut() { p.await } else { true } }, if pending.is_some() => {
                    pending = None;
                    if !delivered {
                        // The object is not served here (any more): the
                        // client gets a Close frame and reconnects.
                        tracing::warn!(socket = self.sid, "a message came for an object not served here (any more); the socket closes (1012)");
                        crate::sync::lock(&self.shared.close).get_or_insert((1012, NOT_SERVED.into()));
                        break self.closing(&mut ws).await;
                    }
                }
                m = ws.next(), if pending.is_none() => {
                    last_heard = Instant::now();
                    ping_out = None;
                    match m {
                        Some(Ok(WsMessage::Text(t))) => {
                            self.deliver.metrics().messages_in.increment(1);
                            let now = self.deliver.now_ms();
                            let reply = crate::sync::lock(&self.table)
                                .auto_reply(self.sid, t.as_str(), now);
                            match reply {
                                Some(r) => {
                                    self.deliver.auto_responded(self.id, self.sid, now);
                                    match within(opts.write_timeout, std::pin::pin!(ws.send(WsMessage::text(r)))).await {
                                        Ok(Ok(())) => {}
                                        Ok(Err(_)) => break (1006, "send failed".into(), false, None),
                                        Err(_) => break self.cut_by_deadline(),
                                    }
                                }
                                None => {
                                    let ev = SocketEvent::Message(Message::Text(t.as_str().to_string()));
                                    pending = Some(deliver.deliver(self.id, self.sid, ev));
                                }
                            }
                        }
                        Some(Ok(WsMessage::Binary(b))) => {
                            self.deliver.metrics().messages_in.increment(1);
                            let ev = SocketEvent::Message(Message::Binary(b));
                            pending = Some(deliver.deliver(self.id, self.sid, ev));
                        }
                        Some(Ok(WsMessage::Close(frame))) => {
                            let (code, reason) = frame
                                .map(|f| (u16::from(f.code), f.reason.as_str().to_string()))
                                .unwrap_or((1005, String::new()));
                            // tungstenite queues the reciprocal Close; flush it.
                            let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, ws.flush()).await;
                            break (code, reason, true, None);
                        }
                        Some(Ok(_)) => {} // ping/pong: answered by tungstenite
                        Some(Err(e)) => {
                            use tokio_tungstenite::tungstenite::Error as E;
                            // Errors the peer caused get the Close code RFC
                            // 6455 names for them.
                            let answer = match &e {
                                E::Capacity(_) => Some((CloseCode::Size, "message too big")),
                                E::Utf8(_) => Some((CloseCode::Invalid, "invalid UTF-8 in a text message")),
                                // A reset without a Close frame is a vanished
                                // peer (1006), not a protocol error.
                                E::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
                                E::Protocol(_) => Some((CloseCode::Protocol, "WebSocket protocol error")),
                                _ => None,
                            };
                            if let Some((code, reason)) = answer {
                                let frame = CloseFrame { code, reason: reason.into() };
                                let send = ws.send(WsMessage::Close(Some(frame)));
                                let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, send).await;
                                break (u16::from(code), reason.into(), false, Some(e.to_string()));
                            }
                            let error = (!matches!(e, E::ConnectionClosed | E::AlreadyClosed)).then(|| e.to_string());
                            break (1006, "WebSocket disconnected without sending Close frame.".into(), false, error);
                        }
                        None => break (1006, "WebSocket disconnected without sending Close frame.".into(), false, None),
                    }
                }
                () = &mut wake => {
                    wake.set(self.shared.wake.notified());
                    let taken = crate::sync::lock(&self.shared.queue).take(&mut batch);
                    // Write the batch in one flush, up to a close the object
                    // asked for (which goes out after the frames sent before
                    // it). A peer that does not read blocks the flush; a cut
                    // (slow reader, shutdown) must still get through.
                    let mut close = None;
                    let written = {
                        let write = std::pin::pin!(async {
                            let mut ok = true;
                            while let Some((m, _)) = batch.pop_front() {
                                match m {
                                    Outgoing::Frame(f) => ok = ws.feed(f).await.is_ok(),
                                    Outgoing::Close(code, reason) => {
                                        close = Some((code, reason));
                                        break;
                                    }
                                    Outgoing::Live => {}
                                }
                                if !ok {
                                    break;
                                }
                            }
                            ok && (taken.count == 0 || ws.flush().await.is_ok())
                        });
                        tokio::select! {
                            biased;
                            () = &mut kill => None,
                            ok = within(opts.write_timeout, write) => Some(ok),
                        }
                    };
                    batch.clear();
                    batch.shrink_to(BATCH_KEEP);
                    crate::sync::lock(&self.shared.queue).written(taken.count, taken.bytes);
                    match written {
                        Some(Ok(true)) => {}
                        Some(Ok(false)) => {
                            break (1006, "WebSocket disconnected without sending Close frame.".into(), false, None);
                        }
                        Some(Err(_)) => break self.cut_by_deadline(),
                        None => break self.closing(&mut ws).await,
                    }
                    if let Some(requested) = close {
                        crate::sync::lock(&self.shared.close).get_or_insert(requested);
                        break self.closing(&mut ws).await;
                    }
                    if taken.ended {
                        // Every handle is gone: nothing more will come.
                        break (1001, "going away".into(), true, None);
                    }
                }
                // No ping verdicts while we are not reading.
                () = &mut timer, if pending.is_none() => {
                    let deadline = match ping_out {
                        Some(at) => at + opts.ping_timeout,
                        None => last_heard + opts.ping_interval,
                    };
                    if deadline > Instant::now() {
                        timer.as_mut().reset(deadline);
                        continue;
                    }
                    if ping_out.is_some() {
                        break (1006, "ping timeout: the peer stopped answering".into(), false, Some("ping timeout".into()));
                    }
                    let now = Instant::now();
                    ping_out = Some(now);
                    timer.as_mut().reset(now + opts.ping_timeout);
                    match within(opts.write_timeout, std::pin::pin!(ws.send(WsMessage::Ping(Bytes::new())))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break (1006, "WebSocket disconnected without sending Close frame.".into(), false, None),
                        Err(_) => break self.cut_by_deadline(),
                    }
                }
            }
        };
        drop(ws);
        // Refuse frames now, not when the task ends (`Drop for Task`): the
        // close events below may wait for the object's mailbox.
        crate::sync::lock(&self.shared.queue).close();
        let metrics = self.deliver.metrics();
        metrics.sockets_closed.increment(1);
        if code == 1008
            && error
                .as_deref()
                .is_some_and(|e| e == SLOW_READER || e == WRITE_DEADLINE)
        {
            metrics.sockets_cut_slow.increment(1);
            tracing::info!(object = %crate::id::log_label(&self.id), sid = self.sid, "WebSocket cut off: slow reader");
        }
        let first = crate::sync::lock(&self.table).mark_closed(self.sid);
        if !first {
            return;
        }
        if let Some(e) = error {
            self.deliver
                .deliver(self.id, self.sid, SocketEvent::Error(e))
                .await;
        }
        let delivered = self
            .deliver
            .deliver(
                self.id,
                self.sid,
                SocketEvent::Close(CloseEvent {
                    code,
                    reason,
                    clean,
                }),
            )
            .await;
        if !delivered {
            crate::sync::lock(&self.table).remove(self.sid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::within;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn within_answers_a_ready_future_at_once_and_cuts_a_stuck_one_at_the_limit() {
        let start = Instant::now();
        let ready = std::pin::pin!(async { 7 });
        assert_eq!(within(Duration::from_secs(30), ready).await, Ok(7));
        assert_eq!(Instant::now(), start, "no time passed");
        let stuck = std::pin::pin!(std::future::pending::<()>());
        let stuck = within(Duration::from_secs(30), stuck).await;
        assert!(stuck.is_err(), "a write that never finishes is cut");
        assert_eq!(Instant::now() - start, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn within_lets_a_slow_future_finish_before_the_limit() {
        let start = Instant::now();
        let slow = std::pin::pin!(tokio::time::sleep(Duration::from_secs(29)));
        assert!(within(Duration::from_secs(30), slow).await.is_ok());
        assert_eq!(Instant::now() - start, Duration::from_secs(29));
        let late = std::pin::pin!(tokio::time::sleep(Duration::from_secs(31)));
        assert!(within(Duration::from_secs(30), late).await.is_err());
    }
}
