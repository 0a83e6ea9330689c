//! Objects across machines (the cargo feature `cluster`): membership and
//! shard ownership in etcd, events to the owner over QUIC with mutual TLS.
//! See `docs/cluster.md` for how it works and what it guarantees.
//!
//! A node joins ([`Cluster::join`]: reads or creates the cluster's shard
//! count and id secret in etcd, binds its QUIC endpoint), opens its
//! runtime with the cluster's id secret, then serves ([`Cluster::serve`]):
//! from then on a stub whose object's shard is owned by another node sends
//! its events there.

mod edge;
mod etcd;
mod follow;
mod handoff;
mod moves;
mod node;
mod receive;
mod rehome;
mod replicas;
mod replicate;
mod replicate_hook;
mod replicate_msgs;
mod replicate_net;
mod restore;
mod sockets;
#[cfg(test)]
mod sockets_tests;
pub(crate) mod tls;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::id::ObjectId;
use crate::remote::shard::{self, Lease, Place, View};
use crate::runtime::Runtime;

pub use handoff::HandOffReport;
pub use restore::RestoreReport;
pub use tls::{ClusterCa, NodeCertificate};

use etcd::Etcd;
use node::Node;
use transport::Peers;

/// What can go wrong joining or running a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A setting is invalid.
    #[error("cluster configuration: {0}")]
    Config(String),
    /// Talking to etcd failed.
    #[error("etcd: {0}")]
    Etcd(String),
    /// Certificates or keys are unusable.
    #[error("cluster TLS: {0}")]
    Tls(String),
    /// The QUIC endpoint could not be set up.
    #[error("cluster transport: {0}")]
    Transport(String),
    /// A hand-off was refused or called off (the shard stays where it
    /// was, unless the text says its outcome is unknown).
    #[error("hand-off of {0}")]
    HandOff(String),
}

/// How a node takes part in a cluster.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// This node's id, stable across restarts (1 to 32 of `a-z0-9-`); also
    /// the DNS name in its certificate.
    pub node_id: String,
    /// etcd endpoints, e.g. `http://127.0.0.1:2379`.
    pub etcd: Vec<String>,
    /// The key prefix of this cluster in etcd.
    pub prefix: String,
    /// Where this node's QUIC endpoint listens (UDP).
    pub quic_listen: SocketAddr,
    /// The node's certificate and the cluster CA.
    pub certificate: NodeCertificate,
    /// Virtual shards, used only by the node that creates the cluster.
    pub shards: u32,
    /// The cluster's first members (node ids), used only by the node that
    /// creates it: each shard's first owner is chosen among them, so the
    /// first node up does not take every shard. Empty: among the members
    /// live when the shard is first claimed.
    pub initial_members: Vec<String>,
    /// The lease TTL (whole seconds, at least 2).
    pub lease_ttl: Duration,
    /// How long before the TTL runs out (by this node's clock) the node
    /// stops serving: the largest clock drift over one TTL it tolerates.
    pub lease_margin: Duration,
    /// This node's failure domain (a rack, a data centre), published with
    /// its membership: a shard's followers are placed on zones other than
    /// its primary's and each other's while there are free zones.
    /// `None`: a zone of its own.
    pub zone: Option<String>,
    /// Rebalance by itself: when a member joins (one that is not
    /// draining), hand it the shards of this node that rendezvous hashing
    /// now gives it ([`Cluster::rebalance`]). Off by default: a move pauses
    /// its shard (its sockets stay open and follow it, their frames
    /// waiting meanwhile).
    pub rebalance: bool,
    /// How long this node, as the edge of WebSocket clients, keeps the
    /// sockets of an owner it lost open, waiting for their objects' next
    /// owner (a follower taking over, or the owner back under a new
    /// lease) to adopt them. Zero: they close at once (1012, reconnect).
    pub socket_failover_wait: Duration,
}

impl ClusterOptions {
    /// Options with the defaults: prefix `/objects`, 64 shards, a 10 s
    /// lease of which the last 3 s are not served.
    pub fn new(
        node_id: &str,
        etcd: Vec<String>,
        quic_listen: SocketAddr,
        certificate: NodeCertificate,
    ) -> ClusterOptions {
        ClusterOptions {
            node_id: node_id.to_string(),
            etcd,
            prefix: "/objects".into(),
            quic_listen,
            certificate,
            shards: 64,
            initial_members: Vec::new(),
            lease_ttl: Duration::from_secs(10),
            lease_margin: Duration::from_secs(3),
            zone: None,
            rebalance: false,
            socket_failover_wait: rehome::SOCKET_FAILOVER_WAIT,
        }
    }
}

with_setters!(ClusterOptions {
    with_prefix => prefix: String,
    with_shards => shards: u32,
    with_initial_members => initial_members: Vec<String>,
    with_lease_ttl => lease_ttl: Duration,
    with_lease_margin => lease_margin: Duration,
    with_zone => zone: Option<String>,
    with_rebalance => rebalance: bool,
    with_socket_failover_wait => socket_failover_wait: Duration,
});

/// What this node knows of the cluster now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStatus {
    /// Members with a live lease, by id.
    pub members: Vec<String>,
    /// Each shard's owner and epoch, where it has one.
    pub owners: Vec<Option<(String, u64)>>,
    /// The shards this node serves now.
    pub serving: Vec<u32>,
    /// The shards this node is handing to another node now (their events
    /// wait).
    pub moving: Vec<u32>,
    /// How much longer, by this node's clock, it may serve without another
    /// successful lease renewal (`None`: it holds no live lease).
    pub serve_for: Option<Duration>,
    /// The shards this node is primary of, each with its followers in the
    /// configuration it knows (empty without replication).
    pub leading: Vec<(u32, Vec<String>)>,
    /// The shards this node follows, or catches up on to follow.
    pub following: Vec<u32>,
}

struct Inner {
    options: ClusterOptions,
    shards: u32,
    secret: [u8; 32],
    node: Arc<Node>,
    endpoint: quinn::Endpoint,
    etcd: Etcd,
    shutdown: CancellationToken,
    refreshed: watch::Sender<u64>,
    /// The membership loop, awaited by `leave` (it revokes the lease).
    membership: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The lease held now (for `drain`, which re-registers under it as
    /// draining; `None` before `serve`).
    lease: std::sync::Mutex<Option<i64>>,
    /// Rebalancing by itself (`ClusterOptions::rebalance`).
    rebalancing: moves::Auto,
}

/// One node's membership in a cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.inner.options.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to etcd, creates the cluster's shard count and id secret
    /// if this is the first node (else reads them), and binds the QUIC
    /// endpoint. Serves nothing until [`serve`](Self::serve).
    ///
    /// # Errors
    ///
    /// A bad node id or certificate, etcd unreachable, the address in use.
    pub async fn join(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        if !shard::valid_node_id(&options.node_id) {
            return Err(ClusterError::Config(format!(
                "node id {:?}: use 1 to 32 of a-z, 0-9 and -",
                options.node_id
            )));
        }
        if options.lease_margin >= options.lease_ttl {
            return Err(ClusterError::Config(
                "the lease margin must be shorter than the lease TTL".into(),
            ));
        }
        if let Some(zone) = options.zone.as_deref()
            && !shard::valid_node_id(zone)
        {
            return Err(ClusterError::Config(format!(
                "zone {zone:?}: use 1 to 32 of a-z, 0-9 and -"
            )));
        }
        let (server, client) = tls::quic_configs(&options.certificate)?;
        let mut etcd = Etcd::connect(&options.etcd, &options.prefix).await?;
        if let Some(bad) = options
            .initial_members
            .iter()
            .find(|m| !shard::valid_node_id(m))
        {
            return Err(ClusterError::Config(format!(
                "initial member {bad:?} is not a valid node id"
            )));
        }
        let meta = etcd.meta(options.shards, &options.initial_members).await?;
        let secret = crate::id::parse_hex(&meta.secret).map_err(|_| {
            ClusterError::Etcd("the cluster's id secret is not 64 hex digits".into())
        })?;
        let mut endpoint = quinn::Endpoint::server(server, options.quic_listen)
            .map_err(|e| ClusterError::Transport(format!("bind {}: {e}", options.quic_listen)))?;
        endpoint.set_default_client_config(client);
        let shutdown = CancellationToken::new();
        let mut view = View::new(
            &options.node_id,
            meta.shards,
            Lease::new(options.lease_ttl, options.lease_margin),
        );
        view.initial = meta.members.clone();
        let node = Arc::new(Node::new(
            &options.node_id,
            meta.shards.max(1),
            view,
            Peers::new(endpoint.clone(), shutdown.clone()),
        ));
        node.set_socket_failover_wait(options.socket_failover_wait);
        Ok(Cluster {
            inner: Arc::new(Inner {
                node,
                shards: meta.shards.max(1),
                secret,
                endpoint,
                etcd,
                shutdown,
                refreshed: watch::Sender::new(0),
                membership: std::sync::Mutex::new(None),
                lease: std::sync::Mutex::new(None),
                rebalancing: moves::Auto::default(),
                options,
            }),
        })
    }

    /// The cluster's id secret: give it to
    /// [`RuntimeBuilder::id_secret`](crate::RuntimeBuilder::id_secret).
    pub fn id_secret(&self) -> [u8; 32] {
        self.inner.secret
    }

    /// The number of virtual shards (fixed when the cluster was created).
    pub fn shards(&self) -> u32 {
        self.inner.shards
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.options.node_id
    }

    /// The address the QUIC endpoint listens on.
    ///
    /// # Errors
    ///
    /// The socket's address cannot be read.
    pub fn quic_addr(&self) -> Result<SocketAddr, ClusterError> {
        self.inner
            .endpoint
            .local_addr()
            .map_err(|e| ClusterError::Transport(e.to_string()))
    }

    /// The shard an object belongs to.
    pub fn shard_of(&self, id: &ObjectId) -> u32 {
        shard::shard_of(id.as_bytes(), self.inner.shards)
    }

    /// What this node knows now.
    pub fn status(&self) -> ClusterStatus {
        let (leading, following) = self
            .inner
            .node
            .replication
            .get()
            .map(|r| r.status())
            .unwrap_or_default();
        let view = crate::sync::read(&self.inner.node.view);
        let now = Instant::now();
        ClusterStatus {
            leading,
            following,
            members: view.members.keys().cloned().collect(),
            owners: (0..view.shards)
                .map(|s| view.owners.get(&s).map(|o| (o.node.clone(), o.epoch)))
                .collect(),
            serving: (0..view.shards)
                .filter(|s| matches!(view.place(*s, now), Place::Local { .. }))
                .collect(),
            moving: view.moving.iter().copied().collect(),
            serve_for: view
                .lease
                .serve_until()
                .and_then(|until| until.checked_duration_since(now))
                .filter(|d| !d.is_zero()),
        }
    }

    /// Sets R, the followers each shard should have (0 to 2), for the
    /// whole cluster (one etcd transaction). Primaries pick it up on their
    /// next reading of etcd: with more, nodes chosen by placement catch
    /// up and are added; with fewer, followers are removed.
    ///
    /// # Errors
    ///
    /// R out of range, or etcd unreachable.
    pub async fn set_replicas(&self, replicas: u32) -> Result<(), ClusterError> {
        let mut etcd = self.inner.etcd.clone();
        etcd.set_replicas(replicas).await.map(drop)
    }

    /// Waits until this node has read etcd again (after its next refresh).
    pub async fn refreshed(&self) {
        let mut rx = self.inner.refreshed.subscribe();
        rx.borrow_and_update();
        let _ = rx.changed().await;
    }

    /// Starts serving: registers under a lease, claims shards, answers
    /// peers, and routes `runtime`'s events to the owners of their shards.
    ///
    /// # Errors
    ///
    /// The runtime already serves a cluster, or its id secret is not the
    /// cluster's (open it with [`id_secret`](Self::id_secret)).
    pub fn serve(&self, runtime: &Runtime) -> Result<(), ClusterError> {
        if runtime.shared().id_secret != self.inner.secret {
            return Err(ClusterError::Config(
                "the runtime's id secret is not the cluster's: open it with RuntimeBuilder::id_secret(cluster.id_secret())".into(),
            ));
        }
        node::attach(
            &self.inner.node,
            runtime,
            self.inner.endpoint.clone(),
            self.inner.shutdown.clone(),
        )?;
        let addr = self.quic_addr()?.to_string();
        let task = tokio::spawn(membership(self.inner.clone(), addr));
        *crate::sync::lock(&self.inner.membership) = Some(task);
        Ok(())
    }

    /// Leaves: stops serving, revokes the lease (its shards are
    /// unavailable from now until it returns, instead of until the lease
    /// would have expired) and closes the QUIC endpoint. Call it before
    /// [`Runtime::shutdown`].
    pub async fn leave(&self) {
        self.inner.shutdown.cancel();
        let task = crate::sync::lock(&self.inner.membership).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.inner.endpoint.close(0u32.into(), b"leaving");
    }

    /// An operator's move: names `to` the owner of `shard` if its owner is
    /// still `from` at `epoch` (one transaction). For restoring a lost
    /// node's shard elsewhere after its data was brought there; the old
    /// owner must be down (a live one would keep serving until its lease
    /// lapses). Returns whether the move happened.
    ///
    /// # Errors
    ///
    /// etcd unreachable.
    pub async fn reassign_shard(
        &self,
        shard: u32,
        from: &str,
        epoch: u64,
        to: &str,
    ) -> Result<bool, ClusterError> {
        let claim = shard::reassign(
            shard,
            shard::Owner {
                node: from.to_string(),
                epoch,
            },
            to,
        );
        let mut etcd = self.inner.etcd.clone();
        etcd.apply(&claim).await
    }
}

/// Keep-alives sent without an answer before the node gives the lease up
/// and takes a new one.
const MAX_UNANSWERED: usize = 3;

/// How often a node reads etcd and renews its lease: a third of the TTL,
/// at most a second (so new members and owners are seen quickly).
fn tick(ttl: Duration) -> Duration {
    (ttl / 3).min(Duration::from_secs(1))
}

/// The membership loop: hold a lease (a new one after a lapse), keep the
/// member key under it, read members and owners, claim what the rules say.
async fn membership(inner: Arc<Inner>, addr: String) {
    let mut etcd = inner.etcd.clone();
    let ttl = inner.options.lease_ttl;
    let me = inner.options.node_id.clone();
    let zone = inner.options.zone.clone();
    let mut generation = 0u64;
    let mut held: Option<i64> = None;
    'lease: while !inner.shutdown.is_cancelled() {
        let sent = Instant::now();
        let lease = match etcd.grant(ttl).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot get a lease; retrying");
                if pause(&inner, tick(ttl)).await {
                    break;
                }
                continue;
            }
        };
        held = Some(lease);
        *crate::sync::lock(&inner.lease) = Some(lease);
        let draining = inner.node.draining.load(Ordering::Acquire);
        if let Err(e) = etcd
            .register(&me, &addr, zone.as_deref(), draining, lease)
            .await
        {
            tracing::warn!(error = %e, "cannot register; retrying");
            if pause(&inner, tick(ttl)).await {
                break;
            }
            continue;
        }
        {
            let mut view = crate::sync::write(&inner.node.view);
            view.lease.renewed_at = Some(sent);
            view.new_lease();
        }
        let Ok((mut keeper, mut stream)) = etcd.keep_alive(lease).await else {
            if pause(&inner, tick(ttl)).await {
                break;
            }
            continue;
        };
        let mut unanswered = std::collections::VecDeque::new();
        loop {
            if refresh(&inner, &mut etcd).await.is_ok() {
                generation += 1;
                inner.refreshed.send_replace(generation);
                if inner.options.rebalance {
                    moves::after_refresh(&inner);
                }
            }
            if pause(&inner, tick(ttl)).await {
                break 'lease;
            }
            // Answers come in the order requests were sent, so each one is
            // credited to the send time of the oldest unanswered request: a
            // late answer never stretches the window past what etcd gave.
            let sent = Instant::now();
            if keeper.keep_alive().await.is_err() {
                continue 'lease;
            }
            unanswered.push_back(sent);
            if unanswered.len() > MAX_UNANSWERED {
                tracing::warn!("etcd does not answer keep-alives; taking a new lease");
                continue 'lease;
            }
            match tokio::time::timeout(tick(ttl), stream.message()).await {
                Ok(Ok(Some(r))) => {
                    let Some(sent) = unanswered.pop_front() else {
                        continue 'lease;
                    };
                    if r.ttl() <= 0 {
                        tracing::warn!("the lease is gone; taking a new one");
                        continue 'lease;
                    }
                    crate::sync::write(&inner.node.view).lease.renewed(sent);
                }
                Ok(_) => continue 'lease,
                // No answer in time: it may come later; the lease window
                // keeps running out meanwhile.
                Err(_) => {}
            }
            if !crate::sync::read(&inner.node.view)
                .lease
                .alive(Instant::now())
            {
                continue 'lease;
            }
        }
    }
    if let Some(lease) = held {
        etcd.revoke(lease).await;
    }
}

/// Waits `d`; true if the node is shutting down.
async fn pause(inner: &Inner, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = inner.shutdown.cancelled() => true,
    }
}

/// Reads members and shard configurations, makes the claims the rules
/// allow, then lets replication follow the configurations and proposes
/// its changes (one etcd transaction each).
async fn refresh(inner: &Inner, etcd: &mut Etcd) -> Result<(), crate::cluster::ClusterError> {
    // Configurations first: an owner that a reading shows replaced had
    // lost its lease before, so the members read next lack it (and the
    // links to it end below before the view names the new owner).
    let mut configs = etcd.configs().await?;
    let (members, draining) = etcd.members().await?;
    let owners = configs
        .iter()
        .map(|(s, c)| {
            (
                *s,
                shard::Owner {
                    node: c.primary.clone(),
                    epoch: c.epoch,
                },
            )
        })
        .collect();
    if let Some(links) = inner.node.handoff.links() {
        links.uplinks.drop_departed(&members, &inner.node.me);
    }
    let claims = {
        let mut view = crate::sync::write(&inner.node.view);
        view.members = members;
        view.draining = draining;
        view.read_owners(owners);
        view.claims(Instant::now())
    };
    let repl = inner.node.replication.get().cloned();
    for claim in claims {
        if etcd.apply(&claim).await? {
            // What etcd holds now: a re-claim keeps its followers.
            let followers = match (&claim.prev, configs.get(&claim.shard)) {
                (Some(p), Some(c)) if p.node == claim.next.node => c.followers.clone(),
                _ => Vec::new(),
            };
            let config = crate::remote::replica::Config {
                epoch: claim.next.epoch,
                primary: claim.next.node.clone(),
                followers,
            };
            // Replication labels the shard's groups before it is served.
            if let Some(r) = &repl {
                r.own(claim.shard, &config);
            }
            configs.insert(claim.shard, config);
            crate::sync::write(&inner.node.view).claimed(&claim);
        }
    }
    let Some(repl) = repl else {
        return Ok(());
    };
    let zones = etcd.zones().await?;
    let replicas = etcd.read_meta().await?.0.replicas as usize;
    let serving: std::collections::BTreeSet<u32> = {
        let view = crate::sync::read(&inner.node.view);
        configs
            .iter()
            .filter(|(s, c)| view.claimed.get(s) == Some(&c.epoch))
            .map(|(s, _)| *s)
            .collect()
    };
    repl.refresh(&configs, &zones, replicas, &|s| serving.contains(&s));
    let live = |n: &str| zones.contains_key(n);
    for (shard, p) in repl.promotions(&configs, &live) {
        match etcd.propose(shard, &p).await? {
            Ok(()) => repl.promoted(shard, &p.next),
            Err(current) => tracing::info!(shard, ?current, "another replica was promoted"),
        }
    }
    for (shard, p) in repl.proposals() {
        let result = etcd.propose(shard, &p).await?;
        repl.answered(shard, &p.next, result);
    }
    Ok(())
}
