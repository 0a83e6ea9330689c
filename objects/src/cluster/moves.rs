//! Moving shards between live nodes, as the operator or the cluster asks:
//! one shard by hand, all of a node's (drain), or those rendezvous hashing
//! now gives to others (rebalance, also run by the node itself after a
//! member joined when `ClusterOptions::rebalance` is on); and restoring a
//! lost node's shard from a backup. The steps of one move are in
//! `handoff.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Cluster, ClusterError, HandOffReport, Inner, RestoreReport, handoff, restore};
use crate::remote::shard::{self, Place};

impl Cluster {
    /// Moves `shard`, which this node serves, to the live member `to`
    /// without losing or repeating an event: see `docs/cluster.md`,
    /// "Moving shards". The shard's events wait meanwhile (the report
    /// says how long); its objects' WebSockets stay open and follow them
    /// (only those of a node that does not answer in time are closed
    /// with 1012, reconnect).
    ///
    /// # Errors
    ///
    /// [`ClusterError::HandOff`]: this node does not serve the shard, `to`
    /// is not a live member, a live object did not leave memory in time,
    /// or `to` refused or did not answer. The shard then stays here.
    pub async fn hand_off(&self, shard: u32, to: &str) -> Result<HandOffReport, ClusterError> {
        let mut etcd = self.inner.etcd.clone();
        handoff::hand_off(&self.inner.node, &mut etcd, shard, to).await
    }

    /// Restores `shard`, whose owner is down (not a live member), on this
    /// node from `backup`, a copy of the lost owner's data dir
    /// (`Admin::backup_live`, `Runtime::backup`, or the dir itself): its
    /// objects' keys, alarms and names are copied in (replacing what this
    /// node held of them) and made durable, then one etcd transaction,
    /// comparing the old owner and epoch, names this node the owner.
    /// Writes made on the old owner after the backup are lost; if the old
    /// owner comes back, it serves nothing of the shard (etcd names this
    /// node).
    ///
    /// # Errors
    ///
    /// [`ClusterError::HandOff`]: the owner is live (hand the shard off
    /// instead), this node owns it, the backup does not open, or the
    /// owner changed meanwhile.
    pub async fn restore_shard(
        &self,
        shard: u32,
        backup: impl AsRef<std::path::Path>,
    ) -> Result<RestoreReport, ClusterError> {
        let mut etcd = self.inner.etcd.clone();
        restore::restore(&self.inner.node, &mut etcd, shard, backup.as_ref()).await
    }

    /// Hands every shard this node serves to the other live members (each
    /// to the one rendezvous hashing picks among those not draining), one
    /// shard at a time, before the node is stopped for good or for
    /// maintenance. From then on the node is marked draining in etcd, so
    /// no shard is moved to it, until it restarts. Shards it does not
    /// serve now (its lease lapsed) are not moved.
    ///
    /// # Errors
    ///
    /// etcd unreachable, no other live member that is not draining, or
    /// the first hand-off that failed (the shards moved before it stay
    /// moved).
    pub async fn drain(&self) -> Result<Vec<HandOffReport>, ClusterError> {
        self.inner.node.draining.store(true, Ordering::Release);
        let lease = *crate::sync::lock(&self.inner.lease);
        if let Some(lease) = lease {
            let addr = self.quic_addr()?.to_string();
            let mut etcd = self.inner.etcd.clone();
            let zone = self.inner.options.zone.as_deref();
            etcd.register(self.node_id(), &addr, zone, true, lease)
                .await?;
        }
        self.move_shards().await
    }

    /// Moves to other live members the shards this node serves that
    /// rendezvous hashing over the live members not draining gives to
    /// them (after a node joined, about 1/N of each node's shards), one
    /// at a time. Moves nothing while this node drains.
    ///
    /// # Errors
    ///
    /// The first hand-off that failed (the shards moved before it stay
    /// moved).
    pub async fn rebalance(&self) -> Result<Vec<HandOffReport>, ClusterError> {
        if self.inner.node.draining.load(Ordering::Acquire) {
            return Ok(Vec::new());
        }
        self.move_shards().await
    }

    /// Hands off each served shard whose rendezvous winner, among the live
    /// members that are not draining (nor this node, if it drains), is
    /// another node.
    async fn move_shards(&self) -> Result<Vec<HandOffReport>, ClusterError> {
        let me = self.node_id().to_string();
        let leaving = self.inner.node.draining.load(Ordering::Acquire);
        // Fresh from etcd: a node that started draining a moment ago is
        // not picked.
        let (members, draining) = self.inner.etcd.clone().members().await?;
        {
            let mut view = crate::sync::write(&self.inner.node.view);
            view.members = members;
            view.draining = draining;
        }
        let moves: Vec<(u32, String)> = {
            let view = crate::sync::read(&self.inner.node.view);
            let now = Instant::now();
            let targets: Vec<&str> = view
                .members
                .keys()
                .filter(|m| !(view.draining.contains(*m) || (leaving && **m == me)))
                .map(String::as_str)
                .collect();
            if leaving && targets.is_empty() {
                return Err(ClusterError::HandOff(
                    "drain: no other live member that is not draining takes shards".into(),
                ));
            }
            (0..view.shards)
                .filter(|s| matches!(view.place(*s, now), Place::Local { .. }))
                .filter_map(|s| {
                    shard::rendezvous(s, targets.iter().copied())
                        .filter(|to| *to != me)
                        .map(|to| (s, to.to_string()))
                })
                .collect()
        };
        let mut done = Vec::with_capacity(moves.len());
        for (s, to) in moves {
            done.push(self.hand_off(s, &to).await?);
        }
        Ok(done)
    }
}

/// How long a rebalance that failed waits before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The state of rebalancing by itself.
#[derive(Default)]
pub(super) struct Auto {
    /// The members (not draining) at the last look; `None` before the
    /// first.
    seen: std::sync::Mutex<Option<BTreeSet<String>>>,
    /// A member joined and this node has not rebalanced since.
    pending: AtomicBool,
    /// A rebalance runs (or waits to retry).
    running: AtomicBool,
}

/// After each reading of etcd: if a member that is not draining joined
/// since the last one, rebalance (one at a time; after a failure, again
/// 30 s later).
pub(super) fn after_refresh(inner: &Arc<Inner>) {
    let auto = &inner.rebalancing;
    let now: BTreeSet<String> = {
        let view = crate::sync::read(&inner.node.view);
        view.members
            .keys()
            .filter(|m| !view.draining.contains(*m))
            .cloned()
            .collect()
    };
    let joined = {
        let mut seen = crate::sync::lock(&auto.seen);
        let joined = seen
            .as_ref()
            .is_some_and(|before| now.iter().any(|m| !before.contains(m)));
        *seen = Some(now);
        joined
    };
    if joined {
        auto.pending.store(true, Ordering::Release);
    }
    if !auto.pending.load(Ordering::Acquire) || auto.running.swap(true, Ordering::AcqRel) {
        return;
    }
    let cluster = Cluster {
        inner: inner.clone(),
    };
    tokio::spawn(async move {
        let auto = &cluster.inner.rebalancing;
        auto.pending.store(false, Ordering::Release);
        match cluster.rebalance().await {
            Ok(moved) => {
                tracing::info!(moved = moved.len(), "rebalanced after a member joined");
            }
            Err(e) => {
                tracing::warn!(error = %e, "rebalancing failed; trying again in 30 s");
                auto.pending.store(true, Ordering::Release);
                tokio::select! {
                    () = tokio::time::sleep(RETRY_AFTER) => {}
                    () = cluster.inner.shutdown.cancelled() => {}
                }
            }
        }
        auto.running.store(false, Ordering::Release);
    });
}
