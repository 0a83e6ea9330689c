//! Nodes of one cluster in one process, for the cluster benchmarks
//! (`cluster_rtt`, `handoff`; the cargo feature `cluster`): each with its
//! own runtime, data dir and QUIC endpoint, joined to a real etcd.

use std::time::{Duration, Instant};

use anyhow::bail;
use objects::testing::etcd::Etcd;
use objects::{Cluster, ClusterCa, ClusterOptions, Namespace, Object, Runtime};

/// Round trips measured after this many of warm-up.
pub const WARM_UP: usize = 500;

/// Mean, p50 and p99 of `t`, printed after `what`; the mean returned.
pub fn report(what: &str, mut t: Vec<Duration>) -> Duration {
    t.sort();
    let p = |q: f64| t[((t.len() as f64 * q) as usize).min(t.len() - 1)];
    let mean = t.iter().sum::<Duration>() / u32::try_from(t.len()).unwrap_or(u32::MAX);
    println!(
        "{what:<34} mean {:>7.1} us  p50 {:>7.1} us  p99 {:>7.1} us",
        mean.as_secs_f64() * 1e6,
        p(0.5).as_secs_f64() * 1e6,
        p(0.99).as_secs_f64() * 1e6
    );
    mean
}

/// A 64-byte request and a 64-byte answer on one QUIC stream, `calls`
/// times (after [`WARM_UP`]), with the nodes' TLS configuration.
///
/// # Errors
///
/// The endpoints could not be set up or the stream broke.
pub async fn bare_quic(ca: &ClusterCa, calls: usize) -> anyhow::Result<Vec<Duration>> {
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

/// `calls` sequential calls (after [`WARM_UP`]) to the object named
/// `name`, each timed.
///
/// # Errors
///
/// A call failed.
pub async fn timed_calls<O: Object<Call = ()>>(
    ns: &Namespace<O>,
    name: &str,
    calls: usize,
) -> anyhow::Result<Vec<Duration>> {
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

/// A real etcd on free loopback ports in a temp dir.
///
/// # Errors
///
/// No `etcd` binary on the PATH.
pub async fn etcd() -> anyhow::Result<Etcd> {
    Etcd::start()
        .await
        .ok_or_else(|| anyhow::anyhow!("no etcd binary on PATH (apt-get install etcd-server)"))
}

/// One node serving one namespace of `O`.
pub struct Node<O: Object> {
    /// Its membership.
    pub cluster: Cluster,
    /// Its runtime.
    pub rt: Runtime,
    /// The namespace it serves.
    pub ns: Namespace<O>,
    _dir: tempfile::TempDir,
}

/// Starts node `name` of a cluster of `shards` shards whose first members
/// are `members`, serving namespace `ns` of `O` with `env`.
pub async fn node<O: Object>(
    name: &str,
    members: &[&str],
    shards: u32,
    etcd: &Etcd,
    ca: &ClusterCa,
    ns: &str,
    env: O::Env,
) -> anyhow::Result<Node<O>> {
    let options = ClusterOptions::new(
        name,
        vec![etcd.url().to_string()],
        "127.0.0.1:0".parse()?,
        ca.issue(name)?,
    )
    .with_shards(shards)
    .with_initial_members(members.iter().map(|m| (*m).to_string()).collect());
    let cluster = Cluster::join(options).await?;
    let dir = tempfile::tempdir()?;
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .id_secret(cluster.id_secret())
        .open()?;
    let ns = rt.namespace::<O>(ns, env)?;
    cluster.serve(&rt)?;
    Ok(Node {
        cluster,
        rt,
        ns,
        _dir: dir,
    })
}

/// Waits until every node knows every shard's owner (at most 60 s).
pub async fn claimed(nodes: &[&Cluster]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while nodes
        .iter()
        .any(|n| n.status().owners.iter().any(Option::is_none))
    {
        if Instant::now() > deadline {
            bail!("the shards were not claimed within 60 s");
        }
        if let Some(n) = nodes.first() {
            n.refreshed().await;
        }
    }
    Ok(())
}

impl<O: Object> Node<O> {
    /// Leaves the cluster and stops the runtime.
    pub async fn stop(self) {
        self.cluster.leave().await;
        self.rt.shutdown().await;
    }
}
