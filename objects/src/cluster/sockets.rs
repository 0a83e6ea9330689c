//! WebSockets across nodes: the socket links. A client's connection stays
//! on the node it reached (the *edge*, `edge.rs`); its object runs on the
//! owner of its shard. The edge opens one QUIC stream to each owner it
//! has sockets on (the link, apart from the request stream, so a busy
//! socket never holds up calls) and sends the upgrade, then its clients'
//! frames, on it; the owner answers with the 101 and the object's frames.
//!
//! This file is the owner's side: the link from each edge, the remote
//! sockets registered on it, and its bounded send queue
//! (`socket_wire::EdgeQueue`), which sends a broadcast once per edge.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use super::ClusterError;
use super::edge::Uplinks;
use super::node::Node;
use super::transport::{Handled, LinkServer};
use crate::remote::socket_wire::{EdgeQueue, Queued, ToEdge, ToOwner, WireEvent, WireFrame};
use crate::remote::wire::{self, WireReply, WireRequest};
use crate::remote::{Answer, Kind};
use crate::runtime::Runtime;
use crate::websocket::CloseEvent;
use crate::websocket::remote::{EdgeLink, RemoteSocket, SocketLinks};
use crate::websocket::socket::{NOT_SERVED, Outgoing, SocketEvent};

/// Socket entries (one per socket a frame goes to) queued for one edge
/// before further frames cut their sockets as slow readers.
pub(crate) const EDGE_QUEUE_ENTRIES: usize = 65_536;
/// Frame bytes queued for one edge (a broadcast's frame counts once).
pub(crate) const EDGE_QUEUE_BYTES: usize = 4 << 20;
/// How long a link that ends waits for the edge to read what was sent.
const LINK_LINGER: std::time::Duration = std::time::Duration::from_secs(5);
/// The close reason of a socket whose edge link could not keep up.
const SLOW_LINK: &str = "slow reader: the link to the client's node is full";

pub(crate) type Handler = Arc<dyn Fn(WireRequest) -> Handled + Send + Sync>;

/// Both sides of this node's socket links.
pub(crate) struct Links {
    pub(crate) node: Arc<Node>,
    /// Weak: the runtime holds these links, so a strong handle would keep
    /// the runtime (and its store) alive after its last user let go.
    pub(crate) shared: std::sync::Weak<crate::shared::Shared>,
    pub(crate) endpoint: quinn::Endpoint,
    handler: Handler,
    /// Owner side: the link from each edge.
    pub(super) from_edges: Mutex<HashMap<String, Arc<FromEdge>>>,
    /// Owner side: sockets that moved here with their objects, until
    /// their edge claims them, by edge and socket id there.
    pub(super) parked: Mutex<HashMap<(String, u64), super::follow::Parked>>,
    /// Tokens of the pauses this node asks edges for.
    pub(super) next_pause: std::sync::atomic::AtomicU64,
    /// Owner side: sockets reported closed when their edge's link ended
    /// (not adopted again, `rehome.rs`).
    pub(super) gone: super::rehome::Gone,
    /// Edge side: links to owners, sockets connected here.
    pub(crate) uplinks: Uplinks,
}

/// Sets up the socket links of `runtime` and returns the server of
/// incoming links.
pub(crate) fn attach(
    node: &Arc<Node>,
    runtime: &Runtime,
    endpoint: quinn::Endpoint,
    handler: Handler,
) -> Result<LinkServer, ClusterError> {
    let shared = runtime.shared().clone();
    let links = Arc::new(Links {
        node: node.clone(),
        shared: Arc::downgrade(&shared),
        endpoint,
        handler,
        from_edges: Mutex::new(HashMap::new()),
        parked: Mutex::new(HashMap::new()),
        next_pause: std::sync::atomic::AtomicU64::new(1),
        gone: super::rehome::Gone::default(),
        uplinks: Uplinks::default(),
    });
    node.handoff.attach_links(&links);
    shared
        .socket_links
        .set(Arc::new(LinksHandle(links.clone())))
        .map_err(|_| ClusterError::Config("this runtime already has socket links".into()))?;
    // Sockets connected here close with the runtime, and links from
    // edges end (their sockets' entries hold the runtime's namespaces).
    let watch = Arc::downgrade(&links);
    let stopping = shared.shutdown.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        if let Some(links) = watch.upgrade() {
            links.uplinks.close_all(1001, "server shutting down");
            let edges: Vec<Arc<FromEdge>> = crate::sync::lock(&links.from_edges)
                .drain()
                .map(|(_, f)| f)
                .collect();
            for from in edges {
                let esids: Vec<u64> = crate::sync::lock(&from.state)
                    .sockets
                    .keys()
                    .copied()
                    .collect();
                for esid in esids {
                    from.kill(esid, 1001, "server shutting down".into());
                }
                // The writer sends what is queued, then ends the link.
                from.closing.cancel();
            }
        }
    });
    Ok(Arc::new(move |send, recv| {
        tokio::spawn(serve_link(links.clone(), send, recv));
    }))
}

/// What the runtime holds: the links behind the trait it knows.
pub(crate) struct LinksHandle(pub(crate) Arc<Links>);

impl SocketLinks for LinksHandle {
    fn edge(&self, edge: &str) -> Option<Arc<dyn EdgeLink>> {
        let from = crate::sync::lock(&self.0.from_edges).get(edge).cloned()?;
        (!from.dead.is_cancelled()).then_some(from as Arc<dyn EdgeLink>)
    }

    fn upgrade(
        &self,
        ns: Arc<str>,
        id: [u8; 32],
        owner: String,
        epoch: u64,
        chain: Vec<[u8; 32]>,
        req: crate::http::Request,
    ) -> Result<
        tokio::sync::oneshot::Receiver<Result<crate::http::Response, crate::remote::Refusal>>,
        crate::remote::Refusal,
    > {
        super::edge::upgrade(&self.0, ns, id, owner, epoch, chain, req)
    }

    fn forwarded(&self, sid: u64) -> Option<Arc<dyn crate::websocket::socket::Deliver>> {
        let d = crate::sync::lock(&self.0.uplinks.delivers)
            .get(&sid)
            .cloned()?;
        Some(d as Arc<dyn crate::websocket::socket::Deliver>)
    }

    #[cfg(test)]
    fn frames_in(&self) -> u64 {
        self.0
            .uplinks
            .frames_in
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Reads framed messages from a QUIC stream.
pub(crate) struct FrameReader {
    recv: quinn::RecvStream,
    buf: Vec<u8>,
    chunk: Vec<u8>,
}

impl FrameReader {
    pub(crate) fn new(recv: quinn::RecvStream) -> Self {
        FrameReader {
            recv,
            buf: Vec::new(),
            chunk: vec![0u8; 16 * 1024],
        }
    }

    /// The next message; `None` when the stream ended or broke, or a frame
    /// was malformed (the link is dropped either way).
    pub(crate) async fn next<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        loop {
            match wire::decode::<T>(&self.buf) {
                Ok(Some((msg, used))) => {
                    self.buf.drain(..used);
                    return Some(msg);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "bad frame on a socket link; dropping it");
                    return None;
                }
            }
            match self.recv.read(&mut self.chunk).await {
                Ok(Some(n)) => self.buf.extend_from_slice(&self.chunk[..n]),
                _ => return None,
            }
        }
    }
}

/// A frame as it crosses.
pub(crate) fn to_wire(frame: &WsMessage) -> Option<WireFrame> {
    match frame {
        WsMessage::Text(t) => Some(WireFrame::Text(t.as_str().to_string())),
        WsMessage::Binary(b) => Some(WireFrame::Binary(data_encoding::BASE64.encode(b))),
        _ => None,
    }
}

/// A frame as it arrived; `None` for bad base64.
pub(crate) fn from_wire(frame: WireFrame) -> Option<WsMessage> {
    match frame {
        WireFrame::Text(t) => Some(WsMessage::text(t)),
        WireFrame::Binary(b) => data_encoding::BASE64
            .decode(b.as_bytes())
            .ok()
            .map(|b| WsMessage::Binary(Bytes::from(b))),
    }
}

/// The owner's side of the link from one edge.
pub(crate) struct FromEdge {
    edge: String,
    state: Mutex<OwnerState>,
    /// Pauses asked of the edge and not yet answered, by token.
    pauses: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<()>>>,
    wake: Notify,
    /// The runtime stops: write what is queued, then end the link.
    closing: CancellationToken,
    dead: CancellationToken,
}

struct OwnerState {
    queue: EdgeQueue<WsMessage>,
    /// Sockets to close at once, sent ahead of the queue.
    kills: BTreeMap<u64, (u16, String)>,
    sockets: HashMap<u64, RemoteSocket>,
}

impl FromEdge {
    fn socket(&self, esid: u64) -> Option<RemoteSocket> {
        crate::sync::lock(&self.state).sockets.get(&esid).cloned()
    }

    /// Ends the link, as a network cut would.
    #[cfg(test)]
    pub(super) fn cut(&self) {
        self.dead.cancel();
    }

    pub(super) fn has_socket(&self, esid: u64) -> bool {
        crate::sync::lock(&self.state).sockets.contains_key(&esid)
    }

    fn forget(&self, esid: u64) -> Option<RemoteSocket> {
        crate::sync::lock(&self.state).sockets.remove(&esid)
    }

    /// Forgets the sockets of the objects `pick` selects (they moved).
    pub(super) fn forget_where(&self, pick: &dyn Fn(&[u8; 32]) -> bool) {
        crate::sync::lock(&self.state)
            .sockets
            .retain(|_, s| !pick(&s.id));
    }

    /// Queues a message for the edge behind what is queued.
    pub(super) fn tell(&self, msg: ToEdge) {
        crate::sync::lock(&self.state).queue.push(msg);
        self.wake.notify_one();
    }

    /// Asks the edge to pause the sockets of `ids`; the receiver fires
    /// when it answers.
    pub(super) fn pause(&self, token: u64, ids: Vec<String>) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        crate::sync::lock(&self.pauses).insert(token, tx);
        self.tell(ToEdge::Pause { token, ids });
        rx
    }

    pub(super) fn is_dead(&self) -> bool {
        self.dead.is_cancelled()
    }

    fn reply(&self, seq: u64, answer: Answer) {
        crate::sync::lock(&self.state).queue.push(ToEdge::Reply {
            reply: WireReply::new(seq, answer),
        });
        self.wake.notify_one();
    }
}

impl EdgeLink for FromEdge {
    fn edge(&self) -> &str {
        &self.edge
    }

    fn register(&self, esid: u64, socket: RemoteSocket) {
        crate::sync::lock(&self.state).sockets.insert(esid, socket);
    }

    fn send(&self, esid: u64, out: Outgoing) {
        if self.dead.is_cancelled() {
            return;
        }
        let mut st = crate::sync::lock(&self.state);
        let queued = match out {
            Outgoing::Frame(f) => {
                let len = f.len();
                st.queue.push_frame(esid, f, len)
            }
            Outgoing::Close(code, reason) => st.queue.push(ToEdge::Close { esid, code, reason }),
            Outgoing::Live => true,
        };
        if !queued {
            st.kills
                .entry(esid)
                .or_insert_with(|| (1008, SLOW_LINK.into()));
            drop(st);
            self.wake.notify_one();
        }
    }

    fn flush(&self) {
        self.wake.notify_one();
    }

    fn kill(&self, esid: u64, code: u16, reason: String) {
        crate::sync::lock(&self.state)
            .kills
            .entry(esid)
            .or_insert((code, reason));
        self.wake.notify_one();
    }

    fn auto_response(&self, id: &[u8; 32], pair: Option<(String, String)>) {
        crate::sync::lock(&self.state)
            .queue
            .push(ToEdge::AutoResponse {
                id: crate::id::hex(id),
                pair,
            });
        self.wake.notify_one();
    }

    fn keep(&self, esid: u64, tags: Vec<String>, attachment: Option<bytes::Bytes>) {
        if self.dead.is_cancelled() {
            return;
        }
        let attachment = attachment.map(|a| data_encoding::BASE64.encode(&a));
        let mut st = crate::sync::lock(&self.state);
        if !st.queue.push(ToEdge::Keep {
            esid,
            tags,
            attachment,
        }) {
            // As a frame that does not fit: the edge would hold a stale
            // state, so the socket is cut as a slow reader.
            st.kills
                .entry(esid)
                .or_insert_with(|| (1008, SLOW_LINK.into()));
        }
    }
}

/// Writes what is queued for the edge until the link dies.
async fn write_to_edge(from: Arc<FromEdge>, mut send: quinn::SendStream) {
    let mut out = Vec::new();
    let mut last = false;
    while !last {
        tokio::select! {
            () = from.wake.notified() => {}
            () = from.closing.cancelled() => last = true,
            () = from.dead.cancelled() => break,
        }
        let (kills, items) = {
            let mut st = crate::sync::lock(&from.state);
            (std::mem::take(&mut st.kills), st.queue.take())
        };
        out.clear();
        let mut too_large = Vec::new();
        for (esid, (code, reason)) in kills {
            push_frame(
                &mut out,
                &ToEdge::Kill { esid, code, reason },
                &mut too_large,
            );
        }
        for item in items {
            let msg = match item {
                Queued::Frames { esids, frame } => match to_wire(&frame) {
                    Some(frame) => ToEdge::Frames { esids, frame },
                    None => continue,
                },
                Queued::Other(m) => m,
            };
            push_frame(&mut out, &msg, &mut too_large);
        }
        if !too_large.is_empty() {
            for esid in too_large {
                from.kill(esid, 1009, "message too big to cross nodes".into());
            }
        }
        let written = tokio::select! {
            r = send.write_all(&out) => r.is_ok(),
            () = from.dead.cancelled() => false,
        };
        if !written {
            break;
        }
        // A broadcast to a crowd leaves a large buffer; keep a modest one.
        out.shrink_to(64 * 1024);
    }
    // The edge reads to the end, then closes what is left (1012). The
    // stream keeps its connection open until the edge has it all: a
    // connection closed first would drop the last Close requests.
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(LINK_LINGER, send.stopped()).await;
    }
    from.dead.cancel();
}

fn push_frame(out: &mut Vec<u8>, msg: &ToEdge, too_large: &mut Vec<u64>) {
    match wire::encode(msg) {
        Ok(f) => out.extend_from_slice(&f),
        Err(_) => {
            if let ToEdge::Frames { esids, .. } = msg {
                too_large.extend_from_slice(esids);
            }
        }
    }
}

/// Serves the link an edge opened: its upgrades and its sockets' events.
async fn serve_link(links: Arc<Links>, send: quinn::SendStream, recv: quinn::RecvStream) {
    let mut reader = FrameReader::new(recv);
    let Some(ToOwner::Hello { node: edge }) = reader.next::<ToOwner>().await else {
        return;
    };
    let from = Arc::new(FromEdge {
        edge: edge.clone(),
        state: Mutex::new(OwnerState {
            queue: EdgeQueue::new(EDGE_QUEUE_ENTRIES, EDGE_QUEUE_BYTES),
            kills: BTreeMap::new(),
            sockets: HashMap::new(),
        }),
        pauses: Mutex::new(HashMap::new()),
        wake: Notify::new(),
        closing: CancellationToken::new(),
        dead: CancellationToken::new(),
    });
    // An edge that opens a new link has given up the old one.
    let old = crate::sync::lock(&links.from_edges).insert(edge.clone(), from.clone());
    if let Some(old) = old {
        old.dead.cancel();
        // Its sockets are reported closed (below, as that link's reader
        // ends): the edge may not have them adopted on this one.
        let esids: Vec<u64> = crate::sync::lock(&old.state)
            .sockets
            .keys()
            .copied()
            .collect();
        links.gone.add(&edge, esids);
    }
    tokio::spawn(write_to_edge(from.clone(), send));
    loop {
        let msg = tokio::select! {
            m = reader.next::<ToOwner>() => m,
            () = from.dead.cancelled() => None,
        };
        let Some(msg) = msg else { break };
        match msg {
            ToOwner::Hello { .. } => break,
            ToOwner::Upgrade { req } => {
                let seq = req.seq;
                if req.kind != Kind::Upgrade {
                    from.reply(
                        seq,
                        Err(crate::remote::Refusal::Failed {
                            message: "only upgrades travel on a socket link".into(),
                        }),
                    );
                    continue;
                }
                match (links.handler)(req) {
                    Handled::Now(a) => from.reply(seq, a),
                    Handled::Later(fut) => {
                        let from = from.clone();
                        tokio::spawn(async move { from.reply(seq, fut.await) });
                    }
                }
            }
            ToOwner::Event { esid, event } => {
                let Some(socket) = from.socket(esid) else {
                    continue;
                };
                match event {
                    WireEvent::Message(frame) => {
                        let msg = match from_wire(frame) {
                            Some(WsMessage::Text(t)) => {
                                crate::websocket::Message::Text(t.as_str().to_string())
                            }
                            Some(WsMessage::Binary(b)) => crate::websocket::Message::Binary(b),
                            _ => break,
                        };
                        // Waits for mailbox room: a full mailbox holds up
                        // this edge's link (as TCP backpressure would).
                        if !socket.event(SocketEvent::Message(msg)).await {
                            tracing::warn!(
                                edge = from.edge(),
                                esid,
                                "a socket's message came for an object not served here; it closes (1012)"
                            );
                            from.kill(esid, 1012, NOT_SERVED.into());
                        }
                    }
                    WireEvent::Error(e) => {
                        socket.event(SocketEvent::Error(e)).await;
                    }
                    WireEvent::Close {
                        code,
                        reason,
                        clean,
                    } => {
                        from.forget(esid);
                        socket
                            .ended(CloseEvent {
                                code,
                                reason,
                                clean,
                            })
                            .await;
                    }
                }
            }
            ToOwner::Stamp { esid, ms } => {
                if let Some(s) = from.socket(esid) {
                    s.stamp(ms);
                }
            }
            ToOwner::Gone { esid } => {
                if let Some(s) = from.forget(esid) {
                    s.abandoned();
                }
            }
            ToOwner::Paused { token } => {
                if let Some(tx) = crate::sync::lock(&from.pauses).remove(&token) {
                    let _ = tx.send(());
                }
            }
            ToOwner::Claim { esids } => super::follow::claim(&links, &from, &esids),
            ToOwner::Adopt { token, objects } => {
                super::rehome::adopt(&links, &from, token, objects);
            }
        }
    }
    from.dead.cancel();
    {
        let mut edges = crate::sync::lock(&links.from_edges);
        if edges.get(&edge).is_some_and(|f| Arc::ptr_eq(f, &from)) {
            edges.remove(&edge);
        }
    }
    // The client's node is gone (or gave up this link): its sockets end
    // for their objects as a vanished peer's do.
    let sockets: Vec<RemoteSocket> = {
        let mut st = crate::sync::lock(&from.state);
        links.gone.add(&edge, st.sockets.keys().copied());
        st.sockets.drain().map(|(_, s)| s).collect()
    };
    for s in sockets {
        s.abandoned();
        s.ended(CloseEvent {
            code: 1006,
            reason: "the link to the client's node was lost".into(),
            clean: false,
        })
        .await;
    }
}
