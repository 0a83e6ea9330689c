//! One node's serving half: its view of the cluster, the [`Route`] the
//! dispatcher asks, and the answer to each request a peer sends. The etcd
//! loop (in `mod.rs`) keeps the view current; nothing here talks to etcd,
//! so tests can set a view by hand and run real nodes on it.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::ClusterError;
use super::transport::{self, Handled, Peers};
use crate::registry::Registry;
use crate::remote::shard::{self, Place, View};
use crate::remote::wire::WireRequest;
use crate::remote::{Answer, Kind, Outgoing, Refusal, Release, Route};
use crate::runtime::Runtime;

/// What serving needs: who this node is, what it knows, its peers.
pub(crate) struct Node {
    pub(crate) me: String,
    pub(crate) shards: u32,
    pub(crate) view: RwLock<View>,
    pub(crate) peers: Peers,
    /// Hand-offs this node is making or receiving (`handoff.rs`).
    pub(crate) handoff: super::handoff::State,
    /// The node is handing its shards away (`Cluster::drain`).
    pub(crate) draining: std::sync::atomic::AtomicBool,
    /// Its replication, once it serves (`replicate.rs`).
    pub(crate) replication: std::sync::OnceLock<Arc<super::replicate::Replication>>,
    /// How long a lost owner's sockets wait for their objects' next owner
    /// (`rehome.rs`), in milliseconds; 0: they close at once.
    pub(crate) socket_wait_ms: std::sync::atomic::AtomicU64,
}

impl Node {
    pub(crate) fn new(me: &str, shards: u32, view: View, peers: Peers) -> Node {
        Node {
            me: me.to_string(),
            shards,
            view: RwLock::new(view),
            peers,
            handoff: super::handoff::State::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            replication: std::sync::OnceLock::new(),
            socket_wait_ms: std::sync::atomic::AtomicU64::new(
                u64::try_from(super::rehome::SOCKET_FAILOVER_WAIT.as_millis()).unwrap_or(u64::MAX),
            ),
        }
    }

    /// How long a lost owner's sockets wait for their objects' next owner.
    pub(crate) fn socket_failover_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.socket_wait_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    pub(crate) fn set_socket_failover_wait(&self, wait: std::time::Duration) {
        self.socket_wait_ms.store(
            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Routes `runtime`'s events through `node` and answers peers on
/// `endpoint` until `shutdown`.
pub(crate) fn attach(
    node: &Arc<Node>,
    runtime: &Runtime,
    endpoint: quinn::Endpoint,
    shutdown: CancellationToken,
) -> Result<(), ClusterError> {
    let route: Arc<dyn Route> = Arc::new(ClusterRoute(node.clone()));
    runtime
        .shared()
        .route
        .set(route)
        .map_err(|_| ClusterError::Config("this runtime already serves a cluster".into()))?;
    let registry = runtime.registry().clone();
    node.handoff.attach(runtime);
    let handler: Arc<dyn Fn(WireRequest) -> Handled + Send + Sync> = {
        let node = node.clone();
        Arc::new(move |req| handle(&node, &registry, req))
    };
    let links = super::sockets::attach(node, runtime, endpoint.clone(), handler.clone())?;
    let repl = super::replicate_hook::attach(node, runtime, endpoint.clone(), shutdown.clone())?;
    tokio::spawn(transport::serve(endpoint, shutdown, handler, links, repl));
    Ok(())
}

/// The server side of one request: checks this node owns the shard at
/// that epoch, then queues the event (in arrival order).
fn handle(node: &Arc<Node>, registry: &Arc<Registry>, req: WireRequest) -> Handled {
    if req.kind == Kind::HandOff {
        return super::receive::receive(node, req);
    }
    let Ok(id) = crate::id::parse_hex(&req.id) else {
        return Handled::Now(Err(Refusal::Failed {
            message: "malformed object id".into(),
        }));
    };
    let shard = shard::shard_of(&id, node.shards);
    if shard != req.shard {
        return Handled::Now(Err(Refusal::Failed {
            message: format!("the object is in shard {shard}, not {}", req.shard),
        }));
    }
    let admitted = crate::sync::read(&node.view).admit(shard, req.epoch, Instant::now());
    match admitted {
        Ok(()) => {}
        Err(Place::Remote { node: owner, epoch }) => {
            return Handled::Now(Err(Refusal::Moved { owner, epoch }));
        }
        Err(Place::Unavailable(reason)) => {
            return Handled::Now(Err(Refusal::Unavailable { reason }));
        }
        Err(Place::Moving) => return held(node, registry, shard, req),
        Err(Place::Local { epoch }) => {
            return Handled::Now(Err(Refusal::Unavailable {
                reason: format!(
                    "this node owns the shard at epoch {epoch}, older than {}",
                    req.epoch
                ),
            }));
        }
    }
    run_here(node, registry, &req)
}

/// Queues an admitted request's event into its namespace here. Its
/// answer leaves only if this node still holds the lease it was admitted
/// under: a node paused past its lease (whose shards a follower may have
/// taken over meanwhile) answers nothing it ran across the pause, not
/// even a read (its writes are fenced by replication already).
fn run_here(node: &Arc<Node>, registry: &Registry, req: &WireRequest) -> Handled {
    let Some(ns) = registry.get(&req.ns) else {
        return Handled::Now(Err(Refusal::Failed {
            message: format!("namespace {:?} is not registered on {}", req.ns, node.me),
        }));
    };
    let lease = crate::sync::read(&node.view).lease_gen;
    match ns.remote_event(&req.id, req.kind, &req.chain, &req.body) {
        Ok(fut) => {
            let node = node.clone();
            Handled::Later(Box::pin(async move {
                let answer = fut.await;
                let view = crate::sync::read(&node.view);
                if view.lease_gen == lease && view.lease.alive(Instant::now()) {
                    answer
                } else {
                    Err(Refusal::Unavailable {
                        reason: "this node's lease lapsed while the event ran; it may or may not have run".into(),
                    })
                }
            }))
        }
        Err(r) => Handled::Now(Err(r)),
    }
}

/// A peer's request for a shard this node is handing off: held with the
/// local events, in arrival order. When the move ends it is sent on to the
/// new owner from here (so requests keep their order), or run here if the
/// move did not happen. An upgrade is answered "moved" instead: its socket
/// link runs between the edge and the owner.
fn held(node: &Arc<Node>, registry: &Arc<Registry>, shard: u32, req: WireRequest) -> Handled {
    let bytes = req.body.get().len();
    let (tx, rx) = oneshot::channel::<crate::remote::Answer>();
    let then: crate::remote::Held = {
        let (node, registry) = (node.clone(), registry.clone());
        Box::new(move |release| {
            let handled = match release {
                Release::To { node: owner, epoch } if req.kind == Kind::Upgrade => {
                    Handled::Now(Err(Refusal::Moved {
                        owner: owner.to_string(),
                        epoch,
                    }))
                }
                Release::To { node: owner, epoch } => {
                    let addr = crate::sync::read(&node.view)
                        .members
                        .get(owner)
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    let sent = match addr {
                        Some(addr) => node.peers.send(owner, addr, WireRequest { epoch, ..req }),
                        None => Err(Refusal::Moved {
                            owner: owner.to_string(),
                            epoch,
                        }),
                    };
                    match sent {
                        Ok(answer) => Handled::Later(Box::pin(async move {
                            answer.await.unwrap_or_else(|_| {
                                Err(Refusal::Unavailable {
                                    reason: "the connection to the new owner was lost".into(),
                                })
                            })
                        })),
                        Err(r) => Handled::Now(Err(r)),
                    }
                }
                // Admitted before the hand-off began.
                Release::Here => run_here(&node, &registry, &req),
                Release::Again => handle(&node, &registry, req),
            };
            match handled {
                Handled::Now(a) => {
                    let _ = tx.send(a);
                }
                Handled::Later(a) => {
                    tokio::spawn(async move {
                        let _ = tx.send(a.await);
                    });
                }
            }
        })
    };
    if let Err(capacity) = node.handoff.hold(shard, bytes, then) {
        return Handled::Now(Err(Refusal::Overloaded { capacity }));
    }
    Handled::Later(Box::pin(async move {
        rx.await.unwrap_or_else(|_| {
            Err(Refusal::Unavailable {
                reason: "the event was dropped during a hand-off".into(),
            })
        })
    }))
}

struct ClusterRoute(Arc<Node>);

impl Route for ClusterRoute {
    fn view(&self) -> &RwLock<View> {
        &self.0.view
    }

    fn hold(&self, id: &[u8; 32], then: crate::remote::Held) -> Result<(), usize> {
        self.0
            .handoff
            .hold(shard::shard_of(id, self.0.shards), 0, then)
    }

    fn send(
        &self,
        node: &str,
        epoch: u64,
        out: Outgoing,
    ) -> Result<oneshot::Receiver<Answer>, Refusal> {
        let addr = crate::sync::read(&self.0.view).members.get(node).cloned();
        let Some(addr) = addr.and_then(|a| a.parse::<SocketAddr>().ok()) else {
            return Err(Refusal::Unavailable {
                reason: format!("{node} is not a live member"),
            });
        };
        let req = WireRequest {
            seq: 0,
            ns: out.ns.to_string(),
            id: crate::id::hex(&out.id),
            shard: shard::shard_of(&out.id, self.0.shards),
            epoch,
            kind: out.kind,
            chain: out.chain.iter().map(crate::id::hex).collect(),
            body: out.body,
        };
        if node == self.0.me {
            // "Moved" here: the shard came to this node after the event
            // left. It runs as a peer's would (the epoch checked).
            let (_, registry) = self
                .0
                .handoff
                .runtime()
                .map_err(|reason| Refusal::Unavailable { reason })?;
            let (tx, rx) = oneshot::channel();
            match handle(&self.0, &registry, req) {
                Handled::Now(a) => {
                    let _ = tx.send(a);
                }
                Handled::Later(answer) => {
                    tokio::spawn(async move {
                        let _ = tx.send(answer.await);
                    });
                }
            }
            return Ok(rx);
        }
        self.0.peers.send(node, addr, req)
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
