//! Cluster mode (the cargo feature `cluster`): the chat server as one node
//! of several sharing rooms, and `chat-demo cluster init` and `cluster
//! issue`, which write the cluster's certificates. See `docs/cluster.md`, "chat-demo on three
//! nodes".
//!
//! Every node registers the same namespaces (rooms, rate limiters, the
//! directory, the health probe) and opens its runtime with the cluster's
//! id secret; a room runs on the node that owns its shard, and a client on
//! any node reaches it there.
//!
//! The certificate layout `cluster init <dir>` writes, and
//! `--cluster-certs <dir>/<node>` reads:
//!
//! ```text
//! <dir>/ca.pem  <dir>/ca.key              the CA (keep ca.key offline)
//! <dir>/<node>/ca.pem                     the CA certificate, for the node
//! <dir>/<node>/node.pem  <dir>/<node>/node.key   the node's certificate and key
//! <dir>/<node>/node-id                    the node id the certificate names
//! ```
//!
//! Key files are created readable by their owner only (0600).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use objects::{Cluster, ClusterCa, ClusterOptions, NodeCertificate, Runtime};

/// The CA certificate's file name, at the top and in each node's dir.
const CA_CERT: &str = "ca.pem";
/// The CA key's file name (only at the top).
const CA_KEY: &str = "ca.key";
/// The node certificate's file name in its dir.
const NODE_CERT: &str = "node.pem";
/// The node key's file name in its dir.
const NODE_KEY: &str = "node.key";
/// The file naming the node a dir's certificate is for.
const NODE_ID: &str = "node-id";

/// The `--cluster-*` flags of `serve`. Cluster mode is on when
/// `--cluster-node` is given; it then needs `--cluster-etcd`,
/// `--cluster-quic` and `--cluster-certs`, and any of them needs it.
#[derive(Debug, clap::Args)]
pub(crate) struct ClusterArgs {
    /// Run as this node of a cluster (its id: 1 to 32 of a-z, 0-9 and -).
    /// Needs --cluster-etcd, --cluster-quic and --cluster-certs.
    #[arg(long, env = "CHAT_CLUSTER_NODE", value_name = "ID", requires_all = ["cluster_etcd", "cluster_quic", "cluster_certs"])]
    cluster_node: Option<String>,

    /// etcd endpoints, comma-separated (`http://127.0.0.1:2379`).
    #[arg(
        long,
        env = "CHAT_CLUSTER_ETCD",
        value_name = "URL,...",
        value_delimiter = ',',
        requires = "cluster_node"
    )]
    cluster_etcd: Vec<String>,

    /// The address this node's QUIC endpoint (UDP) listens on, for the
    /// other nodes.
    #[arg(
        long,
        env = "CHAT_CLUSTER_QUIC",
        value_name = "ADDR",
        requires = "cluster_node"
    )]
    cluster_quic: Option<SocketAddr>,

    /// This node's certificate dir, as `chat-demo cluster init` wrote it
    /// (`<dir>/<node>`: ca.pem, node.pem, node.key).
    #[arg(
        long,
        env = "CHAT_CLUSTER_CERTS",
        value_name = "DIR",
        requires = "cluster_node"
    )]
    cluster_certs: Option<PathBuf>,

    /// The cluster's first members (node ids, comma-separated): each
    /// room's first owner is chosen among them. Read only by the node that
    /// creates the cluster; give every node the same list.
    #[arg(
        long,
        env = "CHAT_CLUSTER_MEMBERS",
        value_name = "ID,...",
        value_delimiter = ',',
        requires = "cluster_node"
    )]
    cluster_members: Vec<String>,

    /// Virtual shards (the unit of ownership), fixed when the cluster is
    /// created [default: 64]. Read only by the node that creates it.
    #[arg(long, env = "CHAT_CLUSTER_SHARDS", value_name = "N", requires = "cluster_node", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    cluster_shards: Option<u32>,

    /// This node's failure domain (a rack or data centre, 1 to 32 of a-z,
    /// 0-9 and -), published with its membership for the placement of
    /// replicas. Unset: a zone of its own.
    #[arg(
        long,
        env = "CHAT_CLUSTER_ZONE",
        value_name = "ZONE",
        requires = "cluster_node"
    )]
    cluster_zone: Option<String>,

    /// Rebalance by itself: when a node joins, hand it the rooms whose
    /// shards hashing now gives it (each room pauses while it moves; its
    /// sockets stay open). Off: shards move only when an operator
    /// runs `chat-demo cluster rebalance` or `drain`.
    #[arg(long, env = "CHAT_CLUSTER_REBALANCE", requires = "cluster_node")]
    cluster_rebalance: bool,

    /// On SIGINT or SIGTERM, first hand every room of this node to the
    /// other nodes (as `chat-demo cluster drain`), so its rooms stay
    /// available while it is down (a rolling restart); within
    /// --shutdown-runtime-timeout-secs, then the usual shutdown.
    #[arg(long, env = "CHAT_CLUSTER_DRAIN_ON_STOP", requires = "cluster_node")]
    cluster_drain_on_stop: bool,

    /// Followers each room's shard should have (0 to 2), set for the whole
    /// cluster in etcd when this node joins: each write is then
    /// acknowledged only once it is durable on them too, and a follower
    /// takes over when its primary is lost. Unset: leave what etcd holds
    /// (0 for a new cluster).
    #[arg(long, env = "CHAT_CLUSTER_REPLICAS", value_name = "R", requires = "cluster_node", value_parser = clap::value_parser!(u32).range(0..=2))]
    cluster_replicas: Option<u32>,

    /// How long this node keeps open the sockets of its clients whose
    /// room's node was lost, waiting for the room's next node (a follower
    /// taking over) to adopt them, in seconds; 0 closes them at once
    /// (1012: reconnect).
    #[arg(long, env = "CHAT_CLUSTER_SOCKET_FAILOVER_WAIT_SECS", value_name = "SECS", default_value_t = 30, requires = "cluster_node", value_parser = clap::value_parser!(u64).range(0..=3600))]
    cluster_socket_failover_wait_secs: u64,
}

/// A node's settings, checked, before anything starts.
#[derive(Debug)]
pub(crate) struct Config {
    options: ClusterOptions,
    drain_on_stop: bool,
    replicas: Option<u32>,
}

impl ClusterArgs {
    /// The node's settings when cluster mode is on, or why they are
    /// unusable (the caller exits with status 2 before anything starts).
    pub(crate) fn config(&self) -> Result<Option<Config>, String> {
        let Some(node) = &self.cluster_node else {
            return Ok(None);
        };
        if !valid_id(node) {
            return Err(format!(
                "--cluster-node {node:?}: use 1 to 32 of a-z, 0-9 and -"
            ));
        }
        let (Some(quic), Some(certs)) = (self.cluster_quic, &self.cluster_certs) else {
            return Err("--cluster-node needs --cluster-quic and --cluster-certs".into());
        };
        if self.cluster_etcd.iter().all(|e| e.trim().is_empty()) {
            return Err("--cluster-etcd needs at least one endpoint".into());
        }
        let certificate = read_certificate(certs, node)?;
        let mut options = ClusterOptions::new(node, self.cluster_etcd.clone(), quic, certificate);
        if !self.cluster_members.is_empty() {
            if !self.cluster_members.contains(node) {
                return Err(format!(
                    "--cluster-members {} does not name this node, {node}",
                    self.cluster_members.join(",")
                ));
            }
            options = options.with_initial_members(self.cluster_members.clone());
        }
        if let Some(shards) = self.cluster_shards {
            options = options.with_shards(shards);
        }
        if let Some(zone) = &self.cluster_zone {
            if !valid_id(zone) {
                return Err(format!(
                    "--cluster-zone {zone:?}: use 1 to 32 of a-z, 0-9 and -"
                ));
            }
            options = options.with_zone(Some(zone.clone()));
        }
        options = options
            .with_rebalance(self.cluster_rebalance)
            .with_socket_failover_wait(std::time::Duration::from_secs(
                self.cluster_socket_failover_wait_secs,
            ));
        Ok(Some(Config {
            options,
            drain_on_stop: self.cluster_drain_on_stop,
            replicas: self.cluster_replicas,
        }))
    }
}

/// Reads a node's certificate dir; checks it is `node`'s.
fn read_certificate(dir: &Path, node: &str) -> Result<NodeCertificate, String> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "--cluster-certs {}: cannot read {}: {e} (`chat-demo cluster init` writes it)",
                dir.display(),
                path.display()
            )
        })
    };
    if let Ok(id) = std::fs::read_to_string(dir.join(NODE_ID))
        && id.trim() != node
    {
        return Err(format!(
            "--cluster-certs {}: these certificates are for node {}, not --cluster-node {node}",
            dir.display(),
            id.trim()
        ));
    }
    Ok(NodeCertificate {
        cert_pem: read(NODE_CERT)?,
        key_pem: read(NODE_KEY)?,
        ca_pem: read(CA_CERT)?,
    })
}

/// This node's membership, from [`Config::join`] to [`Node::leave`].
#[derive(Debug)]
pub(crate) struct Node {
    cluster: Cluster,
    drain_on_stop: bool,
}

impl Config {
    /// Joins the cluster: connects to etcd (creating the cluster if this
    /// is the first node) and binds the QUIC endpoint.
    pub(crate) async fn join(self) -> anyhow::Result<Node> {
        let node = self.options.node_id.clone();
        let etcd = self.options.etcd.join(",");
        let cluster = Cluster::join(self.options)
            .await
            .with_context(|| format!("joining the cluster as {node} (etcd {etcd})"))?;
        if let Some(r) = self.replicas {
            cluster
                .set_replicas(r)
                .await
                .with_context(|| format!("setting --cluster-replicas {r} in etcd {etcd}"))?;
        }
        Ok(Node {
            cluster,
            drain_on_stop: self.drain_on_stop,
        })
    }
}

/// `/readyz`'s questions, answered from the cluster's view.
#[derive(Clone)]
struct Health(Cluster);

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Health").field(&self.0.node_id()).finish()
    }
}

impl chat_demo::NodeHealth for Health {
    fn not_ready(&self) -> Option<String> {
        let status = self.0.status();
        if status.serve_for.is_none() {
            return Some("this node holds no live lease in the cluster".into());
        }
        let unknown = status.owners.iter().filter(|o| o.is_none()).count();
        (unknown > 0).then(|| {
            format!(
                "{unknown} of {} shards have no known owner yet",
                status.owners.len()
            )
        })
    }

    fn shards(&self) -> u32 {
        self.0.shards()
    }

    fn serving(&self) -> Vec<u32> {
        self.0.status().serving
    }

    fn shard_of(&self, id: &objects::ObjectId) -> u32 {
        self.0.shard_of(id)
    }
}

/// The admin listener's cluster operations (`POST /cluster/*`).
struct Ops(Cluster);

impl Ops {
    fn moved(
        result: Result<Vec<objects::HandOffReport>, objects::ClusterError>,
    ) -> Result<String, String> {
        let moved = result.map_err(|e| e.to_string())?;
        let mut report = format!("{} shards moved\n", moved.len());
        for m in moved {
            report.push_str(&format!(
                "shard {} to {} (epoch {}): {} objects, {} keys, {} bytes, {} events waited {} ms\n",
                m.shard,
                m.to,
                m.epoch,
                m.objects,
                m.keys,
                m.bytes,
                m.held,
                m.paused.as_millis()
            ));
        }
        Ok(report)
    }
}

impl chat_demo::ClusterOps for Ops {
    fn status(&self) -> chat_demo::OpFuture {
        let cluster = self.0.clone();
        Box::pin(async move {
            let s = cluster.status();
            let join = |v: &[String]| v.join(" ");
            let shards = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
            let mut out = format!(
                "node {}\nmembers {}\nserving {}\nfollowing {}\n",
                cluster.node_id(),
                join(&s.members),
                shards(&s.serving),
                shards(&s.following)
            );
            // Each shard's owner as this node sees it ("-": none yet).
            let owners: Vec<&str> = s
                .owners
                .iter()
                .map(|o| o.as_ref().map_or("-", |(node, _)| node.as_str()))
                .collect();
            out.push_str(&format!("owners {}\n", owners.join(" ")));
            for (shard, followers) in &s.leading {
                out.push_str(&format!("leading {shard} followers {}\n", join(followers)));
            }
            Ok(out)
        })
    }

    fn drain(&self) -> chat_demo::OpFuture {
        let cluster = self.0.clone();
        Box::pin(async move { Ops::moved(cluster.drain().await) })
    }

    fn rebalance(&self) -> chat_demo::OpFuture {
        let cluster = self.0.clone();
        Box::pin(async move { Ops::moved(cluster.rebalance().await) })
    }

    fn restore_shard(&self, shard: u32, backup: PathBuf) -> chat_demo::OpFuture {
        let cluster = self.0.clone();
        Box::pin(async move {
            let r = cluster
                .restore_shard(shard, &backup)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "shard {} restored from {} (epoch {}): {} objects, {} keys, {} bytes\n",
                r.shard,
                backup.display(),
                r.epoch,
                r.objects,
                r.keys,
                r.bytes
            ))
        })
    }
}

impl Node {
    /// The admin listener's cluster operations on this node.
    pub(crate) fn ops(&self) -> std::sync::Arc<dyn chat_demo::ClusterOps> {
        std::sync::Arc::new(Ops(self.cluster.clone()))
    }

    /// What `/readyz` asks of this node.
    pub(crate) fn health(&self) -> std::sync::Arc<dyn chat_demo::NodeHealth> {
        std::sync::Arc::new(Health(self.cluster.clone()))
    }

    /// The cluster's id secret, for the runtime.
    pub(crate) fn id_secret(&self) -> [u8; 32] {
        self.cluster.id_secret()
    }

    /// Starts serving this node's shards and routing `rt`'s events to the
    /// owners of theirs; says so on stdout.
    pub(crate) fn serve(&self, rt: &Runtime) -> anyhow::Result<()> {
        self.cluster
            .serve(rt)
            .context("serving the cluster's shards")?;
        let quic = self.cluster.quic_addr()?;
        println!(
            "chat-demo cluster node {} (quic on {quic}, {} shards)",
            self.cluster.node_id(),
            self.cluster.shards()
        );
        tracing::info!(node = self.cluster.node_id(), %quic, shards = self.cluster.shards(), "cluster node serving");
        Ok(())
    }

    /// With --cluster-drain-on-stop: hands this node's rooms to the other
    /// nodes before it stops, within `within` (what is not moved by then
    /// stays here, unavailable until the node returns).
    pub(crate) async fn drain_on_stop(&self, within: Duration) {
        if !self.drain_on_stop {
            return;
        }
        match tokio::time::timeout(within, self.cluster.drain()).await {
            Ok(Ok(moved)) => {
                tracing::info!(
                    shards = moved.len(),
                    "shutting down: handed this node's rooms to the others"
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shutting down: the drain stopped; rooms still here are unavailable until this node returns");
            }
            Err(_) => {
                tracing::warn!("shutting down: the drain took over {within:?}; going on");
            }
        }
    }

    /// Leaves the cluster (its lease revoked: its rooms are unavailable at
    /// once instead of when the lease would run out), within `within`.
    pub(crate) async fn leave(&self, within: Duration) {
        if tokio::time::timeout(within, self.cluster.leave())
            .await
            .is_ok()
        {
            tracing::info!("shutting down: left the cluster");
        } else {
            tracing::warn!(
                "shutting down: leaving the cluster took over {within:?}; going on (its lease runs out by itself)"
            );
        }
    }
}

/// `chat-demo cluster ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ClusterCommand {
    /// Make a cluster CA and a certificate per node: `<dir>/ca.pem` and
    /// `<dir>/ca.key` (keep it offline), and `<dir>/<node>/` for each node
    /// (give it to that node's --cluster-certs).
    Init(InitArgs),
    /// Issue certificates for more nodes from the CA in `<dir>` (written
    /// by `cluster init`): `<dir>/<node>/` for each. A node that joins
    /// later serves as a front door at once; it owns no shard until shards
    /// are moved to it.
    Issue(InitArgs),
    /// Ask a running node (through its admin listener) to hand every
    /// shard it serves to the other nodes, one at a time, before it is
    /// stopped; no shard moves to it afterwards until it restarts.
    Drain(crate::operate::AdminArgs),
    /// Ask a running node to hand the other nodes the shards rendezvous
    /// hashing now gives them (after a node joined).
    Rebalance(crate::operate::AdminArgs),
    /// Ask a running node to take a shard of a lost node, from a backup of
    /// that node's data dir.
    RestoreShard(crate::operate::RestoreArgs),
}

/// `cluster init` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// Directory to write into (created if missing; must not hold a CA
    /// yet).
    dir: PathBuf,
    /// The node ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
}

/// Runs a `cluster` subcommand. Blocking.
pub(crate) fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Init(a) => init(&a.dir, &a.nodes),
        ClusterCommand::Issue(a) => issue(&a.dir, &a.nodes),
        ClusterCommand::Drain(a) => crate::operate::run(crate::operate::Op::Drain(a)),
        ClusterCommand::Rebalance(a) => crate::operate::run(crate::operate::Op::Rebalance(a)),
        ClusterCommand::RestoreShard(a) => crate::operate::run(crate::operate::Op::Restore(a)),
    }
}

/// Refuses node lists that are not ids or name one twice.
fn check_nodes(nodes: &[String]) -> anyhow::Result<()> {
    if let Some(bad) = nodes.iter().find(|n| !valid_id(n)) {
        bail!("--nodes: {bad:?} is not a node id (1 to 32 of a-z, 0-9 and -)");
    }
    if let Some(twice) = nodes
        .iter()
        .enumerate()
        .find(|(i, n)| nodes[..*i].contains(n))
    {
        bail!("--nodes: {} is named twice", twice.1);
    }
    Ok(())
}

/// Writes `node`'s certificate dir, `<dir>/<node>/`.
fn write_node(dir: &Path, ca: &ClusterCa, node: &str) -> anyhow::Result<()> {
    let cert = ca.issue(node)?;
    let node_dir = dir.join(node);
    std::fs::create_dir_all(&node_dir)
        .with_context(|| format!("creating {}", node_dir.display()))?;
    write(&node_dir.join(CA_CERT), &cert.ca_pem)?;
    write(&node_dir.join(NODE_CERT), &cert.cert_pem)?;
    write_private(&node_dir.join(NODE_KEY), &cert.key_pem)?;
    write(&node_dir.join(NODE_ID), &format!("{node}\n"))
}

/// Issues certificates for `nodes` from the CA in `dir`.
fn issue(dir: &Path, nodes: &[String]) -> anyhow::Result<()> {
    check_nodes(nodes)?;
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (`chat-demo cluster init` writes it)",
                path.display()
            )
        })
    };
    let ca = ClusterCa {
        cert_pem: read(CA_CERT)?,
        key_pem: read(CA_KEY)?,
    };
    if let Some(has) = nodes.iter().find(|n| dir.join(n).exists()) {
        bail!(
            "{} already exists: node {has} has its certificates",
            dir.join(has).display()
        );
    }
    for node in nodes {
        write_node(dir, &ca, node)?;
    }
    println!(
        "wrote certificates for {} in {dir}/<node>",
        nodes.join(", "),
        dir = dir.display()
    );
    Ok(())
}

/// Writes a new CA and a certificate per node into `dir`.
fn init(dir: &Path, nodes: &[String]) -> anyhow::Result<()> {
    check_nodes(nodes)?;
    if dir.join(CA_KEY).exists() {
        bail!(
            "{} already holds a cluster CA: a new one would not trust the certificates issued by it",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = ClusterCa::generate()?;
    write_private(&dir.join(CA_KEY), &ca.key_pem)?;
    write(&dir.join(CA_CERT), &ca.cert_pem)?;
    for node in nodes {
        write_node(dir, &ca, node)?;
    }
    println!(
        "wrote a cluster CA to {dir}/ca.pem and {dir}/ca.key (keep the key offline) and certificates for {} in {dir}/<node>",
        nodes.join(", "),
        dir = dir.display()
    );
    Ok(())
}

/// A node id or zone: 1 to 32 of a-z, 0-9 and `-` (the node id is also
/// the DNS name in its certificate).
fn valid_id(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Writes a file anyone may read.
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes a key file: created readable by the owner only (0600), never
/// over an existing file.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn init_writes_what_the_certs_flag_reads_and_refuses_bad_node_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        init(&certs, &nodes(&["n1", "n2"])).expect("init");
        let n1 = read_certificate(&certs.join("n1"), "n1").expect("n1's certificate");
        assert_eq!(
            n1.ca_pem,
            std::fs::read_to_string(certs.join(CA_CERT)).expect("ca")
        );
        assert!(n1.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(n1.key_pem.contains("PRIVATE KEY"));
        let wrong = read_certificate(&certs.join("n2"), "n1").expect_err("n2's dir for n1");
        assert!(
            wrong.contains("for node n2, not --cluster-node n1"),
            "{wrong}"
        );
        let missing = read_certificate(&certs.join("n3"), "n3").expect_err("no n3");
        assert!(missing.contains("cannot read"), "{missing}");
        let again = init(&certs, &nodes(&["n3"])).expect_err("a second CA");
        assert!(again.to_string().contains("already holds a cluster CA"));

        // More nodes later, from the same CA; never over a node's dir.
        issue(&certs, &nodes(&["n3"])).expect("issue n3");
        let n3 = read_certificate(&certs.join("n3"), "n3").expect("n3's certificate");
        assert_eq!(n3.ca_pem, n1.ca_pem, "the same CA");
        let twice = issue(&certs, &nodes(&["n4", "n1"])).expect_err("n1 exists");
        assert!(twice.to_string().contains("node n1 has its certificates"));
        assert!(!certs.join("n4").exists(), "nothing written when refused");
        let no_ca = issue(&dir.path().join("none"), &nodes(&["n5"])).expect_err("no CA");
        assert!(no_ca.to_string().contains("cluster init"), "{no_ca}");

        let other = dir.path().join("other");
        for (bad, why) in [
            (nodes(&["N1"]), "is not a node id"),
            (nodes(&["n1", "a b"]), "is not a node id"),
            (nodes(&["n1", "n1"]), "named twice"),
        ] {
            let e = init(&other, &bad).expect_err("refused");
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
            assert!(!other.exists(), "{bad:?} wrote something");
        }
    }
}
