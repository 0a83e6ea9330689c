//! The single LMDB writer: one thread owns every write transaction (LMDB
//! requires a write transaction to finish on the thread that began it),
//! gathers the batches of many objects and commits them with one fsync
//! (group commit). The queue to it is bounded, so a flood of commits waits
//! instead of growing memory. A group is answered only once a later sync
//! has made its meta page durable (`durability.rs`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use heed::{Env, RwTxn, WithoutTls};
use tokio::sync::{mpsc, oneshot};

use super::StorageError;
use super::durability::Durability;
use super::layout;
use super::overlay::Changes;
use super::store::{Dbs, StoreOptions};
use crate::metrics::WriterMetrics;

/// One object's changes, committed atomically.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) id: [u8; 32],
    pub(crate) namespace: Arc<str>,
    pub(crate) name: Option<Arc<str>>,
    /// Write the catalog record (the object's first data, or after a clear).
    pub(crate) record_catalog: bool,
    pub(crate) changes: Changes,
}

enum Job {
    Commit(Batch, oneshot::Sender<Result<(), StorageError>>),
    Stop,
}

/// A reserved place in the writer's queue.
pub(crate) struct Place<'a>(mpsc::Permit<'a, Job>);

/// The answer to a commit: resolves once the batch is durable (or failed).
pub(crate) type Done = oneshot::Receiver<Result<(), StorageError>>;

impl Place<'_> {
    /// Hands the batch to the writer.
    pub(crate) fn send(self, batch: Batch) -> Done {
        let (done, wait) = oneshot::channel();
        self.0.send(Job::Commit(batch, done));
        wait
    }
}

/// Where the writer loop runs.
enum Thread {
    /// On tokio's blocking pool (inside a runtime). A running blocking task
    /// also keeps paused-time tests from jumping the clock while a commit is
    /// on disk, as tokio does not auto-advance time while one runs.
    Blocking(tokio::task::JoinHandle<()>),
    /// A plain thread (offline tools without a runtime).
    Std(JoinHandle<()>),
}

/// Handle to the writer thread.
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
    thread: Mutex<Option<Thread>>,
}

/// Records a step in the test journal (the `testing` feature); nothing
/// otherwise.
macro_rules! record {
    ($rec:expr, $step:expr) => {
        #[cfg(feature = "testing")]
        if let Some(j) = $rec {
            j.push($step);
        }
        #[cfg(not(feature = "testing"))]
        let _: &$crate::storage::Recorder = $rec;
    };
}
pub(crate) use record;

/// Where the writer records what it does: a test journal with the
/// `testing` feature.
#[cfg(feature = "testing")]
pub(crate) type Recorder = Option<Arc<super::journal::Journal>>;
/// Nothing is recorded without the `testing` feature.
#[cfg(not(feature = "testing"))]
pub(crate) type Recorder = Option<std::convert::Infallible>;

pub(crate) fn spawn(
    env: Env<WithoutTls>,
    dbs: Dbs,
    opts: &StoreOptions,
    fail: Arc<AtomicU32>,
) -> Result<Writer, StorageError> {
    let (tx, rx) = mpsc::channel(opts.writer_queue.max(1));
    let max_group = opts.max_group.max(1);
    let metrics = WriterMetrics::register();
    #[cfg(feature = "testing")]
    let rec: Recorder = opts.journal.clone();
    #[cfg(not(feature = "testing"))]
    let rec: Recorder = None;
    let work = move || run(&env, dbs, rx, max_group, &fail, &metrics, &rec);
    let thread = match tokio::runtime::Handle::try_current() {
        Ok(rt) => Thread::Blocking(rt.spawn_blocking(work)),
        Err(_) => Thread::Std(
            std::thread::Builder::new()
                .name("objects-lmdb-writer".into())
                .spawn(work)
                .map_err(|e| StorageError::Io {
                    context: "spawning the writer thread".into(),
                    source: e,
                })?,
        ),
    };
    Ok(Writer {
        tx,
        thread: Mutex::new(Some(thread)),
    })
}

impl Writer {
    /// Waits for room in the writer's queue. Cancel-safe: nothing is handed
    /// over until [`Place::send`].
    pub(crate) async fn reserve(&self) -> Result<Place<'_>, StorageError> {
        self.tx
            .reserve()
            .await
            .map(Place)
            .map_err(|_| StorageError::Closed)
    }

    /// Finishes queued commits and stops the thread.
    pub(crate) async fn close(&self) {
        // A closed channel means the thread is gone already.
        let _ = self.tx.send(Job::Stop).await;
        let handle = crate::sync::lock(&self.thread).take();
        match handle {
            Some(Thread::Blocking(h)) => {
                let _ = h.await;
            }
            Some(Thread::Std(h)) => {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
            None => {}
        }
    }

    /// Stops the thread without an async runtime (offline tools, which
    /// queue nothing): joins a plain thread, so the environment is released
    /// when this returns; a blocking-pool task is only told to stop.
    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(crate) fn close_blocking(&self) {
        // Full or closed: the thread is busy with nothing of ours, or gone.
        let _ = self.tx.try_send(Job::Stop);
        let handle = crate::sync::lock(&self.thread).take();
        if let Some(Thread::Std(h)) = handle {
            let _ = h.join();
        }
    }
}

/// A committed batch's answer, waiting to be sent.
type Answer = (oneshot::Sender<Result<(), StorageError>>, [u8; 32]);

fn run(
    env: &Env<WithoutTls>,
    dbs: Dbs,
    mut rx: mpsc::Receiver<Job>,
    max_group: usize,
    fail: &AtomicU32,
    metrics: &WriterMetrics,
    rec: &Recorder,
) {
    let mut group: Vec<(Batch, oneshot::Sender<Result<(), StorageError>>)> = Vec::new();
    let mut durability: Durability<Answer> = Durability::default();
    loop {
        let mut stop = false;
        // With answers waiting for a sync, look for more work first: the
        // next group's commit syncs them for free. Only when none is queued
        // does the writer sync explicitly.
        let job = if durability.needs_sync() {
            match rx.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::error::TryRecvError::Empty) => {
                    sync_waiting(env, &mut durability, metrics, rec);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        } else {
            rx.blocking_recv()
        };
        match job {
            None | Some(Job::Stop) => {
                sync_waiting(env, &mut durability, metrics, rec);
                return;
            }
            Some(Job::Commit(b, done)) => group.push((b, done)),
        }
        while group.len() < max_group {
            match rx.try_recv() {
                Ok(Job::Commit(b, done)) => group.push((b, done)),
                Ok(Job::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let results = commit_group(env, dbs, &group, fail, rec);
        metrics.seconds.record(started.elapsed().as_secs_f64());
        metrics.commits.increment(1);
        metrics.batch_size.record(group.len() as f64);
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            metrics.failures.increment(failed as u64);
        }
        let mut committed = Vec::with_capacity(group.len());
        for ((b, done), result) in group.drain(..).zip(results) {
            match result {
                Ok(()) => committed.push((done, b.id)),
                // A failure needs no sync to be told; the caller may have
                // given up (reset, shutdown): nothing to do then.
                Err(e) => drop(done.send(Err(e))),
            }
        }
        if !committed.is_empty() {
            // A transaction committed, and its data sync made every
            // earlier meta page durable.
            answer(durability.committed(committed), rec);
        } else {
            // Nothing committed this round, so nothing was synced.
            sync_waiting(env, &mut durability, metrics, rec);
        }
        if stop {
            sync_waiting(env, &mut durability, metrics, rec);
            return;
        }
    }
}

/// Syncs the whole file if answers wait for it, then sends them. A failed
/// sync leaves their durability unknown: they are answered with the error
/// (the objects reset; what LMDB already holds stays, as after a crash).
fn sync_waiting(
    env: &Env<WithoutTls>,
    durability: &mut Durability<Answer>,
    metrics: &WriterMetrics,
    rec: &Recorder,
) {
    if !durability.needs_sync() {
        return;
    }
    metrics.syncs.increment(1);
    match env.force_sync() {
        Ok(()) => {
            record!(rec, super::journal::Step::Synced);
            answer(durability.synced(), rec);
        }
        Err(e) => {
            let cause = Arc::new(StorageError::lmdb("sync", e));
            for (done, _) in durability.synced() {
                let _ = done.send(Err(StorageError::CommitFailed(cause.clone())));
            }
        }
    }
}

/// Tells each caller its commit is durable.
fn answer(durable: Vec<Answer>, rec: &Recorder) {
    if durable.is_empty() {
        return;
    }
    record!(
        rec,
        super::journal::Step::Answered {
            objects: durable.iter().map(|(_, id)| *id).collect(),
        }
    );
    for (done, _) in durable {
        // The caller may have given up (reset, shutdown); nothing to do.
        let _ = done.send(Ok(()));
    }
}

/// Commits the group in one transaction. If that fails, commits each batch
/// alone so that one bad batch (say, one that does not fit) fails only its
/// own object.
fn commit_group(
    env: &Env<WithoutTls>,
    dbs: Dbs,
    group: &[(Batch, oneshot::Sender<Result<(), StorageError>>)],
    fail: &AtomicU32,
    rec: &Recorder,
) -> Vec<Result<(), StorageError>> {
    let injected = fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if injected {
        return group
            .iter()
            .map(|_| {
                Err(StorageError::CommitFailed(Arc::new(StorageError::Lmdb {
                    op: "commit",
                    source: "injected failure".into(),
                })))
            })
            .collect();
    }
    let all = || group.iter().map(|(b, _)| b);
    match commit(env, dbs, all(), rec) {
        Ok(()) => group.iter().map(|_| Ok(())).collect(),
        Err(_) => group
            .iter()
            .map(|(b, _)| commit_alone(env, dbs, b, rec))
            .collect(),
    }
}

/// Commits one batch. If the map is full, space freed by recent deletes may
/// not be reusable yet: LMDB recycles pages freed by commit N only from
/// commit N + 2 on, and failed commits do not count. Two small commits move
/// that along; then one more try.
fn commit_alone(
    env: &Env<WithoutTls>,
    dbs: Dbs,
    b: &Batch,
    rec: &Recorder,
) -> Result<(), StorageError> {
    match commit(env, dbs, std::iter::once(b), rec) {
        Err(StorageError::Full) => {
            for _ in 0..2 {
                tick(env, dbs)?;
            }
            commit(env, dbs, std::iter::once(b), rec)
        }
        r => r,
    }
}

fn tick(env: &Env<WithoutTls>, dbs: Dbs) -> Result<(), StorageError> {
    let mut wtxn = env
        .write_txn()
        .map_err(|e| StorageError::lmdb("commit", e))?;
    let n = dbs
        .meta
        .get(&wtxn, b"tick")
        .map_err(|e| StorageError::lmdb("commit", e))?
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map_or(0, u64::from_be_bytes);
    dbs.meta
        .put(&mut wtxn, b"tick", &(n.wrapping_add(1)).to_be_bytes())
        .map_err(|e| StorageError::lmdb("commit", e))?;
    wtxn.commit().map_err(|e| StorageError::lmdb("commit", e))
}

fn commit<'a>(
    env: &Env<WithoutTls>,
    dbs: Dbs,
    batches: impl Iterator<Item = &'a Batch> + Clone,
    rec: &Recorder,
) -> Result<(), StorageError> {
    let mut wtxn = env
        .write_txn()
        .map_err(|e| StorageError::lmdb("commit", e))?;
    for b in batches.clone() {
        apply(dbs, &mut wtxn, b).map_err(|e| StorageError::lmdb("commit", e))?;
    }
    wtxn.commit().map_err(|e| StorageError::lmdb("commit", e))?;
    record!(
        rec,
        super::journal::Step::Committed {
            objects: batches.map(|b| b.id).collect(),
        }
    );
    Ok(())
}

fn apply(dbs: Dbs, wtxn: &mut RwTxn<'_>, b: &Batch) -> heed::Result<()> {
    let id = &b.id;
    let c = &b.changes;
    if c.cleared {
        let hi = super::list::successor(id);
        let lo: &[u8] = id;
        match &hi {
            Some(hi) => {
                dbs.data.delete_range(
                    wtxn,
                    &(
                        std::ops::Bound::Included(lo),
                        std::ops::Bound::Excluded(hi.as_slice()),
                    ),
                )?;
            }
            None => {
                dbs.data.delete_range(
                    wtxn,
                    &(std::ops::Bound::Included(lo), std::ops::Bound::Unbounded),
                )?;
            }
        }
        dbs.catalog.delete(wtxn, id)?;
    }
    let mut wrote = false;
    for (k, v) in &c.writes {
        let key = layout::data_key(id, k);
        match v {
            Some(v) => {
                dbs.data.put(wtxn, &key, v)?;
                wrote = true;
            }
            None => {
                dbs.data.delete(wtxn, &key)?;
            }
        }
    }
    // An object is catalogued once it stores anything: data or an alarm.
    if (wrote || matches!(c.alarm, Some(Some(_)))) && b.record_catalog {
        let rec = layout::catalog_record(&b.namespace, b.name.as_deref());
        dbs.catalog.put(wtxn, id, &rec)?;
    }
    if let Some(alarm) = c.alarm {
        let old = dbs
            .alarms
            .get(wtxn, id)?
            .and_then(layout::parse_alarm_record)
            .map(|(t, _)| t);
        if let Some(t) = old {
            dbs.alarm_index
                .delete(wtxn, &layout::alarm_index_key(t, id))?;
        }
        match alarm {
            Some(t) => {
                dbs.alarms
                    .put(wtxn, id, &layout::alarm_record(t, &b.namespace))?;
                dbs.alarm_index
                    .put(wtxn, &layout::alarm_index_key(t, id), &[])?;
            }
            None => {
                dbs.alarms.delete(wtxn, id)?;
            }
        }
    }
    Ok(())
}
