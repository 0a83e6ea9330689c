//! Graceful hand-off: the owner of a shard moves it to another live node
//! without losing or repeating an event.
//!
//! 0. Edges (nodes with clients of the shard's objects) pause those
//!    sockets (`follow.rs`: sockets follow their objects).
//! 1. The owner marks the shard *moving* (under the view's write lock):
//!    from then on it runs none of the shard's events. Calls, fetches,
//!    methods and alarms that arrive are held here, in arrival order (a
//!    peer's are answered later), and so are the frames of its own
//!    clients; frames from an edge that did not pause are refused.
//! 2. It closes the sockets that cannot follow (an edge that did not
//!    pause) with 1012, "reconnect", and asks the shard's live objects to
//!    leave memory; each goes once the events already in its mailbox have
//!    run and committed.
//! 3. It reads the shard's data (keys, alarms, names), a bounded part at a
//!    time, and sends each part to the new owner, which writes it through
//!    its writer (replacing whatever it held of those objects) and answers
//!    once it is durable; then the objects' open sockets.
//! 4. One etcd transaction, comparing the old owner and epoch, names the
//!    new owner at epoch + 1. The new owner is told and serves at once;
//!    the old owner becomes the edge of its own clients' sockets, and
//!    tells the paused edges to take theirs to the new owner.
//! 5. The held events go to the new owner, in order (peers' requests are
//!    forwarded from here), and only then does this node's view say the
//!    shard is elsewhere: an event that was not held is queued behind
//!    them, never ahead. Peers that ask later are answered "moved". Then
//!    the old owner deletes its copy.
//!
//! If anything fails before the transaction, the move is called off: the
//! old owner serves on at once, running the held events itself, and tells
//! the receiver (in the background) to drop what it got. If the
//! transaction's outcome is unknown (etcd did not answer), the old owner
//! drops its claim and lets its next reading of etcd decide, as after a
//! lease lapse: it never serves a shard etcd may have given away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::ClusterError;
use super::etcd::Etcd;
use super::follow;
use super::node::Node;
use crate::alarm::AlarmKey;
use crate::registry::Registry;
use crate::remote::handoff_wire::{CopiedObject, PART_BYTES, WireHandOff, WireObject};
use crate::remote::shard::{self, Owner, Place};
use crate::remote::wire::WireRequest;
use crate::remote::{Held, Kind, Release};
use crate::runtime::Runtime;
use crate::shared::Shared;
use crate::storage::shard_copy::{self, commit_all};

/// Most events held for one shard while it moves; past it, `Overloaded`.
pub(crate) const MAX_HELD: usize = 65_536;
/// Most bytes of peers' requests held for one shard while it moves (a
/// peer's request may carry up to a frame, 8 MiB); past it, `Overloaded`.
pub(crate) const MAX_HELD_BYTES: usize = 64 << 20;
/// How long the shard's live objects get to finish and leave memory.
const EVICT_WITHIN: Duration = Duration::from_secs(30);
/// How often the shard's objects still in memory are asked again to go.
const ASK_AGAIN: Duration = Duration::from_millis(100);
/// How long one step (a part, the commit) may take on the receiver.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// What one hand-off moved.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandOffReport {
    /// The shard moved.
    pub shard: u32,
    /// Its new owner.
    pub to: String,
    /// The epoch the new owner serves it at.
    pub epoch: u64,
    /// Objects copied.
    pub objects: usize,
    /// Keys copied.
    pub keys: usize,
    /// Bytes of keys and values copied.
    pub bytes: usize,
    /// Parts sent.
    pub parts: u32,
    /// Events that arrived here during the move and were sent on.
    pub held: usize,
    /// How long this node served none of the shard's events.
    pub paused: Duration,
}

/// One node's hand-offs, as sender and as receiver.
#[derive(Default)]
pub(crate) struct State {
    holds: Mutex<HashMap<u32, Hold>>,
    pub(super) receiving: Mutex<HashMap<u32, Receiving>>,
    runtime: OnceLock<(Weak<Shared>, Weak<Registry>)>,
    links: OnceLock<Weak<super::sockets::Links>>,
}

/// Events held for a moving shard, in arrival order.
#[derive(Default)]
struct Hold {
    queue: Vec<Held>,
    /// Bytes of the peers' requests among them.
    bytes: usize,
}

/// A shard being received.
pub(super) struct Receiving {
    pub(super) from: String,
    pub(super) epoch: u64,
    pub(super) next_part: u32,
    /// The lease generation the first part arrived under.
    pub(super) lease_gen_at: u64,
    /// Alarms of the copied objects, scheduled once the shard is ours.
    pub(super) alarms: Vec<(AlarmKey, u64)>,
    /// The objects' open sockets, kept once the shard is ours.
    pub(super) sockets: Vec<crate::websocket::moved::MovedSockets>,
}

impl State {
    pub(crate) fn attach(&self, runtime: &Runtime) {
        let _ = self.runtime.set((
            Arc::downgrade(runtime.shared()),
            Arc::downgrade(runtime.registry()),
        ));
    }

    pub(super) fn attach_links(&self, links: &Arc<super::sockets::Links>) {
        let _ = self.links.set(Arc::downgrade(links));
    }

    /// The socket links (none in tests that run no links).
    pub(super) fn links(&self) -> Option<Arc<super::sockets::Links>> {
        self.links.get().and_then(Weak::upgrade)
    }

    pub(super) fn runtime(&self) -> Result<(Arc<Shared>, Arc<Registry>), String> {
        let (s, r) = self
            .runtime
            .get()
            .ok_or_else(|| "this node serves no runtime".to_string())?;
        Option::zip(s.upgrade(), r.upgrade()).ok_or_else(|| "the runtime is gone".to_string())
    }

    /// Holds `then` until the shard's move ends; runs it now if the shard
    /// is not moving.
    /// `bytes`: what the event holds that came from a peer (its request
    /// body), counted against [`MAX_HELD_BYTES`]. `Err` carries the bound
    /// for `Overloaded`.
    pub(crate) fn hold(&self, shard: u32, bytes: usize, then: Held) -> Result<(), usize> {
        let mut holds = crate::sync::lock(&self.holds);
        match holds.get_mut(&shard) {
            Some(h) if h.queue.len() >= MAX_HELD => Err(MAX_HELD),
            Some(h) if h.bytes.saturating_add(bytes) > MAX_HELD_BYTES => Err(MAX_HELD),
            Some(h) => {
                h.queue.push(then);
                h.bytes += bytes;
                Ok(())
            }
            None => {
                // The move ended between the caller's look and now.
                drop(holds);
                then(Release::Again);
                Ok(())
            }
        }
    }

    /// Starts holding the shard's events; false if it is already moving.
    pub(super) fn begin(&self, shard: u32) -> bool {
        let mut holds = crate::sync::lock(&self.holds);
        if holds.contains_key(&shard) {
            return false;
        }
        holds.insert(shard, Hold::default());
        true
    }

    /// Ends the hold: sends the held events on as `release` says, in
    /// order, and changes the view with `flip` (which ends "moving"), all
    /// under the lock `hold` takes, so an event held meanwhile waits and
    /// then goes after them. Sent to a node or run here, they go before
    /// the flip (an event that is not held cannot overtake them: it is
    /// queued behind them); placed `Again`, after it (else they would be
    /// held again). Returns how many there were.
    pub(super) fn end(&self, shard: u32, release: Release<'_>, flip: impl FnOnce()) -> usize {
        let mut holds = crate::sync::lock(&self.holds);
        let queue = holds.remove(&shard).map(|h| h.queue).unwrap_or_default();
        let n = queue.len();
        if matches!(release, Release::Again) {
            flip();
            for then in queue {
                then(release);
            }
        } else {
            for then in queue {
                then(release);
            }
            flip();
        }
        drop(holds);
        n
    }
}

/// Moves `shard` from this node to `to`. See the module's comment.
pub(crate) async fn hand_off(
    node: &Arc<Node>,
    etcd: &mut Etcd,
    shard: u32,
    to: &str,
) -> Result<HandOffReport, ClusterError> {
    let refused = |m: String| ClusterError::HandOff(format!("shard {shard} to {to}: {m}"));
    let (shared, registry) = node.handoff.runtime().map_err(refused)?;
    let (epoch, addr) = {
        let view = crate::sync::read(&node.view);
        if shard >= view.shards {
            return Err(refused(format!("there are {} shards", view.shards)));
        }
        if to == node.me {
            return Err(refused("it is this node".into()));
        }
        let Some(addr) = view.members.get(to).and_then(|a| a.parse().ok()) else {
            return Err(refused("not a live member".into()));
        };
        if view.draining.contains(to) {
            return Err(refused("it is draining".into()));
        }
        match view.place(shard, Instant::now()) {
            Place::Local { epoch } => (epoch, addr),
            other => return Err(refused(format!("this node does not serve it ({other:?})"))),
        }
    };
    let links = node
        .handoff
        .links()
        .ok_or_else(|| refused("this node has no socket links".into()))?;
    if !node.handoff.begin(shard) {
        return Err(refused("it is moving already".into()));
    }
    let shards = node.shards;
    let pick = move |id: &[u8; 32]| shard::shard_of(id, shards) == shard;
    // Sockets on other nodes stop sending first (the shard still serves
    // what they sent), so they can follow it (`follow.rs`).
    let mut paused = follow::pause_edges(&links, &registry, &pick).await;
    let started = Instant::now();
    {
        let mut view = crate::sync::write(&node.view);
        // Still ours at that epoch? (The view may have changed since.)
        if !matches!(view.place(shard, Instant::now()), Place::Local { epoch: e } if e == epoch) {
            drop(view);
            node.handoff.end(shard, Release::Again, || {});
            follow::resume_edges(&links, &pick, &paused);
            return Err(refused("the shard changed hands meanwhile".into()));
        }
        view.moving.insert(shard);
    }
    let peer = Peer {
        node,
        to,
        addr,
        shard,
        epoch,
    };
    let copied = match prepare_and_copy(&peer, &shared, &registry, &mut paused).await {
        Ok(c) => c,
        Err(e) => {
            // Nothing moved in etcd: this node serves on at once, and the
            // receiver is told to drop what it got.
            call_off(&peer, started);
            follow::resume_edges(&links, &pick, &paused);
            return Err(refused(e));
        }
    };
    let claim = shard::reassign(
        shard,
        Owner {
            node: node.me.clone(),
            epoch,
        },
        to,
    );
    match etcd.apply(&claim).await {
        Ok(true) => {}
        Ok(false) => {
            call_off(&peer, started);
            follow::resume_edges(&links, &pick, &paused);
            return Err(refused(
                "etcd no longer names this node the owner at that epoch".into(),
            ));
        }
        Err(e) => {
            // Unknown outcome: serve nothing of it until etcd is read
            // again (the refresh re-claims it if it is still ours).
            follow::give_up(&links, &registry, &pick, &paused);
            node.handoff.end(shard, Release::Again, || {
                let mut view = crate::sync::write(&node.view);
                view.moving.remove(&shard);
                view.claimed.remove(&shard);
            });
            return Err(refused(format!("the ownership transaction failed: {e}")));
        }
    }
    // Told before the held events go, so it serves when they arrive; if
    // this is lost, it re-claims the shard at its next reading of etcd.
    match peer
        .step(WireHandOff::Commit {
            epoch: claim.next.epoch,
        })
        .await
    {
        // Before the held events go: this node's own clients' events
        // among them then go to the new owner as an edge's.
        Ok(()) => follow::hand_over(&links, &registry, &shared, &pick, to, &paused).await,
        Err(e) => {
            tracing::warn!(shard, to, error = %e, "the new owner did not confirm; it re-claims the shard from etcd (and the shard's sockets close)");
            follow::give_up(&links, &registry, &pick, &paused);
        }
    }
    let next = claim.next.clone();
    let release = Release::To {
        node: to,
        epoch: next.epoch,
    };
    let held = node.handoff.end(shard, release, || {
        crate::sync::write(&node.view).handed_away(shard, next);
    });
    let paused = started.elapsed();
    crate::metrics::shard_handoff("moved", paused);
    if let Some(r) = node.replication.get() {
        r.disown(shard);
    }
    if let Err(e) = remove_local(&shared, shard, node.shards).await {
        tracing::warn!(shard, error = %e, "the moved shard's local copy was not deleted");
    }
    Ok(HandOffReport {
        shard,
        to: to.to_string(),
        epoch: claim.next.epoch,
        objects: copied.objects,
        keys: copied.keys,
        bytes: copied.bytes,
        parts: copied.parts,
        held,
        paused,
    })
}

/// Calls the move off: the shard's events run here again (the held ones
/// first, in order), and the receiver is told, in the background (it may
/// be what failed), to drop what it got.
fn call_off(peer: &Peer<'_>, started: Instant) {
    crate::metrics::shard_handoff("called_off", started.elapsed());
    peer.node.handoff.end(peer.shard, Release::Here, || {
        crate::sync::write(&peer.node.view)
            .moving
            .remove(&peer.shard);
    });
    let (node, to, addr, shard, epoch) = (
        peer.node.clone(),
        peer.to.to_string(),
        peer.addr,
        peer.shard,
        peer.epoch,
    );
    tokio::spawn(async move {
        let peer = Peer {
            node: &node,
            to: &to,
            addr,
            shard,
            epoch,
        };
        if let Err(e) = peer.step(WireHandOff::Abort).await {
            tracing::warn!(shard, to, error = %e, "the receiver of a called-off hand-off was not told; it keeps a copy it does not serve");
        }
    });
}

/// The receiving end, as the sender addresses it.
struct Peer<'a> {
    node: &'a Arc<Node>,
    to: &'a str,
    addr: std::net::SocketAddr,
    shard: u32,
    epoch: u64,
}

impl Peer<'_> {
    /// Sends one step and waits for the receiver's answer.
    async fn step(&self, body: WireHandOff) -> Result<(), String> {
        let body = serde_json::value::to_raw_value(&body).map_err(|e| e.to_string())?;
        let req = WireRequest {
            seq: 0,
            ns: String::new(),
            id: String::new(),
            shard: self.shard,
            epoch: self.epoch,
            kind: Kind::HandOff,
            chain: Vec::new(),
            body,
        };
        let rx = self
            .node
            .peers
            .send(self.to, self.addr, req)
            .map_err(|r| format!("{r:?}"))?;
        match tokio::time::timeout(STEP_TIMEOUT, rx).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(r))) => Err(format!("{} refused: {r:?}", self.to)),
            Ok(Err(_)) => Err(format!("the connection to {} was lost", self.to)),
            Err(_) => Err(format!(
                "{} did not answer within {STEP_TIMEOUT:?}",
                self.to
            )),
        }
    }
}

#[derive(Default)]
pub(super) struct Copied {
    pub(super) objects: usize,
    pub(super) keys: usize,
    pub(super) bytes: usize,
    pub(super) parts: u32,
}

/// Steps 2 and 3: empties memory of the shard's objects, then sends its
/// data.
async fn prepare_and_copy(
    peer: &Peer<'_>,
    shared: &Arc<Shared>,
    registry: &Arc<Registry>,
    paused: &mut follow::Paused,
) -> Result<Copied, String> {
    let (shard, shards) = (peer.shard, peer.node.shards);
    let pick = move |id: &[u8; 32]| shard::shard_of(id, shards) == shard;
    let namespaces = registry.all();
    follow::close_unmoved(registry, &pick, paused);
    let deadline = tokio::time::Instant::now() + EVICT_WITHIN;
    loop {
        // Listening before counting: an object that leaves in between
        // still wakes this.
        let left = shared.left.notified();
        tokio::pin!(left);
        left.as_mut().enable();
        let live: usize = namespaces.iter().map(|ns| ns.evict_where(&pick)).sum();
        if live == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{live} of its objects did not leave memory within {EVICT_WITHIN:?} (background work or a streamed body still running)"
            ));
        }
        // Woken when one leaves; asked again now and then, for an object
        // that was busy when asked (its background work ends later).
        let again = tokio::time::Instant::now() + ASK_AGAIN;
        let _ = tokio::time::timeout_at(again.min(deadline), left).await;
    }
    let mut reader = ShardReader::new(shared.store.clone(), shard, shards).await?;
    while let Some(objects) = reader.next_part().await? {
        peer.step(WireHandOff::Part {
            from: peer.node.me.clone(),
            epoch: peer.epoch,
            part: reader.copied.parts - 1,
            objects: objects.iter().map(WireObject::encode).collect(),
        })
        .await?;
    }
    // Then the sockets that follow their objects (the objects are out of
    // memory: their tables no longer change but for closes).
    for part in follow::socket_parts(registry, &pick, &peer.node.me, peer.epoch, paused) {
        peer.step(part).await?;
    }
    Ok(reader.copied)
}

/// Reads every object of a shard from a store, a bounded part at a time
/// (each part in one trip to the blocking pool).
pub(super) struct ShardReader {
    store: Arc<crate::storage::Store>,
    cursor: Cursor,
    pub(super) copied: Copied,
}

/// Where a [`ShardReader`] is: the objects still to read, and the one
/// being read with its last key read.
#[derive(Default)]
struct Cursor {
    objects: std::vec::IntoIter<crate::storage::shard_copy::Catalogued>,
    current: Option<(crate::storage::shard_copy::Catalogued, Option<Vec<u8>>)>,
}

/// What an object adds to a part besides its keys and values (its id,
/// namespace, name and alarm), counted against `PART_BYTES`.
const OBJECT_BYTES: usize = 64;

impl Cursor {
    /// About `PART_BYTES` of keys and values: the objects, and the keys
    /// and bytes they hold.
    fn read(
        &mut self,
        store: &crate::storage::Store,
    ) -> Result<(Vec<CopiedObject>, usize, usize), crate::storage::StorageError> {
        let (mut out, mut keys, mut bytes, mut budget_used) = (Vec::new(), 0, 0, 0);
        while budget_used < PART_BYTES {
            let ((id, ns, name), after) = match self.current.take() {
                Some(c) => c,
                None => match self.objects.next() {
                    Some(o) => (o, None),
                    None => break,
                },
            };
            let first = after.is_none();
            let budget = PART_BYTES.saturating_sub(budget_used).max(1);
            let page = store.object_page(&id, after.as_deref(), budget)?;
            let alarm = if first { store.alarm(&id)? } else { None };
            keys += page.keys.len();
            bytes += page.bytes;
            budget_used += page.bytes + OBJECT_BYTES;
            if page.more {
                let last = page.keys.last().map(|(k, _)| k.clone()).or(after);
                self.current = Some(((id, ns.clone(), name.clone()), last));
            }
            out.push(CopiedObject {
                ns,
                id,
                name,
                first,
                alarm,
                keys: page.keys,
            });
        }
        Ok((out, keys, bytes))
    }
}

impl ShardReader {
    pub(super) async fn new(
        store: Arc<crate::storage::Store>,
        shard: u32,
        shards: u32,
    ) -> Result<ShardReader, String> {
        let objects = {
            let store = store.clone();
            blocking(move || store.objects_where(&|id| shard::shard_of(id, shards) == shard))
                .await?
        };
        Ok(ShardReader {
            store,
            copied: Copied {
                objects: objects.len(),
                ..Copied::default()
            },
            cursor: Cursor {
                objects: objects.into_iter(),
                current: None,
            },
        })
    }

    /// The next part; the first is returned even when empty. `None` once
    /// everything was read.
    pub(super) async fn next_part(&mut self) -> Result<Option<Vec<CopiedObject>>, String> {
        let store = self.store.clone();
        let mut cursor = std::mem::take(&mut self.cursor);
        let (cursor, read) = tokio::task::spawn_blocking(move || {
            let read = cursor.read(&store);
            (cursor, read)
        })
        .await
        .map_err(|e| e.to_string())?;
        self.cursor = cursor;
        let (objects, keys, bytes) = read.map_err(|e| e.to_string())?;
        if objects.is_empty() && self.copied.parts > 0 {
            return Ok(None);
        }
        self.copied.keys += keys;
        self.copied.bytes += bytes;
        self.copied.parts += 1;
        Ok(Some(objects))
    }
}

/// Writes copied objects (each first part replacing what this node held
/// of its object) and waits until they are durable. Returns their alarms,
/// to schedule once the shard is this node's.
pub(super) async fn write_objects(
    shared: &Shared,
    objects: Vec<CopiedObject>,
) -> Result<Vec<(AlarmKey, u64)>, String> {
    let mut alarms = Vec::new();
    let batches = objects
        .into_iter()
        .map(|o| {
            if let Some(at) = o.alarm {
                let namespace = o.ns.as_str().into();
                alarms.push((
                    AlarmKey {
                        id: o.id,
                        namespace,
                    },
                    at,
                ));
            }
            shard_copy::copy_batch(o.id, &o.ns, o.name.as_deref(), o.first, o.alarm, o.keys)
        })
        .collect();
    commit_all(&shared.store, batches)
        .await
        .map_err(|e| e.to_string())?;
    Ok(alarms)
}

/// Runs a store read on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::storage::StorageError> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Deletes every object of `shard` here, alarms included.
pub(super) async fn remove_local(
    shared: &Arc<Shared>,
    shard: u32,
    shards: u32,
) -> Result<(), String> {
    let store = shared.store.clone();
    let objects =
        blocking(move || store.objects_where(&|id| shard::shard_of(id, shards) == shard)).await?;
    let batches = objects
        .iter()
        .map(|(id, ns, _)| shard_copy::removal_batch(*id, ns))
        .collect();
    commit_all(&shared.store, batches)
        .await
        .map_err(|e| e.to_string())?;
    for (id, ns, _) in objects {
        let key = AlarmKey {
            id,
            namespace: ns.into(),
        };
        shared.alarms.committed(key, None);
    }
    Ok(())
}

#[cfg(test)]
#[path = "handoff_tests.rs"]
mod tests;
