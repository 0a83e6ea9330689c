//! How replication plugs into a node: the setup when it starts serving
//! (the writer's hook, the server of peers' replication streams), and the
//! hook itself, which the store's writer calls for every commit group
//! (`storage::replication::Replicate`).

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::ClusterError;
use super::node::Node;
use super::replicate::{Replication, answer, label, mark, not_released, parts};
use super::transport::LinkServer;
use crate::remote::replica::wire::{MAX_GROUP_BYTES, WireBatch};
use crate::remote::shard::shard_of;
use crate::runtime::Runtime;
use crate::storage::Batch;
use crate::storage::replication::{Mark, Replicate, Reply};

/// Sets up the node's replication: the writer's hook and the server of
/// peers' replication streams.
pub(super) fn attach(
    node: &Arc<Node>,
    runtime: &Runtime,
    endpoint: quinn::Endpoint,
    shutdown: CancellationToken,
) -> Result<LinkServer, ClusterError> {
    let store = &runtime.shared().store;
    let net = super::replicate_net::Net::new(node, endpoint, shutdown);
    let repl = Arc::new(Replication::new(node, runtime.shared(), net));
    let hook: Arc<dyn crate::storage::replication::Replicate> = repl.clone();
    store
        .replication
        .set(hook)
        .map_err(|_| ClusterError::Config("this store already replicates for a cluster".into()))?;
    node.replication
        .set(repl.clone())
        .map_err(|_| ClusterError::Config("this node already replicates".into()))?;
    Ok(Arc::new(move |_send, recv| {
        tokio::spawn(super::replicate_net::serve(repl.clone(), recv));
    }))
}

impl Replicate for Replication {
    fn shard(&self, id: &[u8; 32]) -> u32 {
        shard_of(id, self.shards)
    }

    fn label(&self, shard: u32) -> Option<Mark> {
        let mut st = crate::sync::lock(&self.state);
        if st.fenced.contains(&shard) && !st.leads.contains_key(&shard) {
            // Stored as the label no primary issues (this copy of the
            // shard is no replica's now); its answers fail in `durable`.
            return Some(Mark::REWRITTEN);
        }
        let lead = st.leads.get_mut(&shard)?;
        // No other node holds or copies the shard: its writes commit
        // unlabelled and are answered as soon as they are durable here (a
        // later learner's copy takes them along). A deposed primary still
        // labels, so that nothing of it is released.
        if !(lead.p.replicating() || lead.copying > 0 || lead.p.deposed()) {
            return None;
        }
        let g = lead.p.append(Instant::now());
        let m = mark(g.label);
        lead.committing = Some(g);
        Some(m)
    }

    fn retract(&self, shard: u32, mark: Mark) {
        let mut st = crate::sync::lock(&self.state);
        if let Some(lead) = st.leads.get_mut(&shard) {
            lead.p.retract(label(mark));
            lead.committing = None;
        }
    }

    fn committed(&self, shard: u32, mark: Mark, batches: &[&Batch]) {
        let mut st = crate::sync::lock(&self.state);
        let max_log = self.limits.max_log;
        let Some(lead) = st.leads.get_mut(&shard) else {
            return;
        };
        let Some(g) = lead.committing.take().filter(|g| g.label == label(mark)) else {
            return;
        };
        let p = Arc::new(parts(batches));
        let weight: usize = p.iter().flatten().map(WireBatch::weight).sum();
        lead.recent.push_back((g.label, p.clone()));
        lead.recent_bytes += weight;
        while lead.recent.len() > max_log || lead.recent_bytes > MAX_GROUP_BYTES {
            let Some((_, old)) = lead.recent.pop_front() else {
                break;
            };
            lead.recent_bytes -= old.iter().flatten().map(WireBatch::weight).sum::<usize>();
        }
        for to in &g.to {
            self.send_group(to, shard, g.epoch, g.prev, g.label, &p);
        }
    }

    fn durable(&self, shard: u32, seq: u64, replies: Vec<Reply>) {
        let out = {
            let mut st = crate::sync::lock(&self.state);
            // Sequence 0 is no group: a fenced shard's commit.
            let lead = st.leads.get_mut(&shard).filter(|_| seq > 0);
            let Some(lead) = lead else {
                drop(st);
                for r in replies {
                    let _ = r.send(Err(not_released("this node no longer serves the shard")));
                }
                return;
            };
            lead.p.durable(seq);
            lead.parked.entry(seq).or_default().extend(replies);
            Self::released(lead)
        };
        answer(out);
    }
}
