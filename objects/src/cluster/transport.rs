//! Moving frames between nodes over QUIC. One connection per peer and
//! direction; on it one bidirectional stream carries requests one way and
//! replies the other. Requests to one peer are written in the order they
//! were queued and the receiver queues them in the order it reads them, so
//! calls through one stub keep their order across nodes (E-order).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::remote::wire::{self, WireReply, WireRequest};
use crate::remote::{Answer, Refusal};

/// Requests queued for one peer and not yet written.
pub(crate) const PEER_QUEUE: usize = 4096;
/// Requests written to one peer and not yet answered.
pub(crate) const PEER_IN_FLIGHT: usize = 65_536;
/// Replies queued on one inbound stream and not yet written.
const REPLY_QUEUE: usize = 4096;

struct Queued {
    req: WireRequest,
    reply: oneshot::Sender<Answer>,
}

struct Peer {
    /// Where it was reached: a node that restarts comes back elsewhere.
    addr: SocketAddr,
    tx: mpsc::Sender<Queued>,
    dead: Arc<AtomicBool>,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>;

/// The client side: a connection per peer node, made on first use and
/// again after it failed.
pub(crate) struct Peers {
    endpoint: quinn::Endpoint,
    peers: Mutex<HashMap<String, Peer>>,
    shutdown: CancellationToken,
}

fn unavailable(reason: String) -> Refusal {
    Refusal::Unavailable { reason }
}

impl Peers {
    pub(crate) fn new(endpoint: quinn::Endpoint, shutdown: CancellationToken) -> Peers {
        Peers {
            endpoint,
            peers: Mutex::new(HashMap::new()),
            shutdown,
        }
    }

    /// Queues a request for `node` at `addr`; the receiver gets the answer.
    pub(crate) fn send(
        &self,
        node: &str,
        addr: SocketAddr,
        req: WireRequest,
    ) -> Result<oneshot::Receiver<Answer>, Refusal> {
        let (tx, rx) = oneshot::channel();
        let mut peers = crate::sync::lock(&self.peers);
        let fresh = match peers.get(node) {
            Some(p) if p.addr == addr && !p.dead.load(Ordering::Acquire) && !p.tx.is_closed() => {
                None
            }
            _ => Some(self.connect(node, addr)),
        };
        if let Some(p) = fresh {
            peers.insert(node.to_string(), p);
        }
        let Some(peer) = peers.get(node) else {
            return Err(unavailable(format!("no connection to {node}")));
        };
        match peer.tx.try_send(Queued { req, reply: tx }) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Refusal::Overloaded {
                capacity: PEER_QUEUE,
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(unavailable(format!("the connection to {node} closed")))
            }
        }
    }

    fn connect(&self, node: &str, addr: SocketAddr) -> Peer {
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let dead = Arc::new(AtomicBool::new(false));
        let endpoint = self.endpoint.clone();
        let node = node.to_string();
        let flag = dead.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = run_peer(endpoint, node, addr, rx, flag.clone()) => {}
                () = shutdown.cancelled() => {}
            }
            flag.store(true, Ordering::Release);
        });
        Peer { addr, tx, dead }
    }
}

async fn run_peer(
    endpoint: quinn::Endpoint,
    node: String,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Queued>,
    dead: Arc<AtomicBool>,
) {
    let opened = async {
        let conn = endpoint
            .connect(addr, &node)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((conn, send, recv))
    };
    let (conn, mut send, recv) = match opened.await {
        Ok(x) => x,
        Err(e) => {
            dead.store(true, Ordering::Release);
            rx.close();
            while let Some(q) = rx.recv().await {
                let _ = q.reply.send(Err(unavailable(format!(
                    "cannot reach {node} at {addr}: {e}"
                ))));
            }
            return;
        }
    };
    let pending: Pending = Arc::default();
    let reader = tokio::spawn(read_replies(
        recv,
        pending.clone(),
        node.clone(),
        dead.clone(),
    ));
    let mut seq = 0u64;
    while let Some(mut q) = rx.recv().await {
        seq += 1;
        q.req.seq = seq;
        let frame = match wire::encode(&q.req) {
            Ok(f) => f,
            Err(e) => {
                let _ = q.reply.send(Err(Refusal::Failed {
                    message: e.to_string(),
                }));
                continue;
            }
        };
        {
            let mut p = crate::sync::lock(&pending);
            if p.len() >= PEER_IN_FLIGHT {
                let _ = q.reply.send(Err(Refusal::Overloaded {
                    capacity: PEER_IN_FLIGHT,
                }));
                continue;
            }
            p.insert(seq, q.reply);
        }
        if send.write_all(&frame).await.is_err() || reader.is_finished() {
            break;
        }
    }
    dead.store(true, Ordering::Release);
    rx.close();
    let reason = format!("the connection to {node} was lost");
    while let Some(q) = rx.recv().await {
        let _ = q.reply.send(Err(unavailable(reason.clone())));
    }
    let _ = send.finish();
    reader.abort();
    conn.close(0u32.into(), b"done");
    for (_, tx) in crate::sync::lock(&pending).drain() {
        let _ = tx.send(Err(unavailable(reason.clone())));
    }
}

async fn read_replies(
    mut recv: quinn::RecvStream,
    pending: Pending,
    node: String,
    dead: Arc<AtomicBool>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        loop {
            match wire::decode::<WireReply>(&buf) {
                Ok(Some((reply, used))) => {
                    buf.drain(..used);
                    let seq = reply.seq;
                    let answer = reply.into_result().unwrap_or_else(|e| {
                        Err(Refusal::Failed {
                            message: e.to_string(),
                        })
                    });
                    if let Some(tx) = crate::sync::lock(&pending).remove(&seq) {
                        let _ = tx.send(answer);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer = %node, error = %e, "bad frame from peer; dropping the connection");
                    break 'read;
                }
            }
        }
    }
    // New requests go to a new connection from now on.
    dead.store(true, Ordering::Release);
    let reason = format!("the connection to {node} was lost");
    for (_, tx) in crate::sync::lock(&pending).drain() {
        let _ = tx.send(Err(unavailable(reason.clone())));
    }
}

/// What the server side does with one request: answer at once, or later.
pub(crate) enum Handled {
    Now(Answer),
    Later(crate::registry::RemoteAnswer),
}

/// Accepts peers' connections until shutdown; `handle` queues each
/// request (in order) and says how it will be answered.
pub(crate) async fn serve(
    endpoint: quinn::Endpoint,
    shutdown: CancellationToken,
    handle: Arc<dyn Fn(WireRequest) -> Handled + Send + Sync>,
    links: LinkServer,
    repl: LinkServer,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            () = shutdown.cancelled() => None,
        };
        let Some(incoming) = incoming else { break };
        let handle = handle.clone();
        let shutdown = shutdown.clone();
        let links = links.clone();
        let repl = repl.clone();
        tokio::spawn(async move {
            // The TLS handshake refuses a peer without a CA certificate.
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "refused a cluster connection");
                    return;
                }
            };
            loop {
                let stream = tokio::select! {
                    s = conn.accept_bi() => s,
                    () = shutdown.cancelled() => break,
                };
                let Ok((send, recv)) = stream else { break };
                tokio::spawn(route_stream(
                    send,
                    recv,
                    handle.clone(),
                    conn.clone(),
                    [links.clone(), repl.clone()],
                ));
            }
        });
    }
}

/// Serves a WebSocket link (a stream that starts with
/// `socket_wire::LINK_MAGIC`).
pub(crate) type LinkServer = Arc<dyn Fn(quinn::SendStream, quinn::RecvStream) + Send + Sync>;

/// A stream carries requests, or (by its first four bytes) a socket link
/// or replication messages (`[links, replication]`).
async fn route_stream(
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    handle: Arc<dyn Fn(WireRequest) -> Handled + Send + Sync>,
    conn: quinn::Connection,
    [links, repl]: [LinkServer; 2],
) {
    let mut head = [0u8; 4];
    if recv.read_exact(&mut head).await.is_err() {
        return;
    }
    if &head == crate::remote::socket_wire::LINK_MAGIC {
        links(send, recv);
    } else if &head == crate::remote::replica::wire::REPL_MAGIC {
        repl(send, recv);
    } else {
        serve_stream(send, recv, handle, conn, head.to_vec()).await;
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    handle: Arc<dyn Fn(WireRequest) -> Handled + Send + Sync>,
    conn: quinn::Connection,
    mut buf: Vec<u8>,
) {
    let (tx, mut rx) = mpsc::channel::<WireReply>(REPLY_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let frame = match wire::encode(&reply) {
                Ok(f) => f,
                Err(e) => match wire::encode(&WireReply::new(
                    reply.seq,
                    Err(Refusal::Failed {
                        message: e.to_string(),
                    }),
                )) {
                    Ok(f) => f,
                    Err(_) => continue,
                },
            };
            if send.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        loop {
            match wire::decode::<WireRequest>(&buf) {
                Ok(Some((req, used))) => {
                    buf.drain(..used);
                    let seq = req.seq;
                    match handle(req) {
                        Handled::Now(a) => {
                            if tx.send(WireReply::new(seq, a)).await.is_err() {
                                break 'read;
                            }
                        }
                        Handled::Later(fut) => {
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                let a = fut.await;
                                let _ = tx.send(WireReply::new(seq, a)).await;
                            });
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "bad frame from a peer; closing its connection");
                    conn.close(1u32.into(), b"malformed frame");
                    break 'read;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
