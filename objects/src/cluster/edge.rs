//! The edge's side of the socket links (see `sockets.rs`): a client's
//! upgrade for an object owned elsewhere is sent to the owner on the link;
//! the connection stays here, served by an ordinary socket task
//! (`websocket/socket.rs`) whose events go to the owner over the link and
//! whose frames come back on it. Auto-responses are answered here, from
//! the pair the owner sent, without waking anything.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::sockets::{FrameReader, Links, from_wire};
use crate::http::Response;
use crate::remote::socket_wire::{LINK_MAGIC, ToEdge, ToOwner, WireEvent, WireFrame, WireUpgrade};
use crate::remote::wire::{self, WireHttp, WireRequest};
use crate::remote::{Answer, Kind, Refusal, shard};
use crate::websocket::socket::{self, Deliver, Outgoing, SocketEvent, SocketHandle, Table};

/// Pauses and moves from one owner waiting to be carried out.
const CONTROL_QUEUE: usize = 64;
/// Messages queued on one link to an owner and not yet written.
pub(crate) const UPLINK_QUEUE: usize = 4096;
/// Bytes queued on one link to an owner; a socket task waits for room
/// (its client's TCP backpressure), as it waits for mailbox room locally.
pub(crate) const UPLINK_BYTES: usize = 4 << 20;
/// The close reason of sockets whose owner's link was lost.
pub(super) const LINK_LOST: &str = "the object's node went away; reconnect";

/// An owner's answer to an adoption: the sockets it took, and those it
/// had reported closed.
pub(super) type Adoption = (Vec<u64>, Vec<u64>);

/// The link to one owner, behind a lock held while it is made (so one
/// connect is tried at a time, without holding up other owners).
type UplinkSlot = Arc<tokio::sync::Mutex<Option<Arc<Uplink>>>>;

/// The edge's links to owners, and the sockets connected here.
#[derive(Default)]
pub(crate) struct Uplinks {
    /// By owner node: the current link, behind a lock held while it is made.
    links: Mutex<HashMap<String, UplinkSlot>>,
    /// Per object with sockets here: their entries and the object's
    /// auto-response pair (as the owner last sent it).
    pub(super) tables: Mutex<HashMap<[u8; 32], Arc<Table>>>,
    /// Where each socket connected here sends its events, by its id here.
    pub(super) delivers: Mutex<HashMap<u64, Arc<EdgeDeliver>>>,
    /// Per object with sockets here: the gate that pauses their events
    /// while it moves (sockets that connect meanwhile wait too).
    gates: Mutex<HashMap<[u8; 32], Arc<Gate>>>,
    /// `Frames` messages received from owners (a broadcast is one).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) frames_in: AtomicU64,
}

impl Uplinks {
    /// Closes every socket connected here.
    pub(crate) fn close_all(&self, code: u16, reason: &str) {
        let tables: Vec<Arc<Table>> = crate::sync::lock(&self.tables).values().cloned().collect();
        for t in tables {
            for h in crate::sync::lock(&t).handles() {
                h.close(code, reason.to_string());
            }
        }
    }

    /// Fires once the current link to `owner` is lost and its sockets'
    /// fate is settled.
    #[cfg(test)]
    pub(super) async fn settled(&self, owner: &str) -> Option<CancellationToken> {
        let slot = crate::sync::lock(&self.links).get(owner).cloned()?;
        let link = slot.lock().await;
        link.as_ref().map(|l| l.settled.clone())
    }

    /// Ends the links to owners that are no longer live members (a killed
    /// node sends no close: its link would otherwise take QUIC's idle
    /// timeout to end, and frames sent on it meanwhile would be lost).
    /// Their sockets then wait for their objects' next owner.
    pub(crate) fn drop_departed(
        &self,
        members: &std::collections::BTreeMap<String, String>,
        me: &str,
    ) {
        let slots: Vec<(String, UplinkSlot)> = crate::sync::lock(&self.links)
            .iter()
            .filter(|(owner, _)| *owner != me && !members.contains_key(*owner))
            .map(|(o, s)| (o.clone(), s.clone()))
            .collect();
        for (owner, slot) in slots {
            // A link being made is to a member that was live a moment ago.
            if let Ok(link) = slot.try_lock()
                && let Some(link) = link.as_ref()
                && !link.dead.is_cancelled()
            {
                tracing::info!(owner, "an owner left the members: its link ends");
                link.dead.cancel();
            }
        }
    }

    /// The object's gate, if it has sockets here.
    pub(super) fn gate(&self, id: &[u8; 32]) -> Option<Arc<Gate>> {
        crate::sync::lock(&self.gates).get(id).cloned()
    }

    /// The socket is gone: out of its object's table (and the table out of
    /// the map once empty).
    fn forget(&self, id: &[u8; 32], esid: u64) {
        crate::sync::lock(&self.delivers).remove(&esid);
        let mut tables = crate::sync::lock(&self.tables);
        if let Some(t) = tables.get(id) {
            let empty = {
                let mut t = crate::sync::lock(t);
                t.remove(esid);
                t.is_empty()
            };
            if empty {
                tables.remove(id);
                crate::sync::lock(&self.gates).remove(id);
            }
        }
    }
}

/// One link to an owner.
pub(crate) struct Uplink {
    /// The owner node.
    pub(super) owner: String,
    tx: mpsc::Sender<(Vec<u8>, OwnedSemaphorePermit)>,
    bytes: Arc<Semaphore>,
    dead: CancellationToken,
    /// The sockets connected here whose objects that owner runs.
    pub(super) sockets: Mutex<HashMap<u64, SocketHandle>>,
    /// Upgrades waiting for the owner's answer, by sequence number.
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    pub(super) next_seq: AtomicU64,
    /// Sockets the owner closed or cut (`Close`, `Kill`): not handed to
    /// another owner should this link be lost.
    pub(super) ending: Mutex<std::collections::HashSet<u64>>,
    /// Adoptions asked of this owner and not yet answered, by token.
    pub(super) adopts: Mutex<HashMap<u64, oneshot::Sender<Adoption>>>,
    /// Cancelled once the link is lost and what becomes of its sockets is
    /// settled: closed, or waiting (paused) for their objects' next owner.
    pub(super) settled: CancellationToken,
}

impl Uplink {
    /// Queues `msg`, waiting for room; false if the link is gone.
    pub(super) async fn send(&self, msg: &ToOwner) -> bool {
        let Ok(frame) = wire::encode(msg) else {
            return false;
        };
        let n = u32::try_from(frame.len().min(UPLINK_BYTES)).unwrap_or(u32::MAX);
        let permit = tokio::select! {
            p = self.bytes.clone().acquire_many_owned(n) => p.ok(),
            () = self.dead.cancelled() => None,
        };
        let Some(permit) = permit else { return false };
        tokio::select! {
            r = self.tx.send((frame, permit)) => r.is_ok(),
            () = self.dead.cancelled() => false,
        }
    }

    /// Queues `msg` if there is room now.
    fn try_send(&self, msg: &ToOwner) -> bool {
        let Ok(frame) = wire::encode(msg) else {
            return false;
        };
        let n = u32::try_from(frame.len().min(UPLINK_BYTES)).unwrap_or(u32::MAX);
        match self.bytes.clone().try_acquire_many_owned(n) {
            Ok(permit) => self.tx.try_send((frame, permit)).is_ok(),
            Err(_) => false,
        }
    }
}

/// The link to `owner`, made if there is none.
pub(super) async fn uplink(links: &Arc<Links>, owner: &str) -> Result<Arc<Uplink>, Refusal> {
    let slot = crate::sync::lock(&links.uplinks.links)
        .entry(owner.to_string())
        .or_default()
        .clone();
    let mut slot = slot.lock().await;
    if let Some(u) = slot.as_ref()
        && !u.dead.is_cancelled()
    {
        return Ok(u.clone());
    }
    let unavailable = |reason: String| Refusal::Unavailable { reason };
    let addr = crate::sync::read(&links.node.view)
        .members
        .get(owner)
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .ok_or_else(|| unavailable(format!("{owner} is not a live member")))?;
    let opened = async {
        let conn = links
            .endpoint
            .connect(addr, owner)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let mut hello = LINK_MAGIC.to_vec();
        hello.extend(
            wire::encode(&ToOwner::Hello {
                node: links.node.me.clone(),
            })
            .map_err(|e| e.to_string())?,
        );
        send.write_all(&hello).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((conn, send, recv))
    };
    let (conn, send, recv) = opened
        .await
        .map_err(|e| unavailable(format!("cannot reach {owner} at {addr}: {e}")))?;
    let (tx, rx) = mpsc::channel(UPLINK_QUEUE);
    let link = Arc::new(Uplink {
        owner: owner.to_string(),
        tx,
        bytes: Arc::new(Semaphore::new(UPLINK_BYTES)),
        dead: CancellationToken::new(),
        sockets: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        next_seq: AtomicU64::new(1),
        ending: Mutex::new(std::collections::HashSet::new()),
        adopts: Mutex::new(HashMap::new()),
        settled: CancellationToken::new(),
    });
    tokio::spawn(write_to_owner(link.clone(), send, rx));
    tokio::spawn(read_from_owner(links.clone(), link.clone(), recv, conn));
    *slot = Some(link.clone());
    Ok(link)
}

/// Writes queued messages, gathering what is queued into one write.
async fn write_to_owner(
    link: Arc<Uplink>,
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<(Vec<u8>, OwnedSemaphorePermit)>,
) {
    let mut out = Vec::new();
    let mut permits = Vec::new();
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            () = link.dead.cancelled() => None,
        };
        let Some(first) = first else { break };
        out.clear();
        let mut next = Some(first);
        while let Some((frame, permit)) = next.take() {
            out.extend_from_slice(&frame);
            permits.push(permit);
            if out.len() < 64 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if send.write_all(&out).await.is_err() {
            break;
        }
        permits.clear();
        out.shrink_to(64 * 1024);
    }
    link.dead.cancel();
}

/// Hands the owner's messages to the sockets here. When the link ends,
/// its live sockets wait for their objects' next owner (`rehome.rs`);
/// the rest are closed with a Close frame (1012: reconnect).
async fn read_from_owner(
    links: Arc<Links>,
    link: Arc<Uplink>,
    recv: quinn::RecvStream,
    conn: quinn::Connection,
) {
    let mut reader = FrameReader::new(recv);
    // Pauses and moves, in the order the owner sent them, each waited out
    // before the next (this loop goes on handing frames over meanwhile).
    let (control, moves) = mpsc::channel(CONTROL_QUEUE);
    super::follow::spawn_control(links.clone(), link.clone(), moves);
    loop {
        let msg = tokio::select! {
            m = reader.next::<ToEdge>() => m,
            () = link.dead.cancelled() => None,
        };
        let Some(msg) = msg else { break };
        match msg {
            m @ (ToEdge::Pause { .. } | ToEdge::Moved { .. }) => {
                if control.send(m).await.is_err() {
                    break;
                }
            }
            ToEdge::Reply { reply } => {
                let seq = reply.seq;
                let answer = reply.into_result().unwrap_or_else(|e| {
                    Err(Refusal::Failed {
                        message: e.to_string(),
                    })
                });
                if let Some(tx) = crate::sync::lock(&link.pending).remove(&seq) {
                    let _ = tx.send(answer);
                }
            }
            ToEdge::Frames { esids, frame } => {
                let Some(frame) = from_wire(frame) else { break };
                links.uplinks.frames_in.fetch_add(1, Ordering::Relaxed);
                let sockets = crate::sync::lock(&link.sockets);
                for esid in esids {
                    if let Some(h) = sockets.get(&esid) {
                        h.send(Outgoing::Frame(frame.clone()));
                    }
                }
            }
            ToEdge::Close { esid, code, reason } => {
                if let Some(h) = crate::sync::lock(&link.sockets).get(&esid) {
                    crate::sync::lock(&link.ending).insert(esid);
                    h.send(Outgoing::Close(code, reason));
                }
            }
            ToEdge::Kill { esid, code, reason } => {
                if let Some(h) = crate::sync::lock(&link.sockets).get(&esid) {
                    crate::sync::lock(&link.ending).insert(esid);
                    h.close(code, reason);
                }
            }
            ToEdge::Keep {
                esid,
                tags,
                attachment,
            } => super::rehome::keep(&links, &link, esid, tags, attachment),
            ToEdge::Adopted {
                token,
                adopted,
                closed,
            } => {
                if let Some(tx) = crate::sync::lock(&link.adopts).remove(&token) {
                    let _ = tx.send((adopted, closed));
                }
            }
            ToEdge::AutoResponse { id, pair } => {
                let Ok(id) = crate::id::parse_hex(&id) else {
                    continue;
                };
                let table = crate::sync::lock(&links.uplinks.tables).get(&id).cloned();
                if let Some(t) = table {
                    let _ = crate::sync::lock(&t).set_auto_response(pair);
                }
            }
        }
    }
    link.dead.cancel();
    let closed = super::rehome::lost(&links, &link).await;
    // Paused sockets that closed go on (to find the link gone and end).
    super::follow::resume(&links, &closed).await;
    link.settled.cancel();
    crate::sync::lock(&link.adopts).clear();
    for (_, tx) in crate::sync::lock(&link.pending).drain() {
        let _ = tx.send(Err(Refusal::Unavailable {
            reason: "the link to the owner was lost".into(),
        }));
    }
    conn.close(0u32.into(), b"link closed");
}

/// Pauses the events of an object's sockets connected here.
#[derive(Default)]
pub(super) struct Gate {
    /// Held for reading while an event goes on a link; held for writing
    /// while the object's sockets are paused.
    lock: Arc<tokio::sync::RwLock<()>>,
    paused: tokio::sync::Mutex<Option<tokio::sync::OwnedRwLockWriteGuard<()>>>,
}

impl Gate {
    /// Stops the events (once those being sent are on their link).
    pub(super) async fn pause(&self) {
        let mut paused = self.paused.lock().await;
        if paused.is_none() {
            *paused = Some(self.lock.clone().write_owned().await);
        }
    }

    /// Lets the events go again.
    pub(super) async fn resume(&self) {
        self.paused.lock().await.take();
    }
}

/// Where a socket connected here delivers its events: the link to its
/// object's owner (another one if the upgrade was answered "moved" and
/// followed, or the object moved). Paused while its object moves.
pub(super) struct EdgeDeliver {
    pub(super) id: [u8; 32],
    /// The object's namespace.
    pub(super) ns: Arc<str>,
    link: Mutex<Arc<Uplink>>,
    gate: Arc<Gate>,
    /// Weak: the links hold this (in `Uplinks::delivers`).
    links: std::sync::Weak<Links>,
    shared: Arc<crate::shared::Shared>,
    /// The socket counters of the object's namespace, as on its owner.
    metrics: crate::metrics::Metrics,
}

impl EdgeDeliver {
    pub(super) fn new(
        id: [u8; 32],
        ns: Arc<str>,
        link: Arc<Uplink>,
        links: &Arc<Links>,
        shared: Arc<crate::shared::Shared>,
        metrics: crate::metrics::Metrics,
    ) -> Arc<EdgeDeliver> {
        let gate = crate::sync::lock(&links.uplinks.gates)
            .entry(id)
            .or_default()
            .clone();
        Arc::new(EdgeDeliver {
            id,
            ns,
            link: Mutex::new(link),
            gate,
            links: Arc::downgrade(links),
            shared,
            metrics,
        })
    }

    pub(super) fn link(&self) -> Arc<Uplink> {
        crate::sync::lock(&self.link).clone()
    }

    pub(super) fn set_link(&self, link: Arc<Uplink>) {
        *crate::sync::lock(&self.link) = link;
    }
}

impl Deliver for EdgeDeliver {
    fn deliver(
        &self,
        id: [u8; 32],
        esid: u64,
        event: SocketEvent,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let (event, close) = match event {
                SocketEvent::Message(crate::websocket::Message::Text(t)) => {
                    (WireEvent::Message(WireFrame::Text(t)), false)
                }
                SocketEvent::Message(crate::websocket::Message::Binary(b)) => (
                    WireEvent::Message(WireFrame::Binary(data_encoding::BASE64.encode(&b))),
                    false,
                ),
                SocketEvent::Close(c) => (
                    WireEvent::Close {
                        code: c.code,
                        reason: c.reason,
                        clean: c.clean,
                    },
                    true,
                ),
                SocketEvent::Error(e) => (WireEvent::Error(e), false),
            };
            let msg = ToOwner::Event { esid, event };
            // A link found lost: once its fate is settled, the event goes
            // to the object's next owner if the socket was handed to it.
            let mut lost: Option<Arc<Uplink>> = None;
            let sent = loop {
                let open = self.gate.lock.read().await;
                let link = self.link();
                if lost.as_ref().is_some_and(|l| Arc::ptr_eq(l, &link)) {
                    tracing::warn!(owner = %link.owner, esid, "the link to a socket's owner was lost and no next owner took it");
                    break false;
                }
                let sent = link.send(&msg).await;
                drop(open);
                if sent || !link.dead.is_cancelled() {
                    break sent;
                }
                link.settled.cancelled().await;
                lost = Some(link);
            };
            if close {
                crate::sync::lock(&self.link().sockets).remove(&esid);
                if let Some(links) = self.links.upgrade() {
                    links.uplinks.forget(&id, esid);
                }
                return true;
            }
            sent
        })
    }

    fn now_ms(&self) -> u64 {
        use crate::clock::ClockMs;
        self.shared.clock.now_ms()
    }

    fn auto_responded(&self, _id: [u8; 32], esid: u64, ms: u64) {
        // A timestamp: if the link is full, the next one will do.
        self.link().try_send(&ToOwner::Stamp { esid, ms });
    }

    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }
}

/// Sends an upgrade request on `link` and waits for `owner`'s answer.
async fn ask_owner(link: &Uplink, owner: &str, req: WireRequest) -> Answer {
    let (tx, rx) = oneshot::channel();
    crate::sync::lock(&link.pending).insert(req.seq, tx);
    if link.send(&ToOwner::Upgrade { req }).await {
        rx.await.unwrap_or_else(|_| {
            Err(Refusal::Unavailable {
                reason: "the link to the owner was lost".into(),
            })
        })
    } else {
        Err(Refusal::Unavailable {
            reason: format!("the link to {owner} was lost"),
        })
    }
}

/// Sends an upgrade for `id` to `owner`; the connection stays here.
pub(crate) fn upgrade(
    links: &Arc<Links>,
    ns: Arc<str>,
    id: [u8; 32],
    owner: String,
    epoch: u64,
    chain: Vec<[u8; 32]>,
    mut req: crate::http::Request,
) -> Result<oneshot::Receiver<Result<Response, Refusal>>, Refusal> {
    let shared = match links.shared.upgrade() {
        Some(s) if !s.is_shutting_down() => s,
        _ => return Err(Refusal::ShuttingDown),
    };
    let on_upgrade = req
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| Refusal::Failed {
            message: "the request carries no upgrade handle".into(),
        })?;
    let http = WireHttp::from_request(&req);
    let (tx, rx) = oneshot::channel();
    let links = links.clone();
    tokio::spawn(async move {
        let target = Target {
            ns,
            id,
            epoch,
            chain,
        };
        let r = run_upgrade(&links, shared, &owner, target, http, on_upgrade).await;
        let _ = tx.send(r);
    });
    Ok(rx)
}

struct Target {
    ns: Arc<str>,
    id: [u8; 32],
    epoch: u64,
    chain: Vec<[u8; 32]>,
}

async fn run_upgrade(
    links: &Arc<Links>,
    shared: Arc<crate::shared::Shared>,
    owner: &str,
    target: Target,
    http: WireHttp,
    on_upgrade: hyper::upgrade::OnUpgrade,
) -> Result<Response, Refusal> {
    let link = uplink(links, owner).await?;
    let id = target.id;
    let esid = shared.next_sid.fetch_add(1, Ordering::Relaxed);
    let deliver = EdgeDeliver::new(
        id,
        target.ns.clone(),
        link.clone(),
        links,
        shared.clone(),
        crate::metrics::Metrics::register(&target.ns),
    );
    let (table, handle) = {
        let mut tables = crate::sync::lock(&links.uplinks.tables);
        let table = tables.entry(id).or_default().clone();
        let handle = socket::spawn(
            shared.socket_tasks.token(),
            deliver.clone(),
            table.clone(),
            id,
            esid,
            on_upgrade,
            &shared.options.websocket,
        );
        if let Err(e) = crate::sync::lock(&table).accept(esid, handle.clone(), Vec::new()) {
            handle.close(1013, e.to_string());
            return Err(Refusal::Failed {
                message: e.to_string(),
            });
        }
        (table, handle)
    };
    crate::sync::lock(&links.uplinks.delivers).insert(esid, deliver.clone());
    crate::sync::lock(&link.sockets).insert(esid, handle.clone());
    let body = serde_json::value::to_raw_value(&WireUpgrade {
        edge: links.node.me.clone(),
        esid,
        http,
    });
    let (mut link, mut owner, mut epoch) = (link, owner.to_string(), target.epoch);
    let mut moves = 0;
    let answer = loop {
        let answer = match &body {
            Ok(body) => {
                let req = WireRequest {
                    seq: link.next_seq.fetch_add(1, Ordering::Relaxed),
                    ns: target.ns.to_string(),
                    id: crate::id::hex(&id),
                    shard: shard::shard_of(&id, links.node.shards),
                    epoch,
                    kind: Kind::Upgrade,
                    chain: target.chain.iter().map(crate::id::hex).collect(),
                    body: body.clone(),
                };
                ask_owner(&link, &owner, req).await
            }
            Err(e) => Err(Refusal::Failed {
                message: e.to_string(),
            }),
        };
        // Moved: remembered, and the socket (not live yet: the client has
        // no 101) goes to the owner named, a bounded number of times.
        if let (Err(Refusal::Moved { owner, epoch }), Some(route)) = (&answer, shared.route.get()) {
            route.learned(&id, owner, *epoch);
        }
        match answer {
            Err(Refusal::Moved {
                owner: next,
                epoch: at,
            }) if moves < crate::forward::MAX_MOVES && next != links.node.me => {
                moves += 1;
                let next_link = match uplink(links, &next).await {
                    Ok(l) => l,
                    Err(r) => break Err(r),
                };
                crate::sync::lock(&link.sockets).remove(&esid);
                crate::sync::lock(&next_link.sockets).insert(esid, handle.clone());
                deliver.set_link(next_link.clone());
                (link, owner, epoch) = (next_link, next, at);
            }
            other => break other,
        }
    };
    let response = answer.and_then(|raw| {
        serde_json::from_str::<WireHttp>(raw.get())
            .map_err(|e| e.to_string())
            .and_then(WireHttp::into_response)
            .map_err(|e| Refusal::Failed {
                message: format!("the owner's response does not decode: {e}"),
            })
    });
    match &response {
        Ok(r) if r.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
            crate::sync::lock(&table).mark_live(esid);
        }
        _ => {
            // No socket after all: the owner forgets its entry, and the
            // task here ends without a word to the object.
            link.send(&ToOwner::Gone { esid }).await;
            crate::sync::lock(&link.sockets).remove(&esid);
            links.uplinks.forget(&id, esid);
            handle.close(1011, "the upgrade was not accepted".into());
        }
    }
    response
}
