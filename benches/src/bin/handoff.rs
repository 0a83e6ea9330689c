//! `handoff`: how long moving a shard pauses it, by the size of its data.
//!
//! ```text
//! cargo run --release -p benches --features cluster --bin handoff -- --objects 1000 --keys 10 --value-bytes 1000
//! ```
//!
//! Starts a real etcd (Debian's `etcd-server`) on free loopback ports in a
//! temp dir and two nodes (`a`, `b`) of one cluster in this process, fills
//! `--objects` objects of one of a's shards with `--keys` keys of
//! `--value-bytes` each, then hands the shard to b and back while a caller
//! on b keeps calling one of its objects, one call after another. Prints
//! each move's report (objects, bytes, the time the shard's events waited)
//! and the slowest call the caller saw during each move.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use objects::{BoxError, ClusterCa, Context, Namespace, Object};

/// Shard hand-off pause against the shard's data size (loopback).
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Objects in the moved shard.
    #[arg(long, default_value_t = 1_000)]
    objects: usize,
    /// Keys per object.
    #[arg(long, default_value_t = 10)]
    keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 1_000)]
    value_bytes: usize,
}

/// `Some((keys, bytes))` fills the object; `None` counts a call.
struct Kv;

impl Object for Kv {
    type Env = ();
    type Call = Option<(usize, usize)>;
    type Reply = ();
    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
        Ok(Kv)
    }
    async fn call(&mut self, ctx: &mut Context, fill: Self::Call) -> Result<(), BoxError> {
        if let Some((keys, bytes)) = fill {
            let value = vec![7u8; bytes];
            for k in 0..keys {
                ctx.storage().put_bytes(&format!("k{k:06}"), &value)?;
            }
        }
        Ok(())
    }
}

type Node = benches::cluster::Node<Kv>;

const SHARDS: u32 = 8;

/// Moves `shard` from `from` to `to` while `caller` calls `name` in a
/// loop; prints the report and the slowest call.
async fn measure(
    label: &str,
    from: &Node,
    to: &str,
    shard: u32,
    caller: &Namespace<Kv>,
    name: &str,
) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let calls = {
        let (stub, stop) = (caller.get_by_name(name), stop.clone());
        tokio::spawn(async move {
            let (mut slowest, mut n) = (Duration::ZERO, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                stub.call(None).await?;
                slowest = slowest.max(t.elapsed());
                n += 1;
            }
            anyhow::Ok((slowest, n))
        })
    };
    // Let the caller run before the move.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let r = from.cluster.hand_off(shard, to).await?;
    let took = t.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (slowest, n) = calls.await??;
    let mb = r.bytes as f64 / 1e6;
    println!(
        "{label}: {} objects, {} keys, {mb:.1} MB in {} parts; events waited {:.1} ms, the hand-off took {:.1} ms ({:.0} MB/s); slowest of {n} calls (the move and 200 ms either side) {:.1} ms; {} calls waited",
        r.objects,
        r.keys,
        r.parts,
        r.paused.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e3,
        mb / took.as_secs_f64(),
        slowest.as_secs_f64() * 1e3,
        r.held,
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let etcd = benches::cluster::etcd().await?;
    let ca = ClusterCa::generate()?;
    let node = |name| benches::cluster::node::<Kv>(name, &["a", "b"], SHARDS, &etcd, &ca, "kv", ());
    let a = node("a").await?;
    let b = node("b").await?;
    benches::cluster::claimed(&[&a.cluster, &b.cluster]).await?;
    let shard = *a
        .cluster
        .status()
        .serving
        .first()
        .context("a serves no shard")?;
    let names: Vec<String> = (0..)
        .map(|k| format!("o{k}"))
        .filter(|n| a.cluster.shard_of(&a.ns.id_from_name(n)) == shard)
        .take(args.objects.max(1))
        .collect();
    let t = Instant::now();
    for chunk in names.chunks(64) {
        let fills = chunk.iter().map(|n| {
            a.ns.get_by_name(n)
                .call(Some((args.keys, args.value_bytes)))
        });
        for r in futures_util::future::join_all(fills).await {
            r?;
        }
    }
    println!(
        "filled {} objects x {} keys x {} bytes in {:.1} s",
        names.len(),
        args.keys,
        args.value_bytes,
        t.elapsed().as_secs_f64()
    );
    measure("a -> b", &a, "b", shard, &b.ns, &names[0]).await?;
    // b serves the shard once told (or, if that was lost, once it has
    // re-claimed it from etcd); a's view names b since its hand-off.
    while !b.cluster.status().serving.contains(&shard) {
        b.cluster.refreshed().await;
    }
    measure("b -> a", &b, "a", shard, &a.ns, &names[0]).await?;
    for n in [a, b] {
        n.stop().await;
    }
    Ok(())
}
