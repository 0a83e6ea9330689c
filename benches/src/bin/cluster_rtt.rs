//! `cluster_rtt`: the round trip of a call to an object on another node,
//! beside a bare QUIC request/response under the same TLS, and a call to a
//! local object, measured side by side in one process on loopback.
//!
//! ```text
//! cargo run --release -p benches --features cluster --bin cluster_rtt -- --calls 5000
//! ```
//!
//! Starts a real etcd (Debian's `etcd-server`) on free loopback ports in a
//! temp dir and two nodes (`a`, `b`) of one cluster, each with its own
//! runtime and QUIC endpoint, in this process. The object called writes
//! nothing, so the figures are the transport and dispatch, not storage.

use std::sync::Arc;

use anyhow::Context as _;
use benches::cluster::{bare_quic, report, timed_calls};
use clap::Parser;
use objects::{BoxError, ClusterCa, Context, Object};

/// Cross-node call round trips against bare QUIC (loopback).
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Measured round trips of each kind (after 500 of warm-up).
    #[arg(long, default_value_t = 5_000)]
    calls: usize,
}

/// Answers with the node it runs on; writes nothing.
struct Where(Arc<String>);

impl Object for Where {
    type Env = String;
    type Call = ();
    type Reply = String;
    async fn new(_: &mut Context, env: Arc<String>) -> Result<Self, BoxError> {
        Ok(Where(env))
    }
    async fn call(&mut self, _: &mut Context, (): ()) -> Result<String, BoxError> {
        Ok(self.0.to_string())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let etcd = benches::cluster::etcd().await?;
    let ca = ClusterCa::generate()?;
    let bare = report(
        "bare QUIC request/response",
        bare_quic(&ca, args.calls).await?,
    );

    let node = |name| {
        benches::cluster::node::<Where>(name, &["a", "b"], 8, &etcd, &ca, "where", name.into())
    };
    let a = node("a").await?;
    let b = node("b").await?;
    // Both nodes must know every shard's owner before calls route.
    benches::cluster::claimed(&[&a.cluster, &b.cluster]).await?;
    // An object b owns: a's calls to it cross, b's are local.
    let owners = b.cluster.status().owners;
    let name = (0..1000)
        .map(|k| format!("x{k}"))
        .find(|n| {
            let shard = b.cluster.shard_of(&b.ns.id_from_name(n)) as usize;
            owners[shard].as_ref().is_some_and(|(node, _)| node == "b")
        })
        .context("no object name on b's shards")?;
    assert_eq!(a.ns.get_by_name(&name).call(()).await?, "b");

    let cross = report(
        "call to another node",
        timed_calls(&a.ns, &name, args.calls).await?,
    );
    let local = report(
        "call to a local object",
        timed_calls(&b.ns, &name, args.calls).await?,
    );
    println!(
        "cross-node / bare QUIC: {:.2}x (mean); local call / bare QUIC: {:.2}x",
        cross.as_secs_f64() / bare.as_secs_f64(),
        local.as_secs_f64() / bare.as_secs_f64()
    );
    for n in [a, b] {
        n.stop().await;
    }
    Ok(())
}
