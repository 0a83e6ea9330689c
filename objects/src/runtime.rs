//! The runtime: the builder, the namespace registry, and graceful
//! shutdown. The top of the crate: it may use every module, and none uses
//! it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[cfg(feature = "admin")]
use crate::admin::inspect::{ObjectPage, ObjectView, ViewOptions};
use crate::alarm::{self, AlarmKey};
use crate::clock::{Clock, ClockMs, TokioClock};
use crate::dispatch::NsInner;
use crate::error::{Error, Result};
use crate::metrics::RuntimeStats;
use crate::namespace::Namespace;
use crate::object::Object;
use crate::options::{NamespaceOptions, RuntimeOptions};
#[cfg(feature = "admin")]
use crate::registry::NamespaceDyn;
use crate::registry::Registry;
use crate::shared::Shared;
use crate::storage::Store;
use crate::websocket::socket::WebSocketOptions;

/// Builds a [`Runtime`]: a data dir (required), then any options.
///
#[doc = include_str!("docs/runtime_builder.md")]
#[derive(Default)]
pub struct RuntimeBuilder {
    data_dir: Option<PathBuf>,
    options: RuntimeOptions,
    clock: Option<Arc<dyn Clock>>,
    id_secret: Option<[u8; 32]>,
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

    /// Mints and checks ids under this secret instead of the one kept in
    /// the data dir. Every node of a cluster uses the cluster's, so an id
    /// minted on one node is valid on all.
    pub fn id_secret(mut self, secret: [u8; 32]) -> Self {
        self.id_secret = Some(secret);
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
        // Help texts first, so the writer's figures reach the same recorder
        // described.
        crate::metrics::describe();
        let store = Store::open(&dir, &self.options.store)?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(TokioClock::new()));
        let id_secret = self.id_secret.unwrap_or(store.secret);
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            store,
            clock,
            options: self.options,
            refuse_sockets: shutdown.child_token(),
            shutdown,
            tasks: TaskTracker::new(),
            socket_tasks: TaskTracker::new(),
            alarms: Arc::default(),
            left: tokio::sync::Notify::new(),
            next_sid: AtomicU64::new(1),
            id_secret,
            #[cfg(feature = "cluster")]
            route: std::sync::OnceLock::new(),
            #[cfg(feature = "cluster")]
            socket_links: std::sync::OnceLock::new(),
        });
        let registry = Arc::new(Registry::default());
        let driver = tokio::spawn(alarm::drive(alarm::Driver {
            alarms: shared.alarms.clone(),
            store: shared.store.clone(),
            clock: shared.clock.clone(),
            shutdown: shared.shutdown.clone(),
            target: registry.clone(),
        }));
        let owner = Arc::new(Owner {
            shared: shared.clone(),
            registry: registry.clone(),
        });
        Ok(Runtime {
            shared,
            registry,
            driver: Arc::new(Mutex::new(Some(driver))),
            _owner: owner,
        })
    }
}

/// What a bounded step of a graceful stop got done
/// ([`Runtime::close_websockets`], [`Runtime::shutdown_within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The step finished within its time.
    pub clean: bool,
    /// Object tasks still running when the step returned.
    pub objects_running: usize,
    /// WebSocket tasks still running when the step returned.
    pub sockets_open: usize,
}

/// A running set of namespaces over one data dir.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> objects::Result<()> {
/// use objects::{BoxError, Context, Object, Runtime};
/// use std::sync::Arc;
///
/// struct Hello;
/// impl Object for Hello {
///     type Env = ();
///     type Call = String;
///     type Reply = String;
///     async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> { Ok(Hello) }
///     async fn call(&mut self, ctx: &mut Context, who: String) -> Result<String, BoxError> {
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
    registry: Arc<Registry>,
    /// The alarm driver task, awaited at shutdown.
    driver: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    _owner: Arc<Owner>,
}

/// Shared by every `Runtime` clone; when the last goes, the runtime stops
/// and the namespace registry (whose namespaces hold the store) is
/// cleared, so nothing keeps the store open.
struct Owner {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.registry.clear();
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
        self.namespace_with(name, env, &NamespaceOptions::default())
    }

    /// Registers a namespace with its own settings (idle eviction,
    /// hibernation delay, mailbox bound, event time limit, background
    /// tasks); what `options` leaves unset comes from the runtime's
    /// [`RuntimeOptions`].
    ///
    /// # Errors
    ///
    /// The name is already registered.
    pub fn namespace_with<O: Object>(
        &self,
        name: &str,
        env: O::Env,
        options: &NamespaceOptions,
    ) -> Result<Namespace<O>> {
        let limits = options.resolve(&self.shared.options);
        let inner = Arc::new(NsInner::<O>::new(
            self.shared.clone(),
            name,
            Arc::new(env),
            limits,
        ));
        self.registry.insert(name, inner.clone())?;
        let ns = Namespace::new(inner);
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

    #[cfg(feature = "cluster")]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The runtime's options.
    pub fn options(&self) -> &RuntimeOptions {
        &self.shared.options
    }

    /// Number of live object tasks across all namespaces.
    pub fn live_objects(&self) -> usize {
        self.shared.tasks.len()
    }

    /// Alarms pending across all namespaces.
    pub fn pending_alarms(&self) -> usize {
        self.shared.alarms.pending()
    }

    /// Names of the registered namespaces, sorted.
    pub fn namespace_names(&self) -> Vec<String> {
        self.registry.names()
    }

    #[cfg(feature = "admin")]
    fn namespace_by_name(&self, name: &str) -> Result<Arc<dyn NamespaceDyn>> {
        self.registry
            .get(name)
            .ok_or_else(|| Error::Namespace(name.into(), "not registered"))
    }

    /// State figures: per namespace live and hibernated objects, open
    /// sockets and mailbox depth; pending alarms; bytes stored. Cheap
    /// enough for every metrics scrape (it walks the live objects and
    /// socket tables once).
    pub fn stats(&self) -> RuntimeStats {
        // The registry's lock is let go before any namespace is walked.
        let registered = self.registry.all();
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

    /// Sets the runtime's gauges (see [`crate::METRICS`]) from
    /// [`stats`](Self::stats); call it before rendering the metrics.
    #[cfg(feature = "metrics")]
    pub fn publish_metrics(&self) {
        self.stats().publish();
    }

    /// A page of the objects of a namespace (stored, live or holding
    /// sockets), in id order, starting after the id `after` (hex).
    ///
    /// # Errors
    ///
    /// Unknown namespace, a malformed `after`, or an LMDB read error.
    #[cfg(feature = "admin")]
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
    #[cfg(feature = "admin")]
    pub fn view_object(&self, namespace: &str, id: &str, opts: &ViewOptions) -> Result<ObjectView> {
        self.namespace_by_name(namespace)?.view(id, opts)
    }

    /// A handle that tells how full the store is, for applications that
    /// refuse writes before the store is full (a failed commit resets the
    /// object and says nothing to a socket's peer).
    pub fn store_usage(&self) -> crate::StoreUsage {
        crate::StoreUsage::new(self.shared.store.clone())
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

    /// Makes the next `n` commit groups fail as a broken disk would (the
    /// `testing` feature).
    #[cfg(feature = "testing")]
    pub fn inject_commit_failures(&self, n: u32) {
        self.shared
            .store
            .fail_commits
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// The first step of a graceful stop: refuses new WebSockets
    /// ([`Context::accept_websocket`](crate::Context::accept_websocket)
    /// answers [`WebSocketError::ShuttingDown`](crate::WebSocketError::ShuttingDown)),
    /// closes every accepted one with 1001 ("going away", reason `server
    /// shutting down`), and waits at most `within` for their Close frames to
    /// go out and their close events to reach the objects. Objects need no
    /// code for it: they see an ordinary close.
    ///
    /// Everything else keeps running, so HTTP requests still in flight can
    /// reach their objects and finish; [`shutdown`](Self::shutdown) or
    /// [`shutdown_within`](Self::shutdown_within) comes next. A server's
    /// order is: stop accepting connections, this, drain HTTP, shut down.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> objects::Result<()> {
    /// use std::time::Duration;
    /// let dir = tempfile::tempdir().unwrap();
    /// let rt = objects::Runtime::builder().data_dir(dir.path()).open()?;
    /// // ... stop accepting connections, then:
    /// let closed = rt.close_websockets(Duration::from_secs(10)).await;
    /// assert!(closed.clean);
    /// // ... drain in-flight HTTP requests, then:
    /// let stopped = rt.shutdown_within(Duration::from_secs(30)).await;
    /// assert!(stopped.clean, "{stopped:?}");
    /// # Ok(()) }
    /// ```
    pub async fn close_websockets(&self, within: Duration) -> ShutdownReport {
        self.shared.refuse_sockets.cancel();
        for ns in self.registry.all() {
            ns.close_sockets(1001, "server shutting down");
        }
        // A closed tracker resolves `wait` once empty (sockets accepted
        // after this are refused, or closed at once if they raced it).
        self.shared.socket_tasks.close();
        let clean = tokio::time::timeout(within, self.shared.socket_tasks.wait())
            .await
            .is_ok();
        self.report(clean)
    }

    /// [`shutdown`](Self::shutdown), bounded: waits at most `within` for
    /// in-flight events to finish and commit, sockets to close and the
    /// storage writer to stop. Past it, it returns a report that is not
    /// [`clean`](ShutdownReport::clean), with what was still running; that
    /// work is not waited for (it goes on until the event time limit
    /// resets its object, or the process exits). What was acknowledged is
    /// on disk either way: an event's callers and peers hear of it only
    /// after its commit.
    ///
    /// A handler that never yields, or storage that hangs (a dead disk),
    /// would otherwise keep [`shutdown`](Self::shutdown), and the process,
    /// waiting.
    pub async fn shutdown_within(&self, within: Duration) -> ShutdownReport {
        let clean = tokio::time::timeout(within, self.shutdown()).await.is_ok();
        self.report(clean)
    }

    fn report(&self, clean: bool) -> ShutdownReport {
        ShutdownReport {
            clean,
            objects_running: self.shared.tasks.len(),
            sockets_open: self.shared.socket_tasks.len(),
        }
    }

    /// Stops taking events, lets in-flight events finish (queued ones get
    /// [`Error::ShuttingDown`]), closes every accepted WebSocket with 1001
    /// and waits for the Close frames to go out, then stops the storage
    /// writer. Waits as long as that takes; [`shutdown_within`](Self::shutdown_within)
    /// is the same with a bound.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        for ns in self.registry.all() {
            ns.close_sockets(1001, "server shutting down");
        }
        // Closed trackers resolve `wait` once empty; tasks started after
        // this (a socket accepted mid-shutdown) are still waited for.
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        // Sockets were told to close above; let their Close frames go out.
        self.shared.socket_tasks.close();
        self.shared.socket_tasks.wait().await;
        self.registry.clear();
        let driver = crate::sync::lock(&self.driver).take();
        if let Some(driver) = driver {
            let _ = driver.await;
        }
        self.shared.store.writer.close().await;
    }
}
