//! Namespaces (one object type each) and stubs (handles to one object).

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::activation::{self, Envelope, Event};
use crate::alarm::AlarmOutcome;
use crate::error::{Error, Result};
use crate::id::{IdMinter, ObjectId};
use crate::inspect::{
    MAX_LISTED_OBJECTS, ObjectPage, ObjectSummary, ObjectView, SocketView, ValueView, ViewOptions,
    paginate,
};
use crate::metrics::NamespaceStats;
use crate::object::{AlarmInfo, Object, Request, Response};
use crate::runtime::Shared;
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

/// A live object's mailbox, as the namespace sees it.
pub(crate) struct Slot<O: Object> {
    pub(crate) tx: mpsc::Sender<Envelope<O>>,
    /// Which activation this is, so a task only ever removes its own slot.
    pub(crate) generation: u64,
    pub(crate) id: ObjectId,
    /// How the namespace asks this activation to leave memory early, when
    /// the namespace holds more live objects than its cap.
    pub(crate) evict: Arc<Notify>,
    /// The namespace's event tick when the activation last took an event:
    /// the smallest is the idlest.
    pub(crate) last_active: Arc<AtomicU64>,
}

pub(crate) struct NsInner<O: Object> {
    pub(crate) name: Arc<str>,
    pub(crate) minter: IdMinter,
    pub(crate) env: Arc<O::Env>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) live: IdMap<Slot<O>>,
    /// Accepted WebSockets per object; outlives activations (hibernation).
    pub(crate) sockets: IdMap<Arc<Table>>,
    generations: AtomicU64,
    /// Counts events taken by this namespace's activations: their clock
    /// for choosing the idlest.
    pub(crate) ticks: AtomicU64,
}

/// The untyped face of a namespace, for the runtime's alarm driver and
/// listings.
pub(crate) trait NamespaceDyn: Send + Sync {
    /// Queues an alarm event for the object.
    fn deliver_alarm(
        self: Arc<Self>,
        id: [u8; 32],
        info: AlarmInfo,
        abandon: bool,
    ) -> Result<oneshot::Receiver<AlarmOutcome>>;

    /// Closes every accepted socket (shutdown).
    fn close_sockets(&self, code: u16, reason: &str);

    /// State figures for metrics.
    fn stats(&self) -> NamespaceStats;

    /// A page of the objects known to this namespace, in id order.
    fn objects(&self, after: Option<&str>, limit: usize) -> Result<ObjectPage>;

    /// One object's committed storage, alarm and sockets.
    fn view(&self, id: &str, opts: &ViewOptions) -> Result<ObjectView>;
}

impl<O: Object> NamespaceDyn for NsInner<O> {
    fn deliver_alarm(
        self: Arc<Self>,
        id: [u8; 32],
        info: AlarmInfo,
        abandon: bool,
    ) -> Result<oneshot::Receiver<AlarmOutcome>> {
        let (tx, rx) = oneshot::channel();
        let id = ObjectId::from_parts(id, None);
        let envelope = Envelope {
            event: Event::Alarm {
                info,
                abandon,
                reply: tx,
            },
            chain: activation::CallChain::default().push(*id.as_bytes()),
        };
        enqueue(&self, &id, envelope)?;
        Ok(rx)
    }

    fn close_sockets(&self, code: u16, reason: &str) {
        for table in self.sockets.iter() {
            if let Ok(t) = table.lock() {
                for h in t.handles() {
                    h.close(code, reason.to_string());
                }
            }
        }
    }

    fn stats(&self) -> NamespaceStats {
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
                let open = t.lock().map(|t| t.list(None).len()).unwrap_or(0);
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

    fn objects(&self, after: Option<&str>, limit: usize) -> Result<ObjectPage> {
        let after = after.map(crate::id::parse_hex).transpose()?;
        let page = limit.clamp(1, MAX_LISTED_OBJECTS);
        let mut all: std::collections::BTreeMap<[u8; 32], ObjectSummary> = Default::default();
        fn entry<'a>(
            all: &'a mut std::collections::BTreeMap<[u8; 32], ObjectSummary>,
            id: [u8; 32],
            name: Option<&str>,
        ) -> &'a mut ObjectSummary {
            let e = all.entry(id).or_insert_with(|| ObjectSummary {
                id: crate::alarm::hex(&id),
                name: None,
                live: false,
                stored: false,
                sockets: 0,
            });
            if e.name.is_none() {
                e.name = name.map(str::to_string);
            }
            e
        }
        for (id, name) in self.shared.store.catalog(&self.name)? {
            entry(&mut all, id, name.as_deref()).stored = true;
        }
        for slot in self.live.iter() {
            entry(&mut all, *slot.key(), slot.id.name()).live = true;
        }
        for table in self.sockets.iter() {
            let open = table.lock().map(|t| t.list(None).len()).unwrap_or(0);
            if open > 0 {
                entry(&mut all, *table.key(), None).sockets = open;
            }
        }
        let mut objects: Vec<ObjectSummary> = match after {
            Some(a) => all
                .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                .map(|(_, v)| v.clone())
                .take(page + 1)
                .collect(),
            None => all.into_values().take(page + 1).collect(),
        };
        let next_after = paginate(&mut objects, page, |o| o.id.clone());
        Ok(ObjectPage {
            namespace: self.name.to_string(),
            objects,
            next_after,
        })
    }

    fn view(&self, id: &str, opts: &ViewOptions) -> Result<ObjectView> {
        let id = self.minter.parse(id)?;
        let key = *id.as_bytes();
        let store = &self.shared.store;
        let name = store.catalog_entry(&key)?.and_then(|(_, n)| n).or_else(|| {
            self.live
                .get(&key)
                .and_then(|s| s.id.name().map(str::to_string))
        });
        let (list, page) = opts.list_options();
        let mut entries: Vec<(String, ValueView)> =
            crate::storage::list_committed(store, &key, &list)?
                .into_iter()
                .map(|(k, v)| (k, ValueView::from(v)))
                .collect();
        let next_after = paginate(&mut entries, page, |(k, _)| k.clone());
        let sockets = self
            .sockets
            .get(&key)
            .map(|t| {
                t.lock()
                    .map(|t| {
                        t.entries()
                            .map(|(sid, tags, att, open)| SocketView {
                                sid,
                                tags: tags.to_vec(),
                                attachment: att.and_then(|b| serde_json::from_slice(b).ok()),
                                open,
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        Ok(ObjectView {
            namespace: self.name.to_string(),
            id: id.to_hex(),
            name,
            live: self.live.contains_key(&key),
            alarm_ms: store.alarm(&key)?,
            entries,
            next_after,
            sockets,
        })
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
            let oid = ObjectId::from_parts(id, None);
            let envelope = Envelope {
                event: Event::Socket { sid, event },
                chain: activation::CallChain::default().push(id),
            };
            enqueue_wait(&self.0, &oid, envelope).await.is_ok()
        })
    }

    fn now_ms(&self) -> u64 {
        self.0.shared.clock.now_ms()
    }

    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.0.shared.metrics
    }
}

/// All objects of one type. Cheap to clone.
pub struct Namespace<O: Object> {
    inner: Arc<NsInner<O>>,
}

impl<O: Object> Clone for Namespace<O> {
    fn clone(&self) -> Self {
        Namespace {
            inner: self.inner.clone(),
        }
    }
}

impl<O: Object> std::fmt::Debug for Namespace<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl<O: Object> Namespace<O> {
    pub(crate) fn new(shared: Arc<Shared>, name: &str, env: Arc<O::Env>) -> Self {
        let minter = IdMinter::new(&shared.store.secret, name);
        Namespace {
            inner: Arc::new(NsInner {
                name: Arc::from(name),
                minter,
                env,
                shared,
                live: IdMap::default(),
                sockets: IdMap::default(),
                generations: AtomicU64::new(0),
                ticks: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn as_dyn(&self) -> Arc<dyn NamespaceDyn> {
        self.inner.clone()
    }

    /// The env every instance of this namespace gets.
    pub fn env(&self) -> &Arc<O::Env> {
        &self.inner.env
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The id for `name`: the same name always gives the same id in this
    /// namespace (and a different one in any other).
    pub fn id_from_name(&self, name: &str) -> ObjectId {
        self.inner.minter.for_name(name)
    }

    /// A new random, unguessable id.
    ///
    /// # Errors
    ///
    /// The OS random source failed.
    pub fn new_unique_id(&self) -> Result<ObjectId> {
        Ok(self.inner.minter.unique()?)
    }

    /// Parses an id's hex form, refusing ids this namespace did not mint.
    ///
    /// # Errors
    ///
    /// [`IdError::Malformed`](crate::IdError::Malformed) unless 64 hex
    /// digits; [`IdError::ForeignNamespace`](crate::IdError::ForeignNamespace)
    /// for an id of another namespace or a forged one.
    pub fn id_from_string(&self, hex: &str) -> Result<ObjectId> {
        let id = self.inner.minter.parse(hex)?;
        // Recover the name if the object recorded one.
        let name = self
            .inner
            .shared
            .store
            .catalog_entry(id.as_bytes())
            .ok()
            .flatten()
            .and_then(|(_, n)| n)
            .map(Arc::from);
        Ok(id.with_name(name))
    }

    /// A stub for `id`. Cheap; the object is activated by the first call.
    pub fn get(&self, id: &ObjectId) -> Stub<O> {
        Stub {
            ns: self.inner.clone(),
            id: id.clone(),
        }
    }

    /// Shorthand for `get(&id_for_name(name))`.
    pub fn get_by_name(&self, name: &str) -> Stub<O> {
        self.get(&self.id_from_name(name))
    }

    /// Ids of the objects live in memory now (names included where known).
    pub fn live_ids(&self) -> Vec<ObjectId> {
        self.inner.live.iter().map(|s| s.id.clone()).collect()
    }

    /// Number of objects live in memory now.
    pub fn live_count(&self) -> usize {
        self.inner.live.len()
    }

    /// Every committed key and value of one object, decoded, read directly
    /// from the store (the object need not be live; writes of an event in
    /// progress are not included).
    ///
    /// # Errors
    ///
    /// An LMDB read error or a corrupt value.
    pub fn export(&self, id: &ObjectId) -> Result<Vec<(String, crate::StoredValue)>> {
        Ok(crate::storage::export_committed(
            &self.inner.shared.store,
            id.as_bytes(),
        )?)
    }

    /// Ids of the objects that have stored data (names included where
    /// known), live or not.
    ///
    /// # Errors
    ///
    /// An LMDB read error.
    pub fn stored_ids(&self) -> Result<Vec<ObjectId>> {
        Ok(self
            .inner
            .shared
            .store
            .catalog(&self.inner.name)?
            .into_iter()
            .map(|(bytes, name)| ObjectId::from_parts(bytes, name.map(Arc::from)))
            .collect())
    }
}

/// A handle to one object. Cheap, `Clone`, usable before the object exists.
/// Calls made through one stub are delivered in the order they were made
/// (each call enqueues before it returns its future).
pub struct Stub<O: Object> {
    ns: Arc<NsInner<O>>,
    id: ObjectId,
}

impl<O: Object> Clone for Stub<O> {
    fn clone(&self) -> Self {
        Stub {
            ns: self.ns.clone(),
            id: self.id.clone(),
        }
    }
}

impl<O: Object> std::fmt::Debug for Stub<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stub")
            .field("namespace", &self.ns.name)
            .field("id", &self.id)
            .finish()
    }
}

impl<O: Object> Stub<O> {
    /// The object's id.
    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    /// Sends an HTTP request to the object's `fetch` handler.
    ///
    /// The request is queued before this returns; the future waits for the
    /// response (which leaves the object only once the event's writes are
    /// durable).
    pub fn fetch(&self, req: Request) -> impl Future<Output = Result<Response>> + Send + use<O> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(|_| Event::Fetch(Box::new(req), tx));
        self.wait(sent, rx)
    }

    /// Makes a typed RPC call to the object's `call` handler.
    ///
    /// Queued before this returns, so calls through one stub keep their
    /// order even when their futures are polled out of order.
    pub fn call(&self, call: O::Call) -> impl Future<Output = Result<O::Reply>> + Send + use<O> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(|_| Event::Call(call, tx));
        self.wait(sent, rx)
    }

    fn wait<T: Send + 'static>(
        &self,
        sent: Result<()>,
        rx: oneshot::Receiver<Result<T>>,
    ) -> impl Future<Output = Result<T>> + Send + use<O, T> {
        let shared = self.ns.shared.clone();
        let deadline = shared.options.call_timeout;
        let id = self.id.clone();
        shared.metrics.calls.increment(1);
        let started = std::time::Instant::now();
        async move {
            sent?;
            let r = match tokio::time::timeout(deadline, rx).await {
                Ok(Ok(r)) => r,
                // The task dropped the reply: it is gone (shutdown).
                Ok(Err(_)) => Err(Error::ShuttingDown),
                Err(_) => Err(Error::DeadlineExceeded {
                    id: id.to_hex(),
                    deadline,
                }),
            };
            shared
                .metrics
                .call_seconds
                .record(started.elapsed().as_secs_f64());
            r
        }
    }

    /// Queues an event, activating the object if it is not live.
    pub(crate) fn send(&self, make: impl FnOnce(&ObjectId) -> Event<O>) -> Result<()> {
        let chain = activation::current_chain();
        if chain.contains(self.id.as_bytes()) {
            return Err(Error::CallCycle {
                id: self.id.to_hex(),
            });
        }
        let envelope = Envelope {
            event: make(&self.id),
            chain: chain.push(*self.id.as_bytes()),
        };
        enqueue(&self.ns, &self.id, envelope)
    }
}

/// Puts an envelope in the object's mailbox, starting its task if needed.
pub(crate) fn enqueue<O: Object>(
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
            match slot.tx.try_send(envelope) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    shared.metrics.overloads.increment(1);
                    return Err(Error::Overloaded {
                        id: id.to_hex(),
                        capacity: shared.options.mailbox_capacity,
                    });
                }
                Err(mpsc::error::TrySendError::Closed(e)) => {
                    // The task ended without removing its slot (shutdown).
                    envelope = e;
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
    let (tx, rx) = mpsc::channel(ns.shared.options.mailbox_capacity.max(1));
    // A fresh channel with capacity >= 1 always has room.
    if tx.try_send(envelope).is_err() {
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
    let key = *id.as_bytes();
    loop {
        if ns.shared.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        let tx = ns.live.get(&key).map(|s| s.tx.clone());
        match tx {
            Some(tx) => match tx.send(envelope).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(e)) => {
                    // The activation is going away; it leaves the map
                    // before it closes its mailbox, so this ends.
                    envelope = e;
                    tokio::task::yield_now().await;
                }
            },
            None => {
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
