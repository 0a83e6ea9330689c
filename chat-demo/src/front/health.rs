//! `/healthz` and `/readyz`, for process supervisors and load balancers.
//!
//! `/healthz` answers 200 while the process serves HTTP at all. `/readyz`
//! answers 200 only when a write to the data dir commits (so a full disk, a
//! full LMDB map or a read-only file system shows) and the server is not
//! shutting down; otherwise 503 with the reason. The write goes through an
//! object like any chat write, so it tests the same path: the runtime's
//! mailbox, the writer thread, the fsync.
//!
//! On a cluster node ([`NodeHealth`]) `/readyz` also answers 503 until the
//! node knows an owner for every shard (at start, before every node has
//! claimed its shards and this one has read the claims: a room or rate
//! limiter on an unknown shard would answer "unavailable"), and the probe
//! object is one whose shard this node serves, so the write tests this
//! node's own data dir.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use objects::{Context, Namespace, Object, ObjectId, Runtime};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{AppState, text};

/// Name of the probe's namespace in the data dir.
const HEALTH: &str = "health";
/// How long one verdict is reused: probes from several balancers, or a
/// flood of requests, cost at most one commit per second.
const VERDICT_TTL: Duration = Duration::from_secs(1);
/// How long a probe may take before the server counts as not ready.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The object `/readyz` writes to: one key, rewritten on each probe.
#[derive(Debug)]
pub(crate) struct HealthProbe;

impl Object for HealthProbe {
    type Env = ();
    /// The time of the probe, in ms since the epoch (what gets written).
    type Call = u64;
    type Reply = ();

    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, objects::BoxError> {
        Ok(HealthProbe)
    }

    /// Writes the probe time; the reply leaves only once it is durable.
    async fn call(&mut self, ctx: &mut Context, now_ms: u64) -> Result<(), objects::BoxError> {
        ctx.storage().put("last-probe-ms", &now_ms)?;
        Ok(())
    }
}

/// What `/readyz` asks of a cluster node (chat-demo's feature `cluster`).
pub trait NodeHealth: Send + Sync + std::fmt::Debug {
    /// Why this node cannot route every object yet, if it cannot.
    fn not_ready(&self) -> Option<String>;
    /// The cluster's number of shards.
    fn shards(&self) -> u32;
    /// The shards this node serves now.
    fn serving(&self) -> Vec<u32>;
    /// The shard of object `id`.
    fn shard_of(&self, id: &ObjectId) -> u32;
}

/// Probe names tried per shard of the cluster when looking for one this
/// node serves: a node serving one shard of N misses it among 32·N names
/// with probability about e^-32. The name found is kept while its shard
/// stays here.
const PROBE_NAMES_PER_SHARD: u64 = 32;

/// What `/readyz` knows: the probe object, whether shutdown began, and the
/// last verdict.
#[derive(Debug)]
pub(super) struct Readiness {
    probe: Namespace<HealthProbe>,
    /// Set on a cluster node.
    node: OnceLock<Arc<dyn NodeHealth>>,
    /// On a cluster node: the probe object's name, one of this node's
    /// shards (found once, kept while the shard stays here).
    probe_name: std::sync::Mutex<Option<String>>,
    shutting_down: AtomicBool,
    /// The last verdict and when it was reached. A tokio mutex, held across
    /// the probe on purpose: concurrent `/readyz` requests wait for the one
    /// probe in flight and share its verdict instead of each writing.
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    pub(super) fn new(rt: &Runtime) -> objects::Result<Readiness> {
        Ok(Readiness {
            probe: rt.namespace::<HealthProbe>(HEALTH, ())?,
            node: OnceLock::new(),
            probe_name: std::sync::Mutex::new(None),
            shutting_down: AtomicBool::new(false),
            last: Mutex::new(None),
        })
    }

    pub(super) fn set_node(&self, node: Arc<dyn NodeHealth>) {
        let _ = self.node.set(node);
    }

    pub(super) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// `Ok` when ready, else why not.
    async fn check(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        let mut last = self.last.lock().await;
        if let Some((at, verdict)) = last.as_ref()
            && at.elapsed() < VERDICT_TTL
        {
            return verdict.clone();
        }
        let verdict = match self.node.get().and_then(|n| n.not_ready()) {
            Some(reason) => Err(reason),
            None => self.probe_storage().await,
        };
        *last = Some((Instant::now(), verdict.clone()));
        verdict
    }

    async fn probe_storage(&self) -> Result<(), String> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let name = match self.node.get() {
            None => "readyz".to_owned(),
            // A probe object whose shard is this node's; a node that
            // serves no shard (it joined after the shards were placed)
            // runs no object, so there is no write of its own to test.
            Some(node) => match self.local_probe(node.as_ref()) {
                Some(name) => name,
                None => return Ok(()),
            },
        };
        let call = self.probe.get_by_name(&name).call(now_ms);
        match tokio::time::timeout(PROBE_TIMEOUT, call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(objects::Error::ShuttingDown)) => Err("shutting down".into()),
            Ok(Err(error)) => Err(format!("storage is not writable: {error}")),
            Err(_) => Err(format!(
                "storage did not commit a write within {PROBE_TIMEOUT:?}"
            )),
        }
    }
}

impl Readiness {
    /// A probe name whose object this node runs, if it runs any shard.
    fn local_probe(&self, node: &dyn NodeHealth) -> Option<String> {
        let serving: std::collections::HashSet<u32> = node.serving().into_iter().collect();
        let here = |name: &str| serving.contains(&node.shard_of(&self.probe.id_from_name(name)));
        let mut kept = self
            .probe_name
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !kept.as_deref().is_some_and(here) && !serving.is_empty() {
            *kept = (0..u64::from(node.shards()) * PROBE_NAMES_PER_SHARD)
                .map(|k| format!("readyz-{k}"))
                .find(|name| here(name));
        }
        kept.clone().filter(|name| here(name))
    }
}

/// `GET /healthz`: the process is up and serving HTTP.
pub(super) async fn healthz() -> Response {
    text(StatusCode::OK, "ok")
}

/// `GET /readyz`: 200 `ready`, or 503 with the reason.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match state.readiness.check().await {
        Ok(()) => text(StatusCode::OK, "ready"),
        Err(reason) => {
            tracing::debug!(%reason, "not ready");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {reason}"),
            )
        }
    }
}
