//! Nodes of one cluster in one process, for the cluster benchmarks
//! (`cluster_rtt`, `handoff`; the cargo feature `cluster`): each with its
//! own runtime, data dir and QUIC endpoint, joined to a real etcd.

use std::time::{Duration, Instant};

use anyhow::bail;
use objects::testing::etcd::Etcd;
use objects::{Cluster, ClusterCa, ClusterOptions, Namespace, Object, Runtime};

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
