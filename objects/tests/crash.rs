//! Crash test (conformance statement 1 across a real crash): a child
//! process writes batches in a loop and reports each acknowledged one; the
//! parent kills it with SIGKILL at a pseudo-random point, reopens the data
//! dir and checks that every batch is all-or-nothing and every acknowledged
//! batch is there.
//!
//! The child is this test binary run again on the `crash_child` test, which
//! does nothing unless `CHILD_DIR_ENV` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use objects::BoxError;
use objects::{Context, ListOptions, Object, Result, Runtime};
use serde::{Deserialize, Serialize};

/// Set in the child: the data dir to write to.
const CHILD_DIR_ENV: &str = "OBJECTS_CRASH_CHILD_DIR";
/// Set in the child: the first batch number to write.
const CHILD_START_ENV: &str = "OBJECTS_CRASH_CHILD_START";
/// Keys per batch; one event writes them all.
const KEYS_PER_BATCH: u64 = 16;
/// Objects the child writes to concurrently (so commits carry the batches
/// of several objects at once).
const WRITERS: u64 = 3;
/// Batches a child writes at most (it is killed long before).
const CHILD_MAX_BATCHES: u64 = 100_000;
const ROUNDS: u64 = 5;
/// The seed of the kill points; change it to explore other schedules.
const SEED: u64 = 0x0b1e_c75e_ed00_0001;
/// Batch numbers of round r start at r * ROUND_STRIDE.
const ROUND_STRIDE: u64 = 1_000_000;

struct Writer;

#[derive(Serialize, Deserialize, Debug)]
enum Call {
    /// Put `batch{i}/k{j}` = i for every j.
    Write(u64),
    /// Every (key, value) stored.
    Scan,
}

#[derive(Serialize, Deserialize, Debug)]
enum Reply {
    Written,
    Entries(Vec<(String, u64)>),
}

impl Object for Writer {
    type Env = ();
    type Call = Call;
    type Reply = Reply;

    async fn new(_ctx: &mut Context, _env: Arc<()>) -> Result<Self, BoxError> {
        Ok(Writer)
    }

    async fn call(&mut self, ctx: &mut Context, call: Call) -> Result<Reply, BoxError> {
        let s = ctx.storage();
        match call {
            Call::Write(i) => {
                for j in 0..KEYS_PER_BATCH {
                    s.put(&format!("batch{i}/k{j}"), &i)?;
                }
                Ok(Reply::Written)
            }
            Call::Scan => Ok(Reply::Entries(s.list(&ListOptions::new())?)),
        }
    }
}

fn writer_name(w: u64) -> String {
    format!("w{w}")
}

/// The child: writes batches from `CHILD_START_ENV` on, printing
/// `acked {i}` once batch i's reply arrived (the output gate: it is
/// durable). Runs until killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let start: u64 = std::env::var(CHILD_START_ENV)
        .expect("start env")
        .parse()
        .expect("start number");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio.block_on(async move {
        let rt = Runtime::builder()
            .data_dir(&dir)
            .open()
            .expect("open runtime");
        let ns = rt.namespace::<Writer>("crash", ()).expect("namespace");
        let next = Arc::new(AtomicU64::new(start));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let stub = ns.get_by_name(&writer_name(w));
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= start + CHILD_MAX_BATCHES {
                        return;
                    }
                    stub.call(Call::Write(i)).await.expect("write");
                    let mut out = std::io::stdout().lock();
                    // The parent has gone: nothing left to do.
                    if writeln!(out, "acked {i}")
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        std::process::exit(0);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer task");
        }
        rt.shutdown().await;
    });
}

/// Kills and reaps the child if the parent panics first.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small deterministic generator (xorshift64*), seeded per test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Runs a child from `start`, kills it after `kill_after` acks, and returns
/// every batch it acknowledged (including acks printed before the kill
/// landed).
fn run_child(dir: &Path, start: u64, kill_after: u64, log: &Path) -> BTreeSet<u64> {
    let exe = std::env::current_exe().expect("current exe");
    let stderr = std::fs::File::create(log).expect("child log");
    let child = Command::new(exe)
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_START_ENV, start.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn child");
    let mut child = Reap(child);
    let stdout = child.0.stdout.take().expect("child stdout");
    let mut acked = BTreeSet::new();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child stdout");
        // libtest may print "test crash_child ... " on the same line.
        let Some((_, n)) = line.rsplit_once("acked ") else {
            continue;
        };
        acked.insert(n.trim().parse::<u64>().expect("batch number"));
        if !killed && acked.len() as u64 >= kill_after {
            child.0.kill().expect("SIGKILL the child");
            killed = true;
        }
    }
    let status = child.0.wait().expect("wait for child");
    let log = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        killed,
        "the child stopped after {} acks, before the kill ({status}); its stderr:\n{log}",
        acked.len()
    );
    assert!(!status.success(), "the child was killed, not finished");
    acked
}

/// Reads every batch back in-process: batch number to the values of its
/// keys, checking each key belongs to its batch.
fn stored_batches(dir: &Path) -> BTreeMap<u64, Vec<u64>> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio.block_on(async {
        let rt = Runtime::builder()
            .data_dir(dir)
            .open()
            .expect("reopen after the crash");
        let ns = rt.namespace::<Writer>("crash", ()).expect("namespace");
        let mut batches: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut owner: BTreeMap<u64, u64> = BTreeMap::new();
        for w in 0..WRITERS {
            let Reply::Entries(entries) = ns
                .get_by_name(&writer_name(w))
                .call(Call::Scan)
                .await
                .expect("scan")
            else {
                panic!("scan returned something else");
            };
            for (key, value) in entries {
                let (batch, k) = key
                    .strip_prefix("batch")
                    .and_then(|rest| rest.split_once("/k"))
                    .unwrap_or_else(|| panic!("unexpected key {key:?}"));
                let batch: u64 = batch.parse().expect("batch number");
                let k: u64 = k.parse().expect("key number");
                assert!(k < KEYS_PER_BATCH, "{key}");
                assert_eq!(
                    *owner.entry(batch).or_insert(w),
                    w,
                    "batch {batch} in two objects"
                );
                batches.entry(batch).or_default().push(value);
            }
        }
        drop(ns);
        rt.shutdown().await;
        batches
    })
}

// Statement 1 across SIGKILL: five rounds on one data dir, each killed
// after a different pseudo-random number of acks.
#[test]
fn acked_batches_survive_sigkill_and_batches_are_atomic() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(SEED);
    let mut acked_so_far: BTreeSet<u64> = BTreeSet::new();
    let mut present_so_far: BTreeSet<u64> = BTreeSet::new();
    for round in 0..ROUNDS {
        let kill_after = 5 + rng.next() % 150;
        let start = round * ROUND_STRIDE;
        let log = logs.path().join(format!("child-{round}.log"));
        let acked = run_child(dir.path(), start, kill_after, &log);
        assert!(acked.len() as u64 >= kill_after);
        acked_so_far.extend(&acked);

        let batches = stored_batches(dir.path());
        for (batch, values) in &batches {
            assert_eq!(
                values.len() as u64,
                KEYS_PER_BATCH,
                "round {round}: batch {batch} is torn: {} of {KEYS_PER_BATCH} keys",
                values.len()
            );
            assert!(
                values.iter().all(|v| v == batch),
                "round {round}: batch {batch} holds values {values:?}"
            );
        }
        let present: BTreeSet<u64> = batches.keys().copied().collect();
        let missing: Vec<_> = acked_so_far.difference(&present).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged batches lost: {missing:?}"
        );
        let lost: Vec<_> = present_so_far.difference(&present).collect();
        assert!(lost.is_empty(), "round {round}: batches vanished: {lost:?}");
        // Batches that appeared this round without an ack were in flight at
        // the kill: at most one per writer, all from this round.
        let unacked: Vec<u64> = present
            .difference(&acked_so_far)
            .filter(|b| !present_so_far.contains(b))
            .copied()
            .collect();
        assert!(
            unacked.len() as u64 <= WRITERS,
            "round {round}: more unacknowledged batches than writers: {unacked:?}"
        );
        assert!(
            unacked
                .iter()
                .all(|b| (start..start + ROUND_STRIDE).contains(b)),
            "round {round}: {unacked:?}"
        );
        println!(
            "round {round}: killed after {kill_after} acks; {} acked, {} batches stored, {} in flight at the kill",
            acked.len(),
            present.len(),
            unacked.len()
        );
        present_so_far = present;
    }
}
