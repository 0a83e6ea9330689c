//! Sockets outlive their object's owner (failover). A client's connection
//! is on its *edge* node; when the edge loses its link to the owner (the
//! owner was killed, or cut off), the edge does not close the owner's
//! sockets at once. It keeps the live ones open, pauses their events, and
//! waits (at most the node's socket failover wait, 30 s by default) for
//! their objects' shard to have an owner it can reach: a follower that
//! took over, or the owner itself back under a new lease. It then asks
//! that node to *adopt* them, handing over what the lost owner had told
//! it of each socket (tags and attachment, mirrored on every change by
//! [`ToEdge::Keep`]; the auto-response pair and time it answers itself).
//! The new owner puts them in the objects' tables, as after a move, and
//! their events go on, in order, behind the adoption.
//!
//! An owner refuses what it cannot take: a shard it does not serve now
//! (the edge tries again until its wait runs out) and sockets it already
//! reported closed to their objects when their link ended (it was cut off,
//! not lost: those close with 1012). Sockets that do not find an owner in
//! time close with 1012 (reconnect), as all of them did before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use data_encoding::BASE64;
use tokio::sync::oneshot;

use super::edge::{LINK_LOST, Uplink, uplink};
use super::sockets::{FromEdge, Links};
use crate::remote::handoff_wire::{WireSocket, WireSockets};
use crate::remote::shard::{self, Place};
use crate::remote::socket_wire::{ToEdge, ToOwner};
use crate::websocket::moved::MovedSockets;
use crate::websocket::registry::MAX_SOCKETS;
use crate::websocket::remote::{EdgeLink, RemoteHandle, RemoteSocket};
use crate::websocket::socket::SocketHandle;

/// How long an edge keeps a lost owner's sockets open by default.
pub(crate) const SOCKET_FAILOVER_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting edge looks for its objects' next owner.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// How long an adoption's answer is awaited before the next try.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// How long a link to a possible next owner may take to open (the lost
/// owner itself may still be named until its lease runs out: a dead
/// node's handshake would otherwise take QUIC's idle timeout).
const CONNECT_WITHIN: Duration = Duration::from_secs(2);
/// Estimated JSON bytes of sockets in one `Adopt` message.
const ADOPT_PART_BYTES: usize = 1 << 20;
/// How long an owner remembers the sockets of an edge it reported closed
/// when their link ended.
const GONE_KEPT: Duration = Duration::from_secs(300);

/// An owner's memory of the sockets it reported closed, per edge node.
#[derive(Default)]
pub(super) struct Gone(std::sync::Mutex<HashMap<String, (tokio::time::Instant, HashSet<u64>)>>);

impl Gone {
    /// `esids` of `edge` were reported closed to their objects.
    pub(super) fn add(&self, edge: &str, esids: impl IntoIterator<Item = u64>) {
        let now = tokio::time::Instant::now();
        let mut gone = crate::sync::lock(&self.0);
        gone.retain(|_, (at, _)| now.duration_since(*at) < GONE_KEPT);
        let e = gone
            .entry(edge.to_string())
            .or_insert_with(|| (now, HashSet::new()));
        e.0 = now;
        e.1.extend(esids);
    }

    fn has(&self, edge: &str, esid: u64) -> bool {
        crate::sync::lock(&self.0)
            .get(edge)
            .is_some_and(|(_, s)| s.contains(&esid))
    }
}

/// The sockets of a lost owner still waiting for their objects' next
/// owner, by object: the edge's bookkeeping, pure (no I/O), so its rules
/// are tested alone. A socket stops waiting once an owner took it or
/// closed it; an object's events go on once none of its sockets waits.
#[derive(Debug, Default)]
pub(super) struct Waiting(BTreeMap<[u8; 32], Vec<u64>>);

impl Waiting {
    pub(super) fn add(&mut self, id: [u8; 32], esid: u64) {
        self.0.entry(id).or_default().push(esid);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sockets waiting.
    pub(super) fn len(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.0.keys()
    }

    pub(super) fn esids(&self, id: &[u8; 32]) -> Option<&[u64]> {
        self.0.get(id).map(Vec::as_slice)
    }

    /// An owner's answer: the sockets it took or closed stop waiting (any
    /// other socket it names is ignored). Returns the objects none of
    /// whose sockets waits any more, each once.
    pub(super) fn answered(
        &mut self,
        taken: &HashSet<u64>,
        closed: &HashSet<u64>,
    ) -> Vec<[u8; 32]> {
        let mut done = Vec::new();
        for (id, esids) in &mut self.0 {
            esids.retain(|e| !taken.contains(e) && !closed.contains(e));
            if esids.is_empty() {
                done.push(*id);
            }
        }
        for id in &done {
            self.0.remove(id);
        }
        done
    }

    /// Everything still waiting (the wait is over).
    pub(super) fn take(&mut self) -> BTreeMap<[u8; 32], Vec<u64>> {
        std::mem::take(&mut self.0)
    }
}

// ---- The edge's side ----

/// The owner's word on a socket's tags and attachment, mirrored in the
/// edge's table (whose other entries are the edge's own).
pub(super) fn keep(
    links: &Links,
    link: &Uplink,
    esid: u64,
    tags: Vec<String>,
    attachment: Option<String>,
) {
    if !crate::sync::lock(&link.sockets).contains_key(&esid) {
        return;
    }
    let Some(id) = crate::sync::lock(&links.uplinks.delivers)
        .get(&esid)
        .map(|d| d.id)
    else {
        return;
    };
    let Some(table) = crate::sync::lock(&links.uplinks.tables).get(&id).cloned() else {
        return;
    };
    let attachment = match attachment.map(|a| BASE64.decode(a.as_bytes())) {
        None => None,
        Some(Ok(a)) => Some(Bytes::from(a)),
        Some(Err(_)) => return,
    };
    let mut t = crate::sync::lock(&table);
    t.set_tags(esid, tags);
    let _ = t.set_attachment(esid, attachment);
}

/// The link to an owner was lost. Its live sockets wait (paused) for
/// their objects' next owner, handed over by a task; the others (and all
/// of them when the node stops, or waits for nothing) close with 1012.
/// Returns the ones closed.
pub(super) async fn lost(links: &Arc<Links>, link: &Arc<Uplink>) -> Vec<u64> {
    let within = links.node.socket_failover_wait();
    let stopping = links.shared.upgrade().is_none_or(|s| s.is_shutting_down());
    let sockets: Vec<(u64, SocketHandle)> = crate::sync::lock(&link.sockets)
        .iter()
        .map(|(e, h)| (*e, h.clone()))
        .collect();
    let ending = crate::sync::lock(&link.ending).clone();
    let mut waiting = Waiting::default();
    let mut closed = Vec::new();
    for (esid, h) in sockets {
        let id = crate::sync::lock(&links.uplinks.delivers)
            .get(&esid)
            .map(|d| d.id);
        let live = id.is_some_and(|id| {
            crate::sync::lock(&links.uplinks.tables)
                .get(&id)
                .is_some_and(|t| crate::sync::lock(t).is_live(esid))
        });
        match id {
            Some(id) if live && !stopping && !within.is_zero() && !ending.contains(&esid) => {
                waiting.add(id, esid);
            }
            _ => {
                h.close(1012, LINK_LOST.into());
                closed.push(esid);
            }
        }
    }
    if waiting.is_empty() {
        return closed;
    }
    for id in waiting.ids() {
        if let Some(g) = links.uplinks.gate(id) {
            g.pause().await;
        }
    }
    tracing::info!(
        owner = link.owner,
        sockets = waiting.len(),
        "lost the link to an owner: its sockets wait for their objects' next owner"
    );
    let until = tokio::time::Instant::now() + within;
    tokio::spawn(rehome(links.clone(), link.clone(), waiting, until));
    closed
}

/// Hands the waiting sockets to their objects' next owners as they
/// appear; closes those left when `until` comes. (Boxed: it makes links,
/// whose reader starts it.)
fn rehome(
    links: Arc<Links>,
    old: Arc<Uplink>,
    waiting: Waiting,
    until: tokio::time::Instant,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(rehome_until(links, old, waiting, until))
}

async fn rehome_until(
    links: Arc<Links>,
    old: Arc<Uplink>,
    mut waiting: Waiting,
    until: tokio::time::Instant,
) {
    while !waiting.is_empty() && tokio::time::Instant::now() < until {
        if links.shared.upgrade().is_none_or(|s| s.is_shutting_down()) {
            break;
        }
        for (owner, ids) in next_owners(&links, &waiting) {
            let Ok(Ok(new)) = tokio::time::timeout(CONNECT_WITHIN, uplink(&links, &owner)).await
            else {
                continue;
            };
            for part in parts(&links, &ids, &waiting) {
                adopt_on(&links, &old, &new, part, &mut waiting).await;
            }
        }
        if !waiting.is_empty() {
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }
    let left = waiting.len();
    if left > 0 {
        tracing::info!(
            owner = old.owner,
            sockets = left,
            "no next owner took these sockets in time; they close"
        );
    }
    for (id, esids) in waiting.take() {
        {
            let sockets = crate::sync::lock(&old.sockets);
            for esid in &esids {
                if let Some(h) = sockets.get(esid) {
                    h.close(1012, LINK_LOST.into());
                }
            }
        }
        if let Some(g) = links.uplinks.gate(&id) {
            g.resume().await;
        }
    }
}

/// The objects that have an owner now, by that owner (this node too).
fn next_owners(links: &Links, waiting: &Waiting) -> BTreeMap<String, Vec<[u8; 32]>> {
    let view = crate::sync::read(&links.node.view);
    let now = std::time::Instant::now();
    let mut out: BTreeMap<String, Vec<[u8; 32]>> = BTreeMap::new();
    for id in waiting.ids() {
        let owner = match view.place(shard::shard_of(id, links.node.shards), now) {
            Place::Local { .. } => links.node.me.clone(),
            Place::Remote { node, .. } => node,
            Place::Unavailable(_) | Place::Moving => continue,
        };
        out.entry(owner).or_default().push(*id);
    }
    out
}

/// One `Adopt` message's worth: objects with their sockets, and the
/// sockets named.
struct Part {
    objects: Vec<WireSockets>,
    esids: Vec<u64>,
}

/// The waiting sockets of `ids` as the edge knows them, in parts of about
/// [`ADOPT_PART_BYTES`].
fn parts(links: &Links, ids: &[[u8; 32]], waiting: &Waiting) -> Vec<Part> {
    let mut out = vec![Part {
        objects: Vec::new(),
        esids: Vec::new(),
    }];
    let mut bytes = 0;
    for id in ids {
        let Some(esids) = waiting.esids(id) else {
            continue;
        };
        let wanted: HashSet<u64> = esids.iter().copied().collect();
        let ns = esids.iter().find_map(|e| {
            crate::sync::lock(&links.uplinks.delivers)
                .get(e)
                .map(|d| d.ns.to_string())
        });
        let table = crate::sync::lock(&links.uplinks.tables).get(id).cloned();
        let (Some(ns), Some(table)) = (ns, table) else {
            continue;
        };
        let t = crate::sync::lock(&table);
        let object = |sockets| WireSockets {
            ns: ns.clone(),
            id: crate::id::hex(id),
            pair: t.auto_response().cloned(),
            sockets,
        };
        let mut sockets = Vec::new();
        for e in t.export().into_iter().filter(|e| wanted.contains(&e.sid)) {
            let s = WireSocket {
                edge: links.node.me.clone(),
                esid: e.sid,
                tags: e.tags.to_vec(),
                attachment: e.attachment.map(|a| BASE64.encode(a)),
                auto_ms: e.auto_response_ms,
            };
            let cost = 64
                + s.tags.iter().map(|t| t.len() + 3).sum::<usize>()
                + s.attachment.as_ref().map_or(0, String::len);
            if bytes + cost > ADOPT_PART_BYTES && bytes > 0 {
                let last = out.last_mut().expect("a part");
                if !sockets.is_empty() {
                    last.objects.push(object(std::mem::take(&mut sockets)));
                }
                out.push(Part {
                    objects: Vec::new(),
                    esids: Vec::new(),
                });
                bytes = 0;
            }
            bytes += cost;
            out.last_mut().expect("a part").esids.push(e.sid);
            sockets.push(s);
        }
        if !sockets.is_empty() {
            out.last_mut()
                .expect("a part")
                .objects
                .push(object(sockets));
        }
    }
    out.retain(|p| !p.esids.is_empty());
    out
}

/// Asks `new`'s node to adopt one part, and moves what it took to `new`.
async fn adopt_on(
    links: &Links,
    old: &Arc<Uplink>,
    new: &Arc<Uplink>,
    part: Part,
    waiting: &mut Waiting,
) {
    // On the new link before the ask: the owner may send them frames as
    // soon as it took them, ahead of its answer.
    {
        let from = crate::sync::lock(&old.sockets);
        let mut to = crate::sync::lock(&new.sockets);
        for esid in &part.esids {
            if let Some(h) = from.get(esid) {
                to.insert(*esid, h.clone());
            }
        }
    }
    let token = new
        .next_seq
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    crate::sync::lock(&new.adopts).insert(token, tx);
    let asked = new
        .send(&ToOwner::Adopt {
            token,
            objects: part.objects,
        })
        .await;
    let answer = if asked {
        tokio::time::timeout(ANSWER_WITHIN, rx)
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    crate::sync::lock(&new.adopts).remove(&token);
    let (adopted, closed) = answer.unwrap_or_default();
    let (adopted, closed): (HashSet<u64>, HashSet<u64>) =
        (adopted.into_iter().collect(), closed.into_iter().collect());
    for esid in &part.esids {
        if adopted.contains(esid) {
            crate::sync::lock(&old.sockets).remove(esid);
            if let Some(d) = crate::sync::lock(&links.uplinks.delivers).get(esid) {
                d.set_link(new.clone());
            }
        } else {
            crate::sync::lock(&new.sockets).remove(esid);
            if closed.contains(esid)
                && let Some(h) = crate::sync::lock(&old.sockets).get(esid)
            {
                h.close(1012, LINK_LOST.into());
            }
        }
    }
    // Objects with nothing left waiting go on.
    for id in waiting.answered(&adopted, &closed) {
        if let Some(g) = links.uplinks.gate(&id) {
            g.resume().await;
        }
    }
}

// ---- The owner's side ----

/// An edge asks this node to adopt sockets of objects whose owner it
/// lost; answered on the link with what was taken and what is closed.
pub(super) fn adopt(
    links: &Arc<Links>,
    from: &Arc<FromEdge>,
    token: u64,
    objects: Vec<WireSockets>,
) {
    let mut adopted = Vec::new();
    let mut closed = Vec::new();
    let runtime = links.node.handoff.runtime();
    for w in objects {
        let esids: Vec<u64> = w.sockets.iter().map(|s| s.esid).collect();
        match adopt_object(links, from, runtime.as_ref().ok(), w) {
            Ok(Some((taken, gone))) => {
                adopted.extend(taken);
                closed.extend(gone);
            }
            // Not served here now: the edge asks again.
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(edge = from.edge(), error = e, "refused sockets to adopt");
                closed.extend(esids);
            }
        }
    }
    from.tell(ToEdge::Adopted {
        token,
        adopted,
        closed,
    });
}

/// Adopted and closed sockets of one object; `None` if its shard is not
/// served here now.
fn adopt_object(
    links: &Arc<Links>,
    from: &Arc<FromEdge>,
    runtime: Option<&(Arc<crate::shared::Shared>, Arc<crate::registry::Registry>)>,
    w: WireSockets,
) -> Result<Option<super::edge::Adoption>, String> {
    let id = crate::id::parse_hex(&w.id).map_err(|e| e.to_string())?;
    let shard = shard::shard_of(&id, links.node.shards);
    let m = MovedSockets::decode(w, shard, links.node.shards)?;
    if m.sockets.iter().any(|(edge, _, _)| edge != from.edge()) {
        return Err("a socket of another edge".into());
    }
    let local = matches!(
        crate::sync::read(&links.node.view).place(shard, std::time::Instant::now()),
        Place::Local { .. }
    );
    let Some((shared, registry)) = runtime.filter(|_| local) else {
        return Ok(None);
    };
    let ns = registry
        .get(&m.ns)
        .ok_or_else(|| format!("no namespace {}", m.ns))?;
    let (table, deliver) = ns.socket_table(&m.id);
    let mut t = crate::sync::lock(&table);
    if m.pair.is_some() {
        let _ = t.set_auto_response(m.pair);
    }
    let (mut taken, mut gone) = (Vec::new(), Vec::new());
    let link: Arc<dyn EdgeLink> = from.clone();
    for (_, esid, state) in m.sockets {
        if from.has_socket(esid) {
            taken.push(esid);
            continue;
        }
        if links.gone.has(from.edge(), esid) || t.len() >= MAX_SOCKETS {
            gone.push(esid);
            continue;
        }
        let sid = shared
            .next_sid
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        t.adopt(
            sid,
            SocketHandle::remote(RemoteHandle {
                link: link.clone(),
                esid,
            }),
            state,
        );
        from.register(
            esid,
            RemoteSocket {
                deliver: deliver.clone(),
                table: table.clone(),
                id: m.id,
                sid,
            },
        );
        taken.push(esid);
    }
    Ok(Some((taken, gone)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever owners answer (sockets of any object, unknown ones,
        /// the same one taken and closed, answers repeated), a socket
        /// stops waiting exactly when an answer names it, and an object
        /// goes on exactly once, when its last socket stopped waiting;
        /// after all, the rest is what still waits.
        #[test]
        fn an_object_goes_on_once_all_its_sockets_are_answered(
            sockets in proptest::collection::vec((0u8..4, 0u64..24), 0..24),
            answers in proptest::collection::vec(
                (proptest::collection::vec(0u64..30, 0..6), proptest::collection::vec(0u64..30, 0..6)),
                0..12,
            ),
        ) {
            let mut w = Waiting::default();
            let mut by_id: BTreeMap<[u8; 32], std::collections::BTreeSet<u64>> = BTreeMap::new();
            let mut seen = HashSet::new();
            for (obj, esid) in sockets {
                // Socket ids are unique on an edge.
                if seen.insert(esid) {
                    w.add([obj; 32], esid);
                    by_id.entry([obj; 32]).or_default().insert(esid);
                }
            }
            let mut answered_ever = HashSet::new();
            let mut went_on = HashSet::new();
            for (taken, closed) in answers {
                let (taken, closed): (HashSet<u64>, HashSet<u64>) =
                    (taken.into_iter().collect(), closed.into_iter().collect());
                answered_ever.extend(taken.iter().chain(&closed).copied());
                for id in w.answered(&taken, &closed) {
                    prop_assert!(went_on.insert(id), "an object went on twice");
                    prop_assert!(by_id[&id].iter().all(|e| answered_ever.contains(e)));
                }
                for (id, esids) in &by_id {
                    let left: Vec<u64> = esids.iter().copied().filter(|e| !answered_ever.contains(e)).collect();
                    match w.esids(id) {
                        Some(waiting) => {
                            prop_assert!(!went_on.contains(id));
                            let mut waiting = waiting.to_vec();
                            waiting.sort_unstable();
                            prop_assert_eq!(waiting, left);
                        }
                        None => prop_assert!(left.is_empty() && went_on.contains(id)),
                    }
                }
            }
            let total: usize = by_id
                .values()
                .map(|e| e.iter().filter(|e| !answered_ever.contains(e)).count())
                .sum();
            prop_assert_eq!(w.len(), total);
            prop_assert_eq!(w.take().len() + went_on.len(), by_id.len());
            prop_assert!(w.is_empty());
        }
    }
}
