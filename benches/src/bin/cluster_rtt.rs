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
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use objects::{BoxError, ClusterCa, Context, Namespace, Object};

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

const WARM_UP: usize = 500;

/// Mean, p50 and p99 of `t`, printed; the mean returned.
fn report(what: &str, mut t: Vec<Duration>) -> Duration {
    t.sort();
    let p = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)];
    let mean = t.iter().sum::<Duration>() / u32::try_from(t.len()).unwrap_or(u32::MAX);
    println!(
        "{what:<30} mean {:>7.1} us  p50 {:>7.1} us  p99 {:>7.1} us",
        mean.as_secs_f64() * 1e6,
        p(0.5).as_secs_f64() * 1e6,
        p(0.99).as_secs_f64() * 1e6
    );
    mean
}

/// A 64-byte request and a 64-byte answer on one QUIC stream, `calls`
/// times, with the nodes' TLS configuration.
async fn bare_quic(ca: &ClusterCa, calls: usize) -> anyhow::Result<Vec<Duration>> {
    let (server, _) = objects::testing::quic_configs(&ca.issue("s")?)?;
    let (_, client) = objects::testing::quic_configs(&ca.issue("c")?)?;
    let sep = quinn::Endpoint::server(server, "127.0.0.1:0".parse()?)?;
    let saddr = sep.local_addr()?;
    tokio::spawn(async move {
        let Some(incoming) = sep.accept().await else {
            return;
        };
        let Ok(conn) = incoming.await else { return };
        let Ok((mut send, mut recv)) = conn.accept_bi().await else {
            return;
        };
        let mut buf = [0u8; 64];
        while recv.read_exact(&mut buf).await.is_ok() {
            if send.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut cep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    cep.set_default_client_config(client);
    let conn = cep.connect(saddr, "s")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut times = Vec::with_capacity(calls);
    let mut buf = [7u8; 64];
    for i in 0..calls + WARM_UP {
        let t = Instant::now();
        send.write_all(&buf).await?;
        recv.read_exact(&mut buf).await?;
        if i >= WARM_UP {
            times.push(t.elapsed());
        }
    }
    Ok(times)
}

/// `calls` sequential calls to the object named `name` through `ns`.
async fn calls(ns: &Namespace<Where>, name: &str, calls: usize) -> anyhow::Result<Vec<Duration>> {
    let stub = ns.get_by_name(name);
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls + WARM_UP {
        let t = Instant::now();
        stub.call(()).await?;
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
        calls(&a.ns, &name, args.calls).await?,
    );
    let local = report(
        "call to a local object",
        calls(&b.ns, &name, args.calls).await?,
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
