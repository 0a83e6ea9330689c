//! `replicated_commit`: a call whose event writes one key, answered once
//! its commit is durable: on one node alone (R = 0), then with the shard
//! replicated to a second node (R = 1: durable there too before the
//! answer), measured side by side in one process on loopback, beside one
//! `fdatasync` of a small write and a bare QUIC round trip on this machine.
//!
//! ```text
//! cargo run --release -p benches --features cluster --bin replicated_commit -- --calls 2000
//! ```
//!
//! Starts a real etcd (Debian's `etcd-server`) on free loopback ports in a
//! temp dir and two nodes (`a`, `b`), each with its own runtime, data dir
//! and QUIC endpoint. The goal it checks against: replicated ≤ local + two
//! loopback round trips + one follower fsync.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use benches::cluster::{WARM_UP, bare_quic, report, timed_calls};
use clap::Parser;
use objects::{BoxError, ClusterCa, Context, Object};

/// Replicated against local commit latency (loopback).
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Measured calls of each kind (after 500 of warm-up).
    #[arg(long, default_value_t = 2_000)]
    calls: usize,
}

/// Counts its calls in storage: each call commits one write.
struct Counter(u64);

impl Object for Counter {
    type Env = ();
    type Call = ();
    type Reply = u64;
    async fn new(ctx: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
        Ok(Counter(ctx.storage().get("n")?.unwrap_or(0)))
    }
    async fn call(&mut self, ctx: &mut Context, (): ()) -> Result<u64, BoxError> {
        self.0 += 1;
        ctx.storage().put("n", &self.0)?;
        Ok(self.0)
    }
}

/// A 64-byte write and `fdatasync` of a file in a temp dir, `n` times.
fn fdatasync(n: usize) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    let mut f = std::fs::File::create(dir.path().join("sync"))?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n + WARM_UP {
        let t = Instant::now();
        f.write_all(&[7u8; 64])?;
        f.sync_data()?;
        if i >= WARM_UP {
            times.push(t.elapsed());
        }
    }
    Ok(times)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let etcd = benches::cluster::etcd().await?;
    let ca = ClusterCa::generate()?;
    let sync = report("fdatasync of 64 bytes", fdatasync(args.calls)?);
    let rtt = report("bare QUIC round trip", bare_quic(&ca, args.calls).await?);

    let node =
        |name| benches::cluster::node::<Counter>(name, &["a", "b"], 8, &etcd, &ca, "counters", ());
    let a = node("a").await?;
    let b = node("b").await?;
    benches::cluster::claimed(&[&a.cluster, &b.cluster]).await?;
    // An object a owns: calls from a are local.
    let owners = a.cluster.status().owners;
    let name = (0..1000)
        .map(|k| format!("c{k}"))
        .find(|n| {
            let shard = a.cluster.shard_of(&a.ns.id_from_name(n)) as usize;
            owners[shard].as_ref().is_some_and(|(node, _)| node == "a")
        })
        .context("no object name on a's shards")?;
    let local = report("write, R = 0", timed_calls(&a.ns, &name, args.calls).await?);

    // R = 1: b catches up on a's shards and follows them.
    a.cluster.set_replicas(1).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leading = a.cluster.status().leading;
        if !leading.is_empty() && leading.iter().all(|(_, f)| f.len() == 1) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "b did not follow a's shards in 60 s"
        );
        a.cluster.refreshed().await;
    }
    let replicated = report("write, R = 1", timed_calls(&a.ns, &name, args.calls).await?);
    let goal = local + 2 * rtt + sync;
    println!(
        "replicated - local: {:.1} us; goal: replicated <= local + 2 RTT + 1 fsync = {:.1} us: {}",
        (replicated.as_secs_f64() - local.as_secs_f64()) * 1e6,
        goal.as_secs_f64() * 1e6,
        if replicated <= goal { "met" } else { "NOT met" }
    );
    for n in [a, b] {
        n.stop().await;
    }
    Ok(())
}
