//! The runtime: options, the builder, the shared state every namespace and
//! object task refers to, and graceful shutdown.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::alarm::{self, AlarmKey, Alarms};
use crate::clock::{Clock, TokioClock};
use crate::error::{Error, Result};
use crate::inspect::{ObjectPage, ObjectView, ViewOptions};
use crate::metrics::{Metrics, RuntimeStats};
use crate::namespace::{Namespace, NamespaceDyn};
use crate::object::Object;
use crate::storage::{Store, StoreOptions};
use crate::websocket::socket::WebSocketOptions;

/// Tunables of a runtime. Every bound the runtime keeps is here.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Events queued per object before callers get [`Error::Overloaded`].
    /// Default 1024.
    pub mailbox_capacity: usize,
    /// Time without events after which an object is evicted from memory.
    /// Cloudflare evicts after 70 to 140 s; default 70 s.
    pub idle_timeout: Duration,
    /// How long a caller waits for an event to be handled (queueing, running
    /// and committing) before it gets [`Error::DeadlineExceeded`]. Default 30 s.
    pub call_timeout: Duration,
    /// Most events of one object run back to back before their writes
    /// commit together (their output is held until then). Default 64.
    pub max_events_per_commit: usize,
    /// Time after which an object whose only work is accepted WebSockets
    /// is evicted (hibernated); its sockets stay open. Default 10 s.
    pub hibernation_timeout: Duration,
    /// Most objects of one namespace in memory at once. Past it, the
    /// idlest of a sample of live objects is asked to leave (as on an
    /// idle timeout: once its mailbox is empty; its sockets stay open and
    /// its next event brings it back). Default: no cap.
    pub max_live_objects: usize,
    /// Storage options.
    pub store: StoreOptions,
    /// WebSocket options.
    pub websocket: WebSocketOptions,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            mailbox_capacity: 1024,
            idle_timeout: Duration::from_secs(70),
            call_timeout: Duration::from_secs(30),
            max_events_per_commit: 64,
            hibernation_timeout: Duration::from_secs(10),
            max_live_objects: usize::MAX,
            store: StoreOptions::default(),
            websocket: WebSocketOptions::default(),
        }
    }
}

/// Builds a [`Runtime`].
#[derive(Default)]
pub struct RuntimeBuilder {
    data_dir: Option<PathBuf>,
    options: RuntimeOptions,
    clock: Option<Arc<dyn Clock>>,
}

impl RuntimeBuilder {
    /// The data directory (one LMDB environment). Required.
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.data_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Replaces all options.
    pub fn options(mut self, options: RuntimeOptions) -> Self {
        self.options = options;
        self
    }

    /// The live cap (see [`RuntimeOptions::max_live_objects`]).
    pub fn max_live_objects(mut self, n: usize) -> Self {
        self.options.max_live_objects = n;
        self
    }

    /// Hibernation time (see [`RuntimeOptions::hibernation_timeout`]).
    pub fn hibernation_timeout(mut self, d: Duration) -> Self {
        self.options.hibernation_timeout = d;
        self
    }

    /// WebSocket options.
    pub fn websocket(mut self, opts: WebSocketOptions) -> Self {
        self.options.websocket = opts;
        self
    }

    /// Idle eviction time (see [`RuntimeOptions::idle_timeout`]).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.options.idle_timeout = d;
        self
    }

    /// Mailbox bound (see [`RuntimeOptions::mailbox_capacity`]).
    pub fn mailbox_capacity(mut self, n: usize) -> Self {
        self.options.mailbox_capacity = n.max(1);
        self
    }

    /// Call deadline (see [`RuntimeOptions::call_timeout`]).
    pub fn call_timeout(mut self, d: Duration) -> Self {
        self.options.call_timeout = d;
        self
    }

    /// The wall clock (default: [`TokioClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Opens the data dir and starts the runtime. Must be called inside a
    /// tokio runtime.
    ///
    /// # Errors
    ///
    /// No data dir given, the data dir in use, or a storage error.
    pub fn open(self) -> Result<Runtime> {
        let dir = self
            .data_dir
            .ok_or(Error::Namespace(String::new(), "a data dir is required"))?;
        // Handles first, so the writer's figures reach the same recorder.
        let metrics = Metrics::register();
        let store = Store::open(&dir, &self.options.store)?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(TokioClock::new()));
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            store,
            clock,
            options: self.options,
            shutdown,
            tasks: Arc::default(),
            socket_tasks: Arc::default(),
            namespaces: Mutex::new(HashMap::new()),
            alarms: Alarms::default(),
            next_sid: std::sync::atomic::AtomicU64::new(1),
            driver: Mutex::new(None),
            metrics,
        });
        let driver = tokio::spawn(alarm::drive(shared.clone()));
        if let Ok(mut d) = shared.driver.lock() {
            *d = Some(driver);
        }
        let owner = Arc::new(Owner(shared.clone()));
        Ok(Runtime {
            shared,
            _owner: owner,
        })
    }
}

/// Counts live tasks of one kind so shutdown can wait for them.
#[derive(Default)]
pub(crate) struct TaskTracker {
    live: AtomicUsize,
    idle: Notify,
}

impl TaskTracker {
    pub(crate) fn enter(self: &Arc<Self>) -> TaskGuard {
        self.live.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self.clone())
    }

    fn count(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Held by each tracked task; dropping it marks the task gone.
pub(crate) struct TaskGuard(Arc<TaskTracker>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// State shared by the runtime, its namespaces and object tasks.
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: RuntimeOptions,
    pub(crate) shutdown: watch::Sender<bool>,
    tasks: Arc<TaskTracker>,
    /// Socket tasks, waited for at shutdown so Close frames go out.
    pub(crate) socket_tasks: Arc<TaskTracker>,
    namespaces: Mutex<HashMap<String, Arc<dyn NamespaceDyn>>>,
    pub(crate) alarms: Alarms,
    /// The alarm driver task, awaited at shutdown.
    driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Socket ids, unique within the runtime.
    pub(crate) next_sid: std::sync::atomic::AtomicU64,
    /// Counters and histograms.
    pub(crate) metrics: Metrics,
}

impl Shared {
    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub(crate) fn enter_task(&self) -> TaskGuard {
        self.tasks.enter()
    }

    pub(crate) fn namespace_dyn(&self, name: &str) -> Option<Arc<dyn NamespaceDyn>> {
        self.namespaces.lock().ok()?.get(name).cloned()
    }
}

/// A running set of namespaces over one data dir.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> objects::Result<()> {
/// use objects::{Context, Object, Result, Runtime};
/// use std::sync::Arc;
///
/// struct Hello;
/// impl Object for Hello {
///     type Env = ();
///     type Call = String;
///     type Reply = String;
///     async fn new(_: &mut Context, _: Arc<()>) -> Result<Self> { Ok(Hello) }
///     async fn call(&mut self, ctx: &mut Context, who: String) -> Result<String> {
///         Ok(format!("hello {who}, from {}", ctx.name().unwrap_or("?")))
///     }
/// }
///
/// let dir = tempfile::tempdir().unwrap();
/// let rt = Runtime::builder().data_dir(dir.path()).open()?;
/// let hellos = rt.namespace::<Hello>("hellos", ())?;
/// let stub = hellos.get(&hellos.id_from_name("world"));
/// assert_eq!(stub.call("you".into()).await?, "hello you, from world");
/// rt.shutdown().await;
/// # Ok(()) }
/// ```
///
/// Dropping the last `Runtime` handle shuts the runtime down (without
/// waiting); prefer [`Runtime::shutdown`], which waits for in-flight events.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// Shared by every `Runtime` clone; when the last goes, the runtime stops
/// and the namespace registry (which points back at the shared state) is
/// cleared, so nothing keeps the store open.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.shutdown.send_replace(true);
        if let Ok(mut map) = self.0.namespaces.lock() {
            map.clear();
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("data_dir", &self.shared.store.path())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts building a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// Registers a namespace of objects of type `O`, with the env every
    /// instance gets.
    ///
    /// # Errors
    ///
    /// The name is already registered.
    pub fn namespace<O: Object>(&self, name: &str, env: O::Env) -> Result<Namespace<O>> {
        let mut map = self
            .shared
            .namespaces
            .lock()
            .map_err(|_| Error::Namespace(name.into(), "registry poisoned"))?;
        if map.contains_key(name) {
            return Err(Error::Namespace(name.into(), "already registered"));
        }
        let ns = Namespace::<O>::new(self.shared.clone(), name, Arc::new(env));
        map.insert(name.to_string(), ns.as_dyn());
        drop(map);
        // Alarms stored for this namespace start firing now.
        let key_ns: Arc<str> = Arc::from(name);
        let stored = self.shared.store.all_alarms()?;
        self.shared
            .alarms
            .load(
                stored
                    .into_iter()
                    .filter(|(n, _, _)| n == name)
                    .map(|(_, id, at)| {
                        (
                            AlarmKey {
                                id,
                                namespace: key_ns.clone(),
                            },
                            at,
                        )
                    }),
            );
        Ok(ns)
    }

    /// The runtime's options.
    pub fn options(&self) -> &RuntimeOptions {
        &self.shared.options
    }

    /// Number of live object tasks across all namespaces.
    pub fn live_objects(&self) -> usize {
        self.shared.tasks.count()
    }

    /// Alarms pending across all namespaces.
    pub fn pending_alarms(&self) -> usize {
        self.shared.alarms.pending()
    }

    /// Names of the registered namespaces, sorted.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .shared
            .namespaces
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    fn namespace_by_name(&self, name: &str) -> Result<Arc<dyn NamespaceDyn>> {
        self.shared
            .namespace_dyn(name)
            .ok_or_else(|| Error::Namespace(name.into(), "not registered"))
    }

    /// State figures: per namespace live and hibernated objects, open
    /// sockets and mailbox depth; pending alarms; bytes stored. Cheap
    /// enough for every metrics scrape (it walks the live objects and
    /// socket tables once).
    pub fn stats(&self) -> RuntimeStats {
        // The registry's lock is let go before any namespace is walked.
        let registered: Vec<Arc<dyn NamespaceDyn>> = self
            .shared
            .namespaces
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let mut namespaces: Vec<crate::NamespaceStats> =
            registered.iter().map(|ns| ns.stats()).collect();
        namespaces.sort_by(|a, b| a.name.cmp(&b.name));
        let (store_bytes, store_map_bytes) = self.shared.store.usage();
        RuntimeStats {
            namespaces,
            alarms_pending: self.shared.alarms.pending(),
            store_bytes,
            store_map_bytes,
        }
    }

    /// A handle that tells how full the store is, for applications that
    /// refuse writes before the store is full (a failed commit resets the
    /// object and says nothing to a socket's peer).
    pub fn store_usage(&self) -> crate::StoreUsage {
        crate::StoreUsage::new(self.shared.store.clone())
    }

    /// Sets the runtime's gauges (see [`crate::METRICS`]) from
    /// [`stats`](Self::stats); call it before rendering the metrics.
    pub fn publish_metrics(&self) {
        self.stats().publish();
    }

    /// A page of the objects of a namespace (stored, live or holding
    /// sockets), in id order, starting after the id `after` (hex).
    ///
    /// # Errors
    ///
    /// Unknown namespace, a malformed `after`, or an LMDB read error.
    pub fn list_objects(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ObjectPage> {
        self.namespace_by_name(namespace)?.objects(after, limit)
    }

    /// One object's committed entries (a page), alarm and sockets. Reads
    /// committed state only: the object is not woken.
    ///
    /// # Errors
    ///
    /// Unknown namespace, an id this namespace did not mint, or an LMDB
    /// read error.
    pub fn view_object(&self, namespace: &str, id: &str, opts: &ViewOptions) -> Result<ObjectView> {
        self.namespace_by_name(namespace)?.view(id, opts)
    }

    /// Makes the alarm driver read the clock again now. Only needed with a
    /// custom [`Clock`] that jumps (the driver otherwise sleeps until the
    /// next alarm is due by the clock it read last).
    pub fn wake_alarms(&self) {
        self.shared.alarms.changed.notify_one();
    }

    /// Waits until every alarm due by now (on the runtime's clock) has been
    /// delivered and settled. Useful in tests on paused time.
    pub async fn alarms_settled(&self) {
        self.shared.alarms.settled(self.shared.clock.now_ms()).await;
    }

    /// Writes a consistent copy of the store into `dest` while running.
    ///
    /// # Errors
    ///
    /// The target holds a store already, or an I/O error.
    pub fn backup(&self, dest: &Path) -> Result<()> {
        Ok(self.shared.store.backup(dest)?)
    }

    /// Test seam: makes the next `n` commits fail as a broken disk would.
    #[doc(hidden)]
    pub fn inject_commit_failures(&self, n: u32) {
        self.shared.store.fail_commits.store(n, Ordering::SeqCst);
    }

    /// Stops taking events, lets in-flight events finish (queued ones get
    /// [`Error::ShuttingDown`]), closes every accepted WebSocket with 1001
    /// and waits for the Close frames to go out, then stops the storage
    /// writer.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let namespaces: Vec<_> = self
            .shared
            .namespaces
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for ns in namespaces {
            ns.close_sockets(1001, "server shutting down");
        }
        self.shared.tasks.wait_idle().await;
        // Sockets were told to close above; let their Close frames go out.
        self.shared.socket_tasks.wait_idle().await;
        if let Ok(mut map) = self.shared.namespaces.lock() {
            map.clear();
        }
        let driver = self.shared.driver.lock().ok().and_then(|mut d| d.take());
        if let Some(driver) = driver {
            let _ = driver.await;
        }
        self.shared.store.writer.close().await;
    }
}
