//! The single LMDB writer: one thread owns every write transaction (LMDB
//! requires a write transaction to finish on the thread that began it),
//! gathers the batches of many objects and commits them with one fsync
//! (group commit). The queue to it is bounded, so a flood of commits waits
//! instead of growing memory. A group is answered only once a later sync
//! has made its meta page durable (`durability.rs`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use heed::{Env, RwTxn, WithoutTls};
use tokio::sync::{mpsc, oneshot};

use super::StorageError;
use super::durability::Durability;
use super::gather::{self, Gather};
use super::layout;
use super::overlay::Changes;
use super::replication::{self, Copy, Hook, Mark, Received, Replicate, Reply};
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
    Commit(Batch, Reply),
    /// A group from a shard's primary (this node follows the shard).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Received(Received, Reply),
    /// A catch-up copy of a shard, committed alone.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Install(Copy, Reply),
    /// Answered once every job queued before it has committed (or failed).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Barrier(Reply),
    Stop,
}

/// A reserved place in the writer's queue.
pub(crate) struct Place<'a>(mpsc::Permit<'a, Job>);

/// The answer to a commit: resolves once the batch is durable (or failed).
pub(crate) type Done = oneshot::Receiver<Result<(), StorageError>>;

#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
impl Place<'_> {
    /// Hands the batch to the writer.
    pub(crate) fn send(self, batch: Batch) -> Done {
        let (done, wait) = oneshot::channel();
        self.0.send(Job::Commit(batch, done));
        wait
    }

    /// Hands a replicated group to the writer (this node follows its
    /// shard): applied in one transaction with its label.
    pub(crate) fn send_received(self, group: Received) -> Done {
        let (done, wait) = oneshot::channel();
        self.0.send(Job::Received(group, done));
        wait
    }

    /// Resolves once every commit queued before it has committed or
    /// failed (not once durable): what began before is visible after.
    pub(crate) fn send_barrier(self) -> Done {
        let (done, wait) = oneshot::channel();
        self.0.send(Job::Barrier(done));
        wait
    }

    /// Hands a catch-up copy to the writer: installed over what the store
    /// holds of its shard, in one transaction with its label.
    pub(crate) fn send_copy(self, copy: Copy) -> Done {
        let (done, wait) = oneshot::channel();
        self.0.send(Job::Install(copy, done));
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
    hook: Hook,
) -> Result<Writer, StorageError> {
    let (tx, rx) = mpsc::channel(opts.writer_queue.max(1));
    let max_group = opts.max_group.max(1);
    let delay = opts.commit_delay;
    let metrics = WriterMetrics::register();
    #[cfg(feature = "testing")]
    let rec: Recorder = opts.journal.clone();
    #[cfg(not(feature = "testing"))]
    let rec: Recorder = None;
    let work = move || {
        let w = Loop {
            env: &env,
            dbs,
            fail: &fail,
            metrics: &metrics,
            rec: &rec,
            hook: &hook,
        };
        w.run(rx, max_group, delay);
    };
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

/// A committed batch's answer, waiting to be sent: the reply, the object,
/// and the shard group whose release it waits for (replicated shards).
type Answer = (Reply, [u8; 32], Option<(u32, u64)>);

/// The jobs of one commit group.
#[derive(Default)]
struct Group {
    local: Vec<(Batch, Reply)>,
    received: Vec<(Received, Reply)>,
    /// A copy ends the group; it commits alone, after it.
    install: Option<(Copy, Reply)>,
    barriers: Vec<Reply>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.local.is_empty()
            && self.received.is_empty()
            && self.install.is_none()
            && self.barriers.is_empty()
    }

    fn len(&self) -> usize {
        self.local.len() + self.received.len() + usize::from(self.install.is_some())
    }

    /// Takes a job; false for `Stop`.
    fn push(&mut self, job: Job) -> bool {
        match job {
            Job::Commit(b, r) => self.local.push((b, r)),
            Job::Received(g, r) => self.received.push((g, r)),
            Job::Install(c, r) => self.install = Some((c, r)),
            Job::Barrier(r) => self.barriers.push(r),
            Job::Stop => return false,
        }
        true
    }
}

impl gather::Group<Job> for Group {
    fn push(&mut self, job: Job) -> bool {
        Group::push(self, job)
    }

    fn closed(&self, max_group: usize) -> bool {
        self.install.is_some() || self.len() >= max_group
    }
}

/// The shard labels a transaction stored for its local batches.
type Labels = Vec<(u32, Mark)>;

/// The writer thread's fixed parts.
struct Loop<'a> {
    env: &'a Env<WithoutTls>,
    dbs: Dbs,
    fail: &'a AtomicU32,
    metrics: &'a WriterMetrics,
    rec: &'a Recorder,
    hook: &'a Hook,
}

impl Loop<'_> {
    fn hook(&self) -> Option<&dyn Replicate> {
        self.hook.get().map(|h| &**h)
    }

    fn run(&self, mut rx: mpsc::Receiver<Job>, max_group: usize, delay: Duration) {
        let mut durability: Durability<Answer> = Durability::default();
        let gather = Gather::new(delay);
        loop {
            let mut group = Group::default();
            // With answers waiting for a sync, look for more work first: the
            // next group's commit syncs them for free. Only when none is
            // queued does the writer sync explicitly.
            let idle = !durability.needs_sync();
            let job = if !idle {
                match rx.try_recv() {
                    Ok(job) => Some(job),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.sync_waiting(&mut durability);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            } else {
                rx.blocking_recv()
            };
            let mut stop = match job {
                None => true,
                Some(job) => !group.push(job),
            };
            while !stop && group.install.is_none() && group.len() < max_group {
                match rx.try_recv() {
                    Ok(job) => stop = !group.push(job),
                    Err(_) => break,
                }
            }
            // A group that found the writer idle may wait for company
            // (nothing waits on its sync yet; answers that do are not held).
            if idle
                && !stop
                && let Some(g) = &gather
            {
                stop = g.fill(&mut rx, &mut group, max_group);
            }
            if !group.is_empty() {
                self.round(group, &mut durability);
            }
            if stop {
                self.sync_waiting(&mut durability);
                return;
            }
        }
    }

    /// Commits one group (and its copy, if any) and moves the answers on.
    fn round(&self, mut group: Group, durability: &mut Durability<Answer>) {
        let started = std::time::Instant::now();
        let size = group.len();
        let install = group.install.take();
        let mut committed: Vec<Answer> = Vec::with_capacity(group.len());
        let mut failed = 0u64;
        let mut settle = |reply: Reply, id, gate, result: Result<(), StorageError>| match result {
            Ok(()) => committed.push((reply, id, gate)),
            // A failure needs no sync to be told; the caller may have
            // given up (reset, shutdown): nothing to do then.
            Err(e) => {
                failed += 1;
                drop(reply.send(Err(e)));
            }
        };
        if !group.local.is_empty() || !group.received.is_empty() {
            let (local, received) = self.commit_group(&group);
            for ((b, reply), (result, gate)) in group.local.into_iter().zip(local) {
                settle(reply, b.id, gate, result);
            }
            for ((g, reply), result) in group.received.into_iter().zip(received) {
                let id = g.batches.first().map_or([0; 32], |b| b.id);
                settle(reply, id, None, result);
            }
        }
        // Everything queued before the barriers has committed or failed.
        for reply in std::mem::take(&mut group.barriers) {
            let _ = reply.send(Ok(()));
        }
        if let Some((copy, reply)) = install {
            let result = self.install(&copy);
            settle(reply, [0; 32], None, result);
        }
        self.metrics.seconds.record(started.elapsed().as_secs_f64());
        self.metrics.commits.increment(1);
        self.metrics.batch_size.record(size as f64);
        if failed > 0 {
            self.metrics.failures.increment(failed);
        }
        if !committed.is_empty() {
            // A transaction committed, and its data sync made every
            // earlier meta page durable.
            self.answer(durability.committed(committed));
        } else {
            // Nothing committed this round, so nothing was synced.
            self.sync_waiting(durability);
        }
    }

    /// Syncs the whole file if answers wait for it, then sends them. A
    /// failed sync leaves their durability unknown: they are answered with
    /// the error (the objects reset; what LMDB already holds stays, as
    /// after a crash).
    fn sync_waiting(&self, durability: &mut Durability<Answer>) {
        if !durability.needs_sync() {
            return;
        }
        self.metrics.syncs.increment(1);
        match self.env.force_sync() {
            Ok(()) => {
                record!(self.rec, super::journal::Step::Synced);
                self.answer(durability.synced());
            }
            Err(e) => {
                let cause = Arc::new(StorageError::lmdb("sync", e));
                for (done, _, _) in durability.synced() {
                    let _ = done.send(Err(StorageError::CommitFailed(cause.clone())));
                }
            }
        }
    }

    /// Tells each caller its commit is durable; a replicated shard's
    /// callers once replication releases their group.
    fn answer(&self, durable: Vec<Answer>) {
        if durable.is_empty() {
            return;
        }
        record!(
            self.rec,
            super::journal::Step::Answered {
                objects: durable.iter().map(|(_, id, _)| *id).collect(),
            }
        );
        let mut gated: std::collections::BTreeMap<(u32, u64), Vec<Reply>> = Default::default();
        for (done, _, gate) in durable {
            match (gate, self.hook()) {
                (Some(g), Some(_)) => gated.entry(g).or_default().push(done),
                // The caller may have given up (reset, shutdown).
                _ => drop(done.send(Ok(()))),
            }
        }
        if let Some(h) = self.hook() {
            for ((shard, seq), replies) in gated {
                h.durable(shard, seq, replies);
            }
        }
    }

    /// Commits the group in one transaction. If that fails, commits each
    /// batch and each received group alone, so that one bad batch (say,
    /// one that does not fit) fails only its own object. Each local
    /// batch's result comes with the shard group it belongs to, if its
    /// shard is replicated from here.
    #[allow(clippy::type_complexity)]
    fn commit_group(
        &self,
        group: &Group,
    ) -> (
        Vec<(Result<(), StorageError>, Option<(u32, u64)>)>,
        Vec<Result<(), StorageError>>,
    ) {
        let injected = self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            let err = || {
                Err(StorageError::CommitFailed(Arc::new(StorageError::Lmdb {
                    op: "commit",
                    source: "injected failure".into(),
                })))
            };
            return (
                group.local.iter().map(|_| (err(), None)).collect(),
                group.received.iter().map(|_| err()).collect(),
            );
        }
        let local: Vec<&Batch> = group.local.iter().map(|(b, _)| b).collect();
        let received: Vec<&Received> = group.received.iter().map(|(g, _)| g).collect();
        if let Ok(labels) = self.commit(&local, &received) {
            return (
                local
                    .iter()
                    .map(|b| (Ok(()), self.gate(&labels, b)))
                    .collect(),
                received.iter().map(|_| Ok(())).collect(),
            );
        }
        (
            local
                .iter()
                .map(|b| match self.commit_alone(b) {
                    Ok(labels) => (Ok(()), self.gate(&labels, b)),
                    Err(e) => (Err(e), None),
                })
                .collect(),
            received
                .iter()
                .map(|g| self.commit(&[], &[g]).map(drop))
                .collect(),
        )
    }

    /// The shard group a committed local batch waits for, if labelled.
    fn gate(&self, labels: &Labels, b: &Batch) -> Option<(u32, u64)> {
        let shard = self.hook()?.shard(&b.id);
        labels
            .iter()
            .find(|(s, _)| *s == shard)
            .map(|(s, m)| (*s, m.seq))
    }

    /// Commits one batch. If the map is full, space freed by recent
    /// deletes may not be reusable yet: LMDB recycles pages freed by commit
    /// N only from commit N + 2 on, and failed commits do not count. Two
    /// small commits move that along; then one more try.
    fn commit_alone(&self, b: &Batch) -> Result<Labels, StorageError> {
        match self.commit(&[b], &[]) {
            Err(StorageError::Full) => {
                for _ in 0..2 {
                    tick(self.env, self.dbs)?;
                }
                self.commit(&[b], &[])
            }
            r => r,
        }
    }

    /// One transaction: local batches (each replicated shard's get the
    /// shard's next label, stored with them) and received groups (with
    /// their labels).
    fn commit(&self, local: &[&Batch], received: &[&Received]) -> Result<Labels, StorageError> {
        let dbs = self.dbs;
        let mut labels = Labels::new();
        let mut by_shard: std::collections::BTreeMap<u32, Vec<&Batch>> = Default::default();
        if let Some(h) = self.hook() {
            for b in local {
                by_shard.entry(h.shard(&b.id)).or_default().push(b);
            }
        }
        let lmdb = |e| StorageError::lmdb("commit", e);
        let result = (|| -> Result<(), StorageError> {
            let mut wtxn = self.env.write_txn().map_err(lmdb)?;
            if let Some(h) = self.hook() {
                for shard in by_shard.keys() {
                    if let Some(m) = h.label(*shard) {
                        labels.push((*shard, m));
                        replication::put_label(dbs, &mut wtxn, *shard, m).map_err(lmdb)?;
                    }
                }
            }
            for b in local {
                apply(dbs, &mut wtxn, b).map_err(lmdb)?;
            }
            for g in received {
                // A received group applies only on top of the group it
                // follows, as this store holds it.
                if let Some(prev) = g.prev {
                    let held = replication::get_label(dbs, &wtxn, g.shard).map_err(lmdb)?;
                    if held != prev {
                        return Err(StorageError::Replication(format!(
                            "a group of shard {} follows {prev:?}, but this store holds {held:?}",
                            g.shard
                        )));
                    }
                }
                for b in &g.batches {
                    apply(dbs, &mut wtxn, b).map_err(lmdb)?;
                }
                replication::put_label(dbs, &mut wtxn, g.shard, g.mark).map_err(lmdb)?;
            }
            wtxn.commit().map_err(lmdb)
        })();
        if let Err(e) = result {
            if let Some(h) = self.hook() {
                for (shard, m) in labels.iter().rev() {
                    h.retract(*shard, *m);
                }
            }
            return Err(e);
        }
        record!(
            self.rec,
            super::journal::Step::Committed {
                objects: local
                    .iter()
                    .map(|b| b.id)
                    .chain(received.iter().flat_map(|g| g.batches.iter().map(|b| b.id)))
                    .collect(),
            }
        );
        if let Some(h) = self.hook() {
            for (shard, m) in &labels {
                h.committed(*shard, *m, &by_shard[shard]);
            }
        }
        Ok(labels)
    }

    /// Installs a catch-up copy in one transaction, with its label.
    fn install(&self, copy: &Copy) -> Result<(), StorageError> {
        let Some(h) = self.hook() else {
            return Err(StorageError::Closed);
        };
        let pick = |id: &[u8; 32]| h.shard(id) == copy.shard;
        let result = (|| -> heed::Result<()> {
            let mut wtxn = self.env.write_txn()?;
            replication::install(self.dbs, &mut wtxn, &pick, &copy.records)?;
            replication::put_label(self.dbs, &mut wtxn, copy.shard, copy.mark)?;
            wtxn.commit()
        })();
        result.map_err(|e| StorageError::lmdb("install a copy", e))?;
        record!(
            self.rec,
            super::journal::Step::Committed {
                objects: Vec::new()
            }
        );
        Ok(())
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
