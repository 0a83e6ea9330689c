//! Placement: which live instance gets an event. Each namespace keeps a
//! map of its live objects (one mailbox each); an event for an object that
//! is not live starts its activation. This is the one place that decides
//! where an event goes (the seam a cluster plugs into).
//!
//! With `activation.rs` this is the one pair of modules that use each
//! other: the router starts object tasks, and a task that is evicted hands
//! events that slipped into its mailbox back to the router.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use tokio::sync::{Notify, mpsc};

use crate::activation;
use crate::clock::ClockMs;
use crate::error::{Error, Result};
use crate::event::{CallChain, Envelope, Event};
use crate::id::{IdMinter, ObjectId};
use crate::metrics::{Metrics, NamespaceStats};
use crate::object::Object;
use crate::options::NsLimits;
use crate::shared::Shared;
use crate::websocket::socket::{Deliver, SocketEvent, Table};

/// Ids are keyed hashes or random, so their first 8 bytes hash them well.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]::hash` writes the bytes once; fold in whatever comes.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

pub(crate) type IdMap<V> = DashMap<[u8; 32], V, BuildHasherDefault<IdHasher>>;

/// One entry of an object's mailbox. Boxed: the channel allocates its
/// first block of 32 entries with each activation, and an entry in place
/// would make that block about 2.3 KB per live object instead of 256 bytes.
pub(crate) type Mail<O> = Box<Envelope<O>>;

/// A live object's mailbox, as the namespace sees it.
pub(crate) struct Slot<O: Object> {
    pub(crate) tx: mpsc::Sender<Mail<O>>,
    /// Which activation this is, so a task only ever removes its own slot.
    pub(crate) generation: u64,
    pub(crate) id: ObjectId,
    /// How the namespace asks this activation to leave memory early, when
    /// the namespace holds more live objects than its cap.
    pub(crate) evict: Arc<Notify>,
    /// The namespace's event tick when the activation last took an event:
    /// the smallest is the idlest.
    pub(crate) last_active: Arc<AtomicU64>,
    /// The byte budget of socket messages queued for this activation
    /// ([`RuntimeOptions::mailbox_bytes`](crate::RuntimeOptions::mailbox_bytes)).
    pub(crate) bytes: Arc<tokio::sync::Semaphore>,
}

/// One namespace's state: its objects' mailboxes and socket tables.
pub(crate) struct NsInner<O: Object> {
    pub(crate) name: Arc<str>,
    pub(crate) minter: IdMinter,
    pub(crate) env: Arc<O::Env>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) live: IdMap<Slot<O>>,
    /// Accepted WebSockets per object; outlives activations (hibernation).
    pub(crate) sockets: IdMap<Arc<Table>>,
    /// This namespace's settings (its own over the runtime's).
    pub(crate) limits: NsLimits,
    generations: AtomicU64,
    /// Counts events taken by this namespace's activations: their clock
    /// for choosing the idlest.
    pub(crate) ticks: AtomicU64,
    /// This namespace's counters and histograms (labelled with its name).
    pub(crate) metrics: Metrics,
    /// The typed methods other nodes may ask, by name
    /// ([`Namespace::accept`](crate::Namespace::accept)).
    #[cfg(feature = "cluster")]
    pub(crate) methods:
        std::sync::RwLock<std::collections::HashMap<&'static str, crate::event::MethodEntry<O>>>,
}

impl<O: Object> NsInner<O> {
    pub(crate) fn new(shared: Arc<Shared>, name: &str, env: Arc<O::Env>, limits: NsLimits) -> Self {
        NsInner {
            name: Arc::from(name),
            metrics: Metrics::register(name),
            minter: IdMinter::new(&shared.id_secret, name),
            env,
            shared,
            live: IdMap::default(),
            sockets: IdMap::default(),
            limits,
            generations: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            #[cfg(feature = "cluster")]
            methods: std::sync::RwLock::default(),
        }
    }
}

/// State figures for metrics and [`Runtime::stats`](crate::Runtime::stats):
/// read from the live map and the socket tables; no object is woken.
impl<O: Object> NsInner<O> {
    pub(crate) fn stats(&self) -> NamespaceStats {
        let mut st = NamespaceStats {
            name: self.name.to_string(),
            live: self.live.len(),
            ..NamespaceStats::default()
        };
        for slot in self.live.iter() {
            let queued = slot.tx.max_capacity() - slot.tx.capacity();
            st.mailbox_queued += queued;
            st.mailbox_queued_max = st.mailbox_queued_max.max(queued);
        }
        // Socket tables first, then the live map, never one inside the
        // other: eviction takes the live map's lock before the socket
        // map's, so nesting them the other way round could deadlock.
        let holding: Vec<([u8; 32], usize)> = self
            .sockets
            .iter()
            .map(|t| {
                let open = crate::sync::lock(&t).list(None).len();
                (*t.key(), open)
            })
            .filter(|(_, open)| *open > 0)
            .collect();
        for (id, open) in holding {
            st.sockets_open += open;
            if !self.live.contains_key(&id) {
                st.hibernated += 1;
            }
        }
        st
    }
}

/// Takes a socket message's size from its object's byte budget, waiting
/// for room (a message larger than the whole budget waits for all of it).
/// None when the object is not live: the message then starts it, alone.
/// Err if the runtime shut down while waiting.
async fn charge<O: Object>(
    ns: &Arc<NsInner<O>>,
    id: &[u8; 32],
    event: &SocketEvent,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ()> {
    let SocketEvent::Message(m) = event else {
        return Ok(None);
    };
    let size = match m {
        crate::websocket::Message::Text(t) => t.len(),
        crate::websocket::Message::Binary(b) => b.len(),
    };
    let Some(budget) = ns.live.get(id).map(|s| s.bytes.clone()) else {
        return Ok(None);
    };
    let want = u32::try_from(size.clamp(1, ns.limits.mailbox_bytes)).unwrap_or(u32::MAX);
    let shutdown = ns.shared.shutdown.clone();
    tokio::select! {
        permit = budget.acquire_many_owned(want) => Ok(permit.ok()),
        () = shutdown.cancelled() => Err(()),
    }
}

/// In a cluster, where a socket's event goes when its object moves: a
/// socket connected here whose object is moving waits for the move to
/// end (its events are held like calls); once the object has moved away,
/// this node is the socket's edge and its events go to the new owner
/// (the returned deliverer). `None`: deliver here as usual (or be
/// refused if the object is not served here).
#[cfg(feature = "cluster")]
async fn follow<O: Object>(
    ns: &Arc<NsInner<O>>,
    id: &[u8; 32],
    sid: u64,
) -> Option<Arc<dyn Deliver>> {
    let route = ns.shared.route.get()?;
    loop {
        if let Some(edge) = ns.shared.socket_links.get().and_then(|l| l.forwarded(sid)) {
            return Some(edge);
        }
        if !matches!(route.place(id), crate::remote::Place::Moving) {
            return None;
        }
        // Sockets connected to other nodes are paused there instead.
        let here = ns.sockets.get(id).is_some_and(|t| {
            crate::sync::lock(&t)
                .any_handle(sid)
                .is_some_and(|h| h.remote_parts().is_none())
        });
        if !here {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let then: crate::remote::Held = Box::new(move |_| {
            let _ = tx.send(());
        });
        if route.hold(id, then).is_err() {
            return None;
        }
        // Over (whichever way): look again.
        let _ = rx.await;
    }
}

/// Delivers socket events of one namespace's objects.
pub(crate) struct NsDeliver<O: Object>(pub(crate) Arc<NsInner<O>>);

impl<O: Object> Deliver for NsDeliver<O> {
    fn deliver(
        &self,
        id: [u8; 32],
        sid: u64,
        event: SocketEvent,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            #[cfg(feature = "cluster")]
            if let Some(edge) = follow(&self.0, &id, sid).await {
                return edge.deliver(id, sid, event).await;
            }
            let oid = ObjectId::from_parts(id, None);
            let charge = match charge(&self.0, &id, &event).await {
                Ok(charge) => charge,
                Err(()) => return false,
            };
            let envelope = Envelope {
                event: Event::Socket { sid, event, charge },
                chain: CallChain::default().push(id),
            };
            enqueue_wait(&self.0, &oid, envelope).await.is_ok()
        })
    }

    fn now_ms(&self) -> u64 {
        self.0.shared.clock.now_ms()
    }

    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.0.metrics
    }
}

impl<O: Object> crate::background::Sink for NsDeliver<O> {
    fn deliver(
        &self,
        id: [u8; 32],
        epoch: u64,
        done: crate::background::Done,
        running: crate::background::Running,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let oid = ObjectId::from_parts(id, None);
            let envelope = Envelope {
                event: Event::Background {
                    epoch,
                    done,
                    running,
                },
                chain: CallChain::default().push(id),
            };
            enqueue_wait(&self.0, &oid, envelope).await.is_ok()
        })
    }
}

/// Sends an envelope where its object lives: in a cluster, to the node
/// that owns its shard when that is not this one; else into the object's
/// mailbox here.
pub(crate) fn enqueue<O: Object>(
    ns: &Arc<NsInner<O>>,
    id: &ObjectId,
    envelope: Envelope<O>,
) -> Result<()> {
    #[cfg(feature = "cluster")]
    if let Some(route) = ns.shared.route.get() {
        let view = crate::sync::read(route.view());
        let shard = crate::remote::shard::shard_of(id.as_bytes(), view.shards);
        match view.place(shard, std::time::Instant::now()) {
            // Activated under the view's lock: see `Route::view`.
            crate::remote::Place::Local { .. } => return enqueue_local(ns, id, envelope),
            crate::remote::Place::Remote { node, epoch } => {
                drop(view);
                return crate::forward::send(
                    route, &ns.shared, &ns.name, id, &node, epoch, envelope,
                );
            }
            crate::remote::Place::Unavailable(reason) => {
                let e = Error::Unavailable {
                    id: id.clone(),
                    reason,
                };
                return Err(e);
            }
            crate::remote::Place::Moving => {
                drop(view);
                let (ns2, id2, route2) = (ns.clone(), id.clone(), route.clone());
                // Sent on, in order, once the hand-off ends: to the new
                // owner, or here if it did not happen.
                let then: crate::remote::Held = Box::new(move |release| {
                    let sent = match release {
                        crate::remote::Release::Here => enqueue_local(&ns2, &id2, envelope),
                        crate::remote::Release::To { node, epoch } => crate::forward::send(
                            &route2,
                            &ns2.shared,
                            &ns2.name,
                            &id2,
                            node,
                            epoch,
                            envelope,
                        ),
                        // Nobody may serve it now (the move's outcome is
                        // unknown): the caller hears why.
                        crate::remote::Release::Again => match route2.place(id2.as_bytes()) {
                            crate::remote::Place::Unavailable(reason) => {
                                envelope.event.refuse(Error::Unavailable {
                                    id: id2.clone(),
                                    reason,
                                });
                                Ok(())
                            }
                            _ => enqueue(&ns2, &id2, envelope),
                        },
                    };
                    if let Err(e) = sent {
                        tracing::debug!(error = %e, "an event held during a hand-off was refused");
                    }
                });
                return route
                    .hold(id.as_bytes(), then)
                    .map_err(|capacity| Error::Overloaded {
                        id: id.clone(),
                        capacity,
                    });
            }
        }
    }
    enqueue_local(ns, id, envelope)
}

/// The view's read lock, if the object is served here now.
#[cfg(feature = "cluster")]
fn local_view<'a>(
    route: &'a dyn crate::remote::Route,
    key: &[u8; 32],
) -> Option<std::sync::RwLockReadGuard<'a, crate::remote::shard::View>> {
    let view = crate::sync::read(route.view());
    let shard = crate::remote::shard::shard_of(key, view.shards);
    matches!(
        view.place(shard, std::time::Instant::now()),
        crate::remote::Place::Local { .. }
    )
    .then_some(view)
}

/// Where a socket's events may run: `Ok` here (the caller activates under
/// the view's lock, see `Route::view`); `Err` when this node does not serve
/// the object, or is handing it to another node. Frames of clients
/// connected here wait out a move before this (`follow`); frames from an
/// edge that did not pause are not waited out (their sockets are being
/// closed, and a frame held here would hold up every other frame on its
/// socket link).
#[cfg(feature = "cluster")]
fn socket_place(route: &Arc<dyn crate::remote::Route>, id: &ObjectId) -> Result<()> {
    let reason = match route.place(id.as_bytes()) {
        crate::remote::Place::Local { .. } => return Ok(()),
        crate::remote::Place::Moving => "the object of this socket is moving to another node",
        _ => "this node does not serve the object of this socket",
    };
    Err(Error::Unavailable {
        id: id.clone(),
        reason: reason.into(),
    })
}

/// Puts an envelope in the object's mailbox here, starting its task if
/// needed.
pub(crate) fn enqueue_local<O: Object>(
    ns: &Arc<NsInner<O>>,
    id: &ObjectId,
    mut envelope: Envelope<O>,
) -> Result<()> {
    let shared = &ns.shared;
    if shared.is_shutting_down() {
        return Err(Error::ShuttingDown);
    }
    let key = *id.as_bytes();
    loop {
        if let Some(slot) = ns.live.get(&key) {
            // Sending under the map's read lock: eviction takes the write
            // lock and checks the mailbox is empty, so a message is never
            // left in the mailbox of a task that has decided to go.
            match slot.tx.try_send(Box::new(envelope)) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    ns.metrics.overloads.increment(1);
                    return Err(Error::Overloaded {
                        id: id.clone(),
                        capacity: ns.limits.mailbox_capacity,
                    });
                }
                Err(mpsc::error::TrySendError::Closed(e)) => {
                    // The task ended without removing its slot (shutdown).
                    envelope = *e;
                    let generation = slot.generation;
                    drop(slot);
                    ns.live.remove_if(&key, |_, s| s.generation == generation);
                    if shared.is_shutting_down() {
                        return Err(Error::ShuttingDown);
                    }
                    continue;
                }
            }
        }
        let activated = match ns.live.entry(key) {
            dashmap::Entry::Occupied(_) => continue,
            dashmap::Entry::Vacant(v) => activate(ns, id, v, envelope),
        };
        // After the entry's lock is let go: the check walks the map.
        enforce_live_cap(ns, &key);
        return activated;
    }
}

/// How many live objects the cap check looks at to pick the idlest (an
/// approximation of least recently used that costs the same at any size).
const EVICTION_SAMPLE: usize = 64;

/// Over [`RuntimeOptions::max_live_objects`](crate::RuntimeOptions::max_live_objects):
/// asks the idlest of a sample of live objects (not `newcomer`) to leave
/// memory. It goes once its mailbox is empty, as on an idle timeout; its
/// sockets stay open (it hibernates) and its next event brings it back.
fn enforce_live_cap<O: Object>(ns: &Arc<NsInner<O>>, newcomer: &[u8; 32]) {
    if ns.live.len() <= ns.shared.options.max_live_objects {
        return;
    }
    let mut idlest: Option<(u64, Arc<Notify>)> = None;
    for slot in ns.live.iter().take(EVICTION_SAMPLE) {
        if slot.key() == newcomer {
            continue;
        }
        let at = slot.last_active.load(Ordering::Relaxed);
        if idlest.as_ref().is_none_or(|(t, _)| at < *t) {
            idlest = Some((at, slot.evict.clone()));
        }
    }
    if let Some((_, evict)) = idlest {
        evict.notify_one();
    }
}

/// Starts a new activation with `envelope` as its first event.
fn activate<O: Object>(
    ns: &Arc<NsInner<O>>,
    id: &ObjectId,
    slot: dashmap::VacantEntry<'_, [u8; 32], Slot<O>>,
    envelope: Envelope<O>,
) -> Result<()> {
    let (tx, rx) = mpsc::channel(ns.limits.mailbox_capacity.max(1));
    // A fresh channel with capacity >= 1 always has room.
    if tx.try_send(Box::new(envelope)).is_err() {
        return Err(Error::ShuttingDown);
    }
    let generation = ns.generations.fetch_add(1, Ordering::Relaxed);
    let evict = Arc::new(Notify::new());
    let last_active = Arc::new(AtomicU64::new(ns.ticks.fetch_add(1, Ordering::Relaxed)));
    slot.insert(Slot {
        tx,
        generation,
        id: id.clone(),
        evict: evict.clone(),
        last_active: last_active.clone(),
        bytes: Arc::new(tokio::sync::Semaphore::new(ns.limits.mailbox_bytes)),
    });
    activation::spawn(
        ns.clone(),
        id.clone(),
        generation,
        rx,
        activation::Nudges { evict, last_active },
    );
    Ok(())
}

/// Like [`enqueue`], but waits for room in a full mailbox instead of
/// answering overloaded: for socket frames, whose backpressure then reaches
/// the peer through TCP.
pub(crate) async fn enqueue_wait<O: Object>(
    ns: &Arc<NsInner<O>>,
    id: &ObjectId,
    mut envelope: Envelope<O>,
) -> Result<()> {
    // Sockets live on the node that accepted them, and their events run
    // only where the object is served: on a node that no longer serves it
    // (its lease lapsed, or its shard was moved) they are refused, so a
    // paused node that wakes up with open sockets runs nothing of an
    // object it lost (the socket task then drops the connection).
    #[cfg(feature = "cluster")]
    if let Some(route) = ns.shared.route.get() {
        socket_place(route, id)?;
    }
    let key = *id.as_bytes();
    loop {
        if ns.shared.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        let tx = ns.live.get(&key).map(|s| s.tx.clone());
        match tx {
            Some(tx) => match tx.send(Box::new(envelope)).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(e)) => {
                    // The activation is going away; it leaves the map
                    // before it closes its mailbox, so this ends.
                    envelope = *e;
                    tokio::task::yield_now().await;
                }
            },
            None => {
                // The place may have changed while this waited for room: a
                // new activation happens only where the object is served,
                // under the view's lock (see `Route::view`).
                #[cfg(feature = "cluster")]
                let _view = match ns.shared.route.get() {
                    Some(route) => match local_view(route.as_ref(), &key) {
                        Some(view) => Some(view),
                        None => {
                            socket_place(route, id)?;
                            // Local again since: look once more.
                            continue;
                        }
                    },
                    None => None,
                };
                let activated = match ns.live.entry(key) {
                    dashmap::Entry::Occupied(_) => continue,
                    dashmap::Entry::Vacant(v) => activate(ns, id, v, envelope),
                };
                enforce_live_cap(ns, &key);
                return activated;
            }
        }
    }
}
