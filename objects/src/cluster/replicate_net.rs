//! Replication messages between nodes: one QUIC stream per peer and
//! direction, opened on first use. It starts with
//! `remote::replica::wire::REPL_MAGIC` and the sender's node id (one
//! frame), then carries replication messages in order. What waits to be
//! written to one peer is bounded in frames and in bytes; a peer that does
//! not keep up, or cannot be reached, is reported unreachable, and the
//! primaries remove it from their shards' configurations.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::node::Node;
use super::replicate::Replication;
use crate::remote::replica::wire::{REPL_MAGIC, ReplMessage};
use crate::remote::wire;

/// Frames queued for one peer and not yet written.
const QUEUE: usize = 4096;
/// Bytes queued for one peer and not yet written.
const QUEUE_BYTES: usize = 64 << 20;

struct Out {
    addr: SocketAddr,
    tx: mpsc::Sender<(Vec<u8>, OwnedSemaphorePermit)>,
    bytes: Arc<Semaphore>,
    dead: CancellationToken,
}

/// The outgoing streams of one node's replication.
pub(crate) struct Net {
    me: String,
    endpoint: quinn::Endpoint,
    shutdown: CancellationToken,
    node: Weak<Node>,
    out: Mutex<HashMap<String, Out>>,
    /// Peers found unreachable since replication last asked
    /// ([`Net::take_unreachable`]). Kept here, not told at once: a send
    /// happens under replication's lock.
    unreachable: Arc<Mutex<Vec<String>>>,
}

impl Net {
    pub(crate) fn new(
        node: &Arc<Node>,
        endpoint: quinn::Endpoint,
        shutdown: CancellationToken,
    ) -> Net {
        Net {
            me: node.me.clone(),
            endpoint,
            shutdown,
            node: Arc::downgrade(node),
            out: Mutex::new(HashMap::new()),
            unreachable: Arc::default(),
        }
    }

    fn unreachable(&self, to: &str, why: &str) {
        crate::sync::lock(&self.out).remove(to);
        let mut gone = crate::sync::lock(&self.unreachable);
        // Once per peer until replication reads the list (a send per group
        // may find the same peer gone many times in between).
        if !gone.iter().any(|n| n == to) {
            tracing::warn!(peer = to, why, "replication peer unreachable");
            gone.push(to.to_string());
        }
    }

    /// The peers found unreachable since the last call.
    pub(crate) fn take_unreachable(&self) -> Vec<String> {
        std::mem::take(&mut *crate::sync::lock(&self.unreachable))
    }

    /// Queues `msg` for `to`; never waits.
    pub(crate) fn send(&self, to: &str, msg: &ReplMessage) {
        let frame = match wire::encode(msg) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(peer = to, error = %e, "a replication message does not encode");
                return;
            }
        };
        let addr = self.node.upgrade().and_then(|n| {
            crate::sync::read(&n.view)
                .members
                .get(to)
                .and_then(|a| a.parse::<SocketAddr>().ok())
        });
        let Some(addr) = addr else {
            self.unreachable(to, "not a live member");
            return;
        };
        let queued = {
            let mut out = crate::sync::lock(&self.out);
            let fresh = match out.get(to) {
                Some(o) if o.addr == addr && !o.dead.is_cancelled() => None,
                _ => Some(self.connect(to, addr)),
            };
            if let Some(o) = fresh {
                out.insert(to.to_string(), o);
            }
            out.get(to).and_then(|o| {
                let n = u32::try_from(frame.len()).ok()?;
                let permit = o.bytes.clone().try_acquire_many_owned(n).ok()?;
                o.tx.try_send((frame, permit)).ok()
            })
        };
        if queued.is_none() {
            self.unreachable(to, "its queue is full");
        }
    }

    fn connect(&self, to: &str, addr: SocketAddr) -> Out {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dead = self.shutdown.child_token();
        let endpoint = self.endpoint.clone();
        let me = self.me.clone();
        let node = to.to_string();
        let flag = dead.clone();
        let unreachable = self.unreachable.clone();
        tokio::spawn(async move {
            let why = tokio::select! {
                r = write_to(endpoint, me, node.clone(), addr, rx) => r,
                () = flag.cancelled() => return,
            };
            flag.cancel();
            if let Err(e) = why {
                tracing::warn!(peer = %node, error = %e, "replication stream ended");
                let mut gone = crate::sync::lock(&unreachable);
                if !gone.contains(&node) {
                    gone.push(node);
                }
            }
        });
        Out {
            addr,
            tx,
            bytes: Arc::new(Semaphore::new(QUEUE_BYTES)),
            dead,
        }
    }
}

/// Opens the stream to `node` and writes what is queued, gathering what
/// waits into one write.
async fn write_to(
    endpoint: quinn::Endpoint,
    me: String,
    node: String,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<(Vec<u8>, OwnedSemaphorePermit)>,
) -> Result<(), String> {
    let conn = endpoint
        .connect(addr, &node)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, _recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let mut hello = REPL_MAGIC.to_vec();
    hello.extend(wire::encode(&me).map_err(|e| e.to_string())?);
    send.write_all(&hello).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    while let Some((frame, permit)) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&frame);
        let mut permits = vec![permit];
        while buf.len() < (1 << 20) {
            match rx.try_recv() {
                Ok((f, p)) => {
                    buf.extend_from_slice(&f);
                    permits.push(p);
                }
                Err(_) => break,
            }
        }
        send.write_all(&buf).await.map_err(|e| e.to_string())?;
        drop(permits);
    }
    Ok(())
}

/// Serves one incoming replication stream: the sender's id, then its
/// messages, handled in order. A malformed frame ends the stream.
pub(crate) async fn serve(repl: Arc<Replication>, mut recv: quinn::RecvStream) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut from: Option<String> = None;
    loop {
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
        loop {
            if from.is_none() {
                match wire::decode::<String>(&buf) {
                    Ok(Some((node, used))) if crate::remote::shard::valid_node_id(&node) => {
                        buf.drain(..used);
                        from = Some(node);
                    }
                    Ok(None) => break,
                    _ => {
                        tracing::warn!("a replication stream without a valid sender; dropped");
                        return;
                    }
                }
            }
            let Some(node) = from.as_deref() else { break };
            match wire::decode::<ReplMessage>(&buf) {
                Ok(Some((msg, used))) => {
                    buf.drain(..used);
                    repl.on_message(node, msg).await;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer = node, error = %e, "a bad replication frame; stream dropped");
                    return;
                }
            }
        }
    }
}
