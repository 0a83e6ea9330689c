//! The single LMDB writer: one thread owns every write transaction (LMDB
//! requires a write transaction to finish on the thread that began it),
//! gathers the batches of many objects and commits them with one fsync
//! (group commit). The queue to it is bounded, so a flood of commits waits
//! instead of growing memory.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use heed::{Env, RwTxn, WithoutTls};
use tokio::sync::{mpsc, oneshot};

use super::StorageError;
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

pub(crate) fn spawn(
    env: Env<WithoutTls>,
    dbs: Dbs,
    opts: &StoreOptions,
    fail: Arc<AtomicU32>,
) -> Result<Writer, StorageError> {
    let (tx, rx) = mpsc::channel(opts.writer_queue.max(1));
    let max_group = opts.max_group.max(1);
    let metrics = WriterMetrics::register();
    let work = move || run(&env, dbs, rx, max_group, &fail, &metrics);
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
    pub(crate) fn close_blocking(&self) {
        // Full or closed: the thread is busy with nothing of ours, or gone.
        let _ = self.tx.try_send(Job::Stop);
        let handle = crate::sync::lock(&self.thread).take();
        if let Some(Thread::Std(h)) = handle {
            let _ = h.join();
        }
    }
}

fn run(
    env: &Env<WithoutTls>,
    dbs: Dbs,
    mut rx: mpsc::Receiver<Job>,
    max_group: usize,
    fail: &AtomicU32,
    metrics: &WriterMetrics,
) {
    let mut group: Vec<(Batch, oneshot::Sender<Result<(), StorageError>>)> = Vec::new();
    loop {
        let mut stop = false;
        match rx.blocking_recv() {
            None | Some(Job::Stop) => return,
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
        let results = commit_group(env, dbs, &group, fail);
        metrics.seconds.record(started.elapsed().as_secs_f64());
        metrics.commits.increment(1);
        metrics.batch_size.record(group.len() as f64);
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            metrics.failures.increment(failed as u64);
        }
        for ((_, done), result) in group.drain(..).zip(results) {
            // The caller may have given up (reset, shutdown); nothing to do.
            let _ = done.send(result);
        }
        if stop {
            return;
        }
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
    match commit(env, dbs, all()) {
        Ok(()) => group.iter().map(|_| Ok(())).collect(),
        Err(_) => group
            .iter()
            .map(|(b, _)| commit_alone(env, dbs, b))
            .collect(),
    }
}

/// Commits one batch. If the map is full, space freed by recent deletes may
/// not be reusable yet: LMDB recycles pages freed by commit N only from
/// commit N + 2 on, and failed commits do not count. Two small commits move
/// that along; then one more try.
fn commit_alone(env: &Env<WithoutTls>, dbs: Dbs, b: &Batch) -> Result<(), StorageError> {
    match commit(env, dbs, std::iter::once(b)) {
        Err(StorageError::Full) => {
            for _ in 0..2 {
                tick(env, dbs)?;
            }
            commit(env, dbs, std::iter::once(b))
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
    batches: impl Iterator<Item = &'a Batch>,
) -> Result<(), StorageError> {
    let mut wtxn = env
        .write_txn()
        .map_err(|e| StorageError::lmdb("commit", e))?;
    for b in batches {
        apply(dbs, &mut wtxn, b).map_err(|e| StorageError::lmdb("commit", e))?;
    }
    wtxn.commit().map_err(|e| StorageError::lmdb("commit", e))
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
