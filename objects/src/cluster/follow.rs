//! Sockets follow their object when its shard moves (`handoff.rs`): the
//! client's connection stays where it is, open, and its frames go to the
//! new owner from then on. Nothing a client sent is dropped and nothing
//! the object sent is reordered.
//!
//! 1. *Pause.* Before the shard is marked moving, the old owner asks each
//!    edge (a node with clients of the shard's objects) to pause those
//!    sockets. The edge lets the event being sent finish, stops the rest,
//!    and answers on the same link: every event sent before the answer is
//!    in the objects' mailboxes, and runs before they leave memory.
//!    Sockets connected to the old owner itself need no pause: their
//!    events during the move are held like calls.
//! 2. *Ship.* After the data, the old owner sends each object's sockets
//!    (edge, socket id there, tags, attachment, auto-response state, and
//!    the object's auto-response pair). At the commit the new owner puts
//!    them in the objects' tables, *parked*: frames the object sends them
//!    are kept (bounded) until their edge claims them.
//! 3. *Hand over.* Once the new owner confirmed the commit, the old owner
//!    becomes the edge of its own clients' sockets (their events go to
//!    the new owner over a link, like any edge's), and tells every paused
//!    edge where the objects went. Each edge moves the sockets to its
//!    link to the new owner, claims them there (the parked frames go out,
//!    then the new ones) and lets their events go again, behind the claim.
//!
//! If the move is called off, edges are told to go on as before. If the
//! new owner did not confirm (or etcd's answer is unknown), the sockets
//! are closed (1012, reconnect), as they were before sockets could move.
//! An edge that does not answer the pause in time has its sockets of the
//! shard closed the same way; one that never claims its parked sockets
//! has them reported closed (1006) to the object after [`CLAIM_WITHIN`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use super::edge::{EdgeDeliver, Uplink, uplink};
use super::sockets::{FromEdge, Links};
use crate::registry::{NamespaceDyn, Registry};
use crate::remote::handoff_wire::{WireHandOff, WireSocket, WireSockets};
use crate::remote::socket_wire::{ToEdge, ToOwner};
use crate::websocket::CloseEvent;
use crate::websocket::moved::{Kept, MovedSockets};
use crate::websocket::registry::Moved;
use crate::websocket::remote::{EdgeLink, RemoteHandle, RemoteSocket};
use crate::websocket::socket::{Outgoing, SocketHandle};

/// How long edges get to answer a pause.
const PAUSE_WITHIN: Duration = Duration::from_secs(10);
/// How long a parked socket waits for its edge to claim it.
pub(crate) const CLAIM_WITHIN: Duration = Duration::from_secs(30);
/// JSON bytes of sockets in one hand-off message.
const SOCKETS_PART_BYTES: usize = 1 << 20;
/// The close code and reason of a socket that cannot follow its object.
const CLOSE_MOVING: u16 = 1012;
const NOT_FOLLOWED: &str = "the object moved to another node; reconnect";

type Pick<'a> = &'a (dyn Fn(&[u8; 32]) -> bool + Sync);

/// The edges that paused their sockets of a moving shard, and for which
/// objects.
#[derive(Default)]
pub(super) struct Paused {
    edges: HashMap<String, BTreeSet<[u8; 32]>>,
    /// The sockets of each edge sent to the new owner (live ones: their
    /// 101 went out before anything of the move).
    shipped: HashMap<String, Vec<u64>>,
}

impl Paused {
    /// Whether the socket (connected to `edge`, of object `id`) moves.
    fn keeps(&self, edge: &str, id: &[u8; 32]) -> bool {
        self.edges.get(edge).is_some_and(|ids| ids.contains(id))
    }
}

/// Where a socket's connection is: this node (`None`) or an edge.
fn edge_of(h: &SocketHandle) -> Option<(Arc<dyn EdgeLink>, u64)> {
    h.remote_parts().map(|(l, esid)| (l.clone(), esid))
}

/// Step 1: asks every edge with sockets of the shard's objects to pause
/// them, and waits (at most [`PAUSE_WITHIN`]) for their answers.
pub(super) async fn pause_edges(links: &Links, registry: &Registry, pick: Pick<'_>) -> Paused {
    let mut wanted: HashMap<String, BTreeSet<[u8; 32]>> = HashMap::new();
    for ns in registry.all() {
        for (id, table) in ns.socket_tables(pick) {
            for h in crate::sync::lock(&table).handles() {
                if let Some((link, _)) = edge_of(h) {
                    wanted
                        .entry(link.edge().to_string())
                        .or_default()
                        .insert(id);
                }
            }
        }
    }
    let mut asked = Vec::new();
    for (edge, ids) in wanted {
        let from = crate::sync::lock(&links.from_edges).get(&edge).cloned();
        let Some(from) = from.filter(|f| !f.is_dead()) else {
            continue;
        };
        let token = links
            .next_pause
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rx = from.pause(token, ids.iter().map(crate::id::hex).collect());
        asked.push((edge, ids, from, rx));
    }
    let mut paused = Paused::default();
    let deadline = tokio::time::Instant::now() + PAUSE_WITHIN;
    for (edge, ids, from, rx) in asked {
        if let Ok(Ok(())) = tokio::time::timeout_at(deadline, rx).await {
            paused.edges.insert(edge, ids);
        } else {
            tracing::warn!(
                edge,
                "an edge did not pause its sockets in time; they are closed"
            );
            // Should the pause come late, it ends at once.
            from.tell(moved(&ids, Vec::new(), None));
        }
    }
    paused
}

fn moved(ids: &BTreeSet<[u8; 32]>, esids: Vec<u64>, owner: Option<&str>) -> ToEdge {
    ToEdge::Moved {
        ids: ids.iter().map(crate::id::hex).collect(),
        esids,
        owner: owner.map(str::to_string),
    }
}

/// Closes the sockets of the shard that cannot follow it: those of edges
/// that did not pause.
pub(super) fn close_unmoved(registry: &Registry, pick: Pick<'_>, paused: &Paused) {
    for ns in registry.all() {
        for (id, table) in ns.socket_tables(pick) {
            for h in crate::sync::lock(&table).handles() {
                if let Some((link, _)) = edge_of(h)
                    && !paused.keeps(link.edge(), &id)
                {
                    h.close(CLOSE_MOVING, NOT_FOLLOWED.into());
                }
            }
        }
    }
}

/// Step 2: the shard's sockets that follow it, as hand-off messages of a
/// bounded size.
pub(super) fn socket_parts(
    registry: &Registry,
    pick: Pick<'_>,
    me: &str,
    epoch: u64,
    paused: &mut Paused,
) -> Vec<WireHandOff> {
    let mut parts = Vec::new();
    let mut part = Vec::new();
    let mut bytes = 0;
    for ns in registry.all() {
        for (id, table) in ns.socket_tables(pick) {
            let t = crate::sync::lock(&table);
            let mut sockets = Vec::new();
            for e in t.export() {
                let (edge, esid) = match edge_of(e.handle) {
                    Some((link, esid)) if paused.keeps(link.edge(), &id) => {
                        paused
                            .shipped
                            .entry(link.edge().to_string())
                            .or_default()
                            .push(esid);
                        (link.edge().to_string(), esid)
                    }
                    Some(_) => continue,
                    None => (me.to_string(), e.sid),
                };
                let moved = Moved {
                    tags: e.tags.to_vec(),
                    attachment: e.attachment.cloned(),
                    auto_response_ms: e.auto_response_ms,
                };
                sockets.push((edge, esid, moved));
            }
            let object = MovedSockets {
                ns: ns.name().to_string(),
                id,
                pair: t.auto_response().cloned(),
                sockets,
            }
            .encode();
            drop(t);
            if object.sockets.is_empty() {
                continue;
            }
            bytes += approx_bytes(&object);
            part.push(object);
            if bytes >= SOCKETS_PART_BYTES {
                parts.push(std::mem::take(&mut part));
                bytes = 0;
            }
        }
    }
    if !part.is_empty() {
        parts.push(part);
    }
    parts
        .into_iter()
        .map(|objects| WireHandOff::Sockets {
            from: me.to_string(),
            epoch,
            objects,
        })
        .collect()
}

/// About the JSON size of an object's sockets (base64 makes attachments
/// a third larger; the rest is field names and numbers).
fn approx_bytes(o: &WireSockets) -> usize {
    let socket = |s: &WireSocket| {
        96 + s.edge.len()
            + s.tags.iter().map(|t| t.len() + 3).sum::<usize>()
            + s.attachment.as_ref().map_or(0, String::len)
    };
    128 + o.ns.len()
        + o.pair.as_ref().map_or(0, |(a, b)| a.len() + b.len())
        + o.sockets.iter().map(socket).sum::<usize>()
}

/// Step 3, on the old owner once the new owner has the shard: its own
/// clients' sockets of the shard become edge sockets of the new owner's
/// objects, and every paused edge is told where the objects went.
pub(super) async fn hand_over(
    links: &Arc<Links>,
    registry: &Registry,
    shared: &Arc<crate::shared::Shared>,
    pick: Pick<'_>,
    to: &str,
    paused: &Paused,
) {
    let link = match uplink(links, to).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(to, error = ?e, "no link to the new owner: this node's sockets of the moved shard close");
            None
        }
    };
    let mut claims = Vec::new();
    for ns in registry.all() {
        for (id, _) in ns.socket_tables(pick) {
            let Some(table) = ns.take_socket_table(&id) else {
                continue;
            };
            become_edge(links, &ns, shared, id, &table, link.as_ref(), &mut claims);
        }
    }
    if let Some(link) = &link
        && !claims.is_empty()
    {
        link.send(&ToOwner::Claim { esids: claims }).await;
    }
    tell_edges(links, pick, paused, Some(to));
}

/// One object's table, on the node it moved away from: the entries of
/// other edges' sockets go (those edges claim them), the sockets
/// connected here stay open, now as this node's edge sockets on `link`.
fn become_edge(
    links: &Arc<Links>,
    ns: &Arc<dyn NamespaceDyn>,
    shared: &Arc<crate::shared::Shared>,
    id: [u8; 32],
    table: &Arc<crate::websocket::socket::Table>,
    link: Option<&Arc<Uplink>>,
    claims: &mut Vec<u64>,
) {
    let mut t = crate::sync::lock(table);
    t.retain(|h| h.remote_parts().is_none());
    let here: Vec<(u64, SocketHandle)> = t
        .export()
        .into_iter()
        .map(|e| (e.sid, e.handle.clone()))
        .collect();
    drop(t);
    if here.is_empty() {
        return;
    }
    let Some(link) = link else {
        for (_, h) in here {
            h.close(CLOSE_MOVING, NOT_FOLLOWED.into());
        }
        return;
    };
    let metrics = crate::metrics::Metrics::register(ns.name());
    for (sid, h) in here {
        let d = EdgeDeliver::new(
            id,
            ns.name().into(),
            link.clone(),
            links,
            shared.clone(),
            metrics.clone(),
        );
        crate::sync::lock(&links.uplinks.delivers).insert(sid, d);
        crate::sync::lock(&link.sockets).insert(sid, h);
        claims.push(sid);
    }
    crate::sync::lock(&links.uplinks.tables)
        .entry(id)
        .or_insert_with(|| table.clone());
}

/// Tells the paused edges where the shard's objects are now (`None`: the
/// move was called off, here still), and forgets their sockets here if
/// they moved.
fn tell_edges(links: &Links, pick: Pick<'_>, paused: &Paused, to: Option<&str>) {
    for (edge, ids) in &paused.edges {
        let from = crate::sync::lock(&links.from_edges).get(edge).cloned();
        if let Some(from) = from {
            let esids = match to {
                Some(_) => {
                    from.forget_where(pick);
                    paused.shipped.get(edge).cloned().unwrap_or_default()
                }
                None => Vec::new(),
            };
            from.tell(moved(ids, esids, to));
        }
    }
}

/// The move was called off: the paused edges go on as before.
pub(super) fn resume_edges(links: &Links, pick: Pick<'_>, paused: &Paused) {
    tell_edges(links, pick, paused, None);
}

/// The new owner's confirmation is missing (or the move's outcome is
/// unknown): the shard's sockets close, as before sockets could move.
pub(super) fn give_up(links: &Links, registry: &Registry, pick: Pick<'_>, paused: &Paused) {
    for ns in registry.all() {
        for (_, table) in ns.socket_tables(pick) {
            for h in crate::sync::lock(&table).handles() {
                h.close(CLOSE_MOVING, NOT_FOLLOWED.into());
            }
        }
    }
    resume_edges(links, pick, paused);
}

/// A socket that moved here with its object, until its edge claims it.
pub(crate) struct Parked {
    socket: RemoteSocket,
    kept: Kept,
    pair: Option<Option<(String, String)>>,
}

/// The handle of a parked socket: keeps what the object sends it.
struct ParkedLink {
    links: Weak<Links>,
    edge: String,
}

impl ParkedLink {
    fn with(&self, esid: u64, f: impl FnOnce(&mut Parked)) {
        if let Some(links) = self.links.upgrade()
            && let Some(p) = crate::sync::lock(&links.parked).get_mut(&(self.edge.clone(), esid))
        {
            f(p);
        }
    }
}

impl EdgeLink for ParkedLink {
    fn edge(&self) -> &str {
        &self.edge
    }

    fn register(&self, _esid: u64, _socket: RemoteSocket) {}

    fn send(&self, esid: u64, out: Outgoing) {
        self.with(esid, |p| p.kept.push(out));
    }

    fn flush(&self) {}

    fn kill(&self, esid: u64, code: u16, reason: String) {
        self.with(esid, |p| p.kept.kill(code, reason));
    }

    fn keep(&self, _esid: u64, _tags: Vec<String>, _attachment: Option<bytes::Bytes>) {
        // The claim sends the socket's state as it is then.
    }

    fn auto_response(&self, id: &[u8; 32], pair: Option<(String, String)>) {
        // Kept for every parked socket of the object: the edge learns the
        // latest pair when it claims them.
        if let Some(links) = self.links.upgrade() {
            for p in crate::sync::lock(&links.parked).values_mut() {
                if p.socket.id == *id {
                    p.pair = Some(pair.clone());
                }
            }
        }
    }
}

/// Step 2 on the new owner, at the commit (before it serves the shard):
/// the objects' sockets go into their tables, parked until claimed.
pub(super) fn install(
    links: &Arc<Links>,
    registry: &Registry,
    shared: &crate::shared::Shared,
    moved: Vec<MovedSockets>,
) {
    let mut installed = Vec::new();
    let mut parks: HashMap<String, Arc<dyn EdgeLink>> = HashMap::new();
    for m in moved {
        let Some(ns) = registry.get(&m.ns) else {
            tracing::warn!(
                ns = m.ns,
                "sockets of an unknown namespace moved here; their edges will close them"
            );
            continue;
        };
        let (table, deliver) = ns.socket_table(&m.id);
        let mut t = crate::sync::lock(&table);
        if m.pair.is_some() {
            let _ = t.set_auto_response(m.pair);
        }
        for (edge, esid, state) in m.sockets {
            let sid = shared
                .next_sid
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let link = parks
                .entry(edge.clone())
                .or_insert_with(|| {
                    Arc::new(ParkedLink {
                        links: Arc::downgrade(links),
                        edge: edge.clone(),
                    })
                })
                .clone();
            t.adopt(
                sid,
                SocketHandle::remote(RemoteHandle { link, esid }),
                state,
            );
            let socket = RemoteSocket {
                deliver: deliver.clone(),
                table: table.clone(),
                id: m.id,
                sid,
            };
            crate::sync::lock(&links.parked).insert(
                (edge.clone(), esid),
                Parked {
                    socket,
                    kept: Kept::default(),
                    pair: None,
                },
            );
            installed.push((edge, esid));
        }
    }
    if installed.is_empty() {
        return;
    }
    // Sockets never claimed end for their objects.
    let links = Arc::downgrade(links);
    tokio::spawn(async move {
        tokio::time::sleep(CLAIM_WITHIN).await;
        let Some(links) = links.upgrade() else { return };
        let unclaimed: Vec<Parked> = {
            let mut parked = crate::sync::lock(&links.parked);
            installed.iter().filter_map(|k| parked.remove(k)).collect()
        };
        for p in unclaimed {
            tracing::info!(
                sid = p.socket.sid,
                "a socket that moved here was not claimed by its node"
            );
            p.socket
                .ended(CloseEvent {
                    code: 1006,
                    reason: "the client's node did not take the socket back after a move".into(),
                    clean: false,
                })
                .await;
        }
    });
}

/// An edge claims sockets parked here: each is pointed at the edge's link
/// and what was kept for it goes out first, in order.
pub(super) fn claim(links: &Links, from: &Arc<FromEdge>, esids: &[u64]) {
    let link: Arc<dyn EdgeLink> = from.clone();
    for &esid in esids {
        let key = (from.edge().to_string(), esid);
        let table = crate::sync::lock(&links.parked)
            .get(&key)
            .map(|p| p.socket.table.clone());
        let Some(table) = table else {
            // Nothing here for it (its namespace is unknown, or it waited
            // too long): the edge closes it.
            from.kill(esid, 1011, NOT_FOLLOWED.into());
            continue;
        };
        // Under the table's lock, as the object sends: nothing it sends
        // gets between the kept frames and the next.
        let mut t = crate::sync::lock(&table);
        let Some(p) = crate::sync::lock(&links.parked).remove(&key) else {
            continue;
        };
        let handle = SocketHandle::remote(RemoteHandle {
            link: link.clone(),
            esid,
        });
        if !t.set_handle(p.socket.sid, handle) {
            from.kill(esid, 1011, NOT_FOLLOWED.into());
            continue;
        }
        let id = p.socket.id;
        if let Some(tags) = t.tags(p.socket.sid) {
            let attachment = t.attachment(p.socket.sid).ok().flatten().cloned();
            from.keep(esid, tags.to_vec(), attachment);
        }
        from.register(esid, p.socket);
        let (outs, kill) = p.kept.take();
        for out in outs {
            from.send(esid, out);
        }
        if let Some((code, reason)) = kill {
            from.kill(esid, code, reason);
        }
        if let Some(pair) = p.pair {
            from.auto_response(&id, pair);
        }
        drop(t);
    }
    from.flush();
}

/// Starts the task that carries out an owner's pauses and moves.
pub(super) fn spawn_control(links: Arc<Links>, link: Arc<Uplink>, rx: mpsc::Receiver<ToEdge>) {
    tokio::spawn(edge_control(links, link, rx));
}

/// The edge's side: carries out an owner's pauses and moves, in order.
async fn edge_control(links: Arc<Links>, link: Arc<Uplink>, mut rx: mpsc::Receiver<ToEdge>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            ToEdge::Pause { token, ids } => {
                for gate in gates(&links, &ids) {
                    gate.pause().await;
                }
                link.send(&ToOwner::Paused { token }).await;
            }
            ToEdge::Moved { ids, esids, owner } => {
                if let Some(owner) = owner.filter(|o| *o != link.owner) {
                    move_to(&links, &link, &owner, &esids).await;
                }
                for gate in gates(&links, &ids) {
                    gate.resume().await;
                }
            }
            _ => {}
        }
    }
}

fn parse_ids(ids: &[String]) -> BTreeSet<[u8; 32]> {
    ids.iter()
        .filter_map(|h| crate::id::parse_hex(h).ok())
        .collect()
}

/// The gates of the objects named (hex ids) that have sockets here.
fn gates(links: &Links, ids: &[String]) -> Vec<Arc<super::edge::Gate>> {
    parse_ids(ids)
        .iter()
        .filter_map(|id| links.uplinks.gate(id))
        .collect()
}

/// Moves the paused sockets `esids` (those the old owner shipped; a
/// socket whose upgrade is still under way follows its own answer) from
/// `old` to the link to `owner`, and claims them there (their events, let
/// go after this, follow the claim).
async fn move_to(links: &Arc<Links>, old: &Arc<Uplink>, owner: &str, esids: &[u64]) {
    let new = match uplink(links, owner).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(owner, error = ?e, "cannot reach the new owner of sockets here; they close");
            let sockets = crate::sync::lock(&old.sockets);
            for esid in esids {
                if let Some(h) = sockets.get(esid) {
                    h.close(CLOSE_MOVING, NOT_FOLLOWED.into());
                }
            }
            return;
        }
    };
    let mut claimed = Vec::with_capacity(esids.len());
    for esid in esids {
        let h = crate::sync::lock(&old.sockets).remove(esid);
        let d = crate::sync::lock(&links.uplinks.delivers)
            .get(esid)
            .cloned();
        if let (Some(h), Some(d)) = (h, d) {
            crate::sync::lock(&new.sockets).insert(*esid, h);
            d.set_link(new.clone());
            claimed.push(*esid);
        }
    }
    if !claimed.is_empty() {
        new.send(&ToOwner::Claim { esids: claimed }).await;
    }
}

/// The link of these sockets was lost: paused ones go on (and find it
/// gone).
pub(super) async fn resume(links: &Links, esids: &[u64]) {
    let gates: Vec<Arc<super::edge::Gate>> = {
        let delivers = crate::sync::lock(&links.uplinks.delivers);
        esids
            .iter()
            .filter_map(|e| delivers.get(e))
            .filter_map(|d| links.uplinks.gate(&d.id))
            .collect()
    };
    for gate in gates {
        gate.resume().await;
    }
}
