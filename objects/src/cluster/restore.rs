//! Restoring a lost node's shard on a live node from a backup of its data
//! dir: the shard's objects are copied in (as a hand-off's receiver writes
//! them) and made durable, then one etcd transaction, comparing the lost
//! owner and its epoch, names this node the owner.

use std::sync::Arc;
use std::time::Instant;

use super::ClusterError;
use super::etcd::Etcd;
use super::handoff::{Copied, ShardReader, blocking, remove_local, write_objects};
use super::node::Node;
use crate::remote::shard;

/// What a restore brought back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The shard restored.
    pub shard: u32,
    /// The epoch this node serves it at.
    pub epoch: u64,
    /// Objects copied from the backup.
    pub objects: usize,
    /// Keys copied.
    pub keys: usize,
    /// Bytes of keys and values copied.
    pub bytes: usize,
}

/// Brings `shard` of a lost node back on this one from a backup of that
/// node's data dir: copies the shard's objects in (durably, replacing
/// whatever this node held of them), then one etcd transaction, comparing
/// the lost owner and its epoch, names this node the owner.
pub(crate) async fn restore(
    node: &Arc<Node>,
    etcd: &mut Etcd,
    shard: u32,
    backup: &std::path::Path,
) -> Result<RestoreReport, ClusterError> {
    let refused = |m: String| ClusterError::HandOff(format!("restore of shard {shard}: {m}"));
    let (shared, _) = node.handoff.runtime().map_err(refused)?;
    let (prev, lease_gen_at) = {
        let view = crate::sync::read(&node.view);
        if shard >= view.shards {
            return Err(refused(format!("there are {} shards", view.shards)));
        }
        let Some(prev) = view.owners.get(&shard).cloned() else {
            return Err(refused("it has no owner yet: nothing was lost".into()));
        };
        if prev.node == node.me {
            return Err(refused(
                "this node owns it: restore a node's own data dir while it is stopped (Admin::import or a copy of the backup)".into(),
            ));
        }
        if view.members.contains_key(&prev.node) {
            return Err(refused(format!(
                "its owner {} is live: hand it off instead",
                prev.node
            )));
        }
        if !view.lease.alive(Instant::now()) {
            return Err(refused("this node holds no live lease".into()));
        }
        (prev, view.lease_gen)
    };
    if node.draining.load(std::sync::atomic::Ordering::Acquire) {
        return Err(refused("this node is draining".into()));
    }
    if !backup.join("data.mdb").is_file() {
        return Err(refused(format!("{} holds no data.mdb", backup.display())));
    }
    let dir = backup.to_path_buf();
    let opts = crate::storage::StoreOptions::default();
    let store = blocking(move || crate::storage::Store::open(&dir, &opts))
        .await
        .map_err(refused)?;
    let shards = node.shards;
    let mut alarms = Vec::new();
    let repl = node.replication.get().cloned();
    let copied = async {
        if let Some(r) = &repl {
            r.unreplicate(shard).await?;
        }
        remove_local(&shared, shard, shards).await?;
        let mut reader = ShardReader::new(store.clone(), shard, shards).await?;
        while let Some(objects) = reader.next_part().await? {
            alarms.extend(write_objects(&shared, objects).await?);
        }
        Ok::<Copied, String>(reader.copied)
    }
    .await;
    store.writer.close().await;
    // A trail made from here on starts from the label no primary issues.
    if let Some(r) = &repl {
        r.rewritten(shard);
    }
    let copied = match copied {
        Ok(c) => c,
        Err(e) => {
            let _ = remove_local(&shared, shard, shards).await;
            return Err(refused(e));
        }
    };
    let claim = shard::reassign(shard, prev, &node.me);
    match etcd.apply(&claim).await {
        Ok(true) => {}
        Ok(false) => {
            let _ = remove_local(&shared, shard, shards).await;
            return Err(refused("its owner changed meanwhile".into()));
        }
        Err(e) => {
            return Err(refused(format!(
                "the ownership transaction's outcome is unknown ({e}); this node re-claims the shard at its next reading of etcd if it went through"
            )));
        }
    }
    // Its groups are labelled from the first one it serves.
    if let Some(r) = &repl {
        r.own(
            shard,
            &crate::remote::replica::Config {
                epoch: claim.next.epoch,
                primary: node.me.clone(),
                followers: Vec::new(),
            },
        );
    }
    let serves =
        crate::sync::write(&node.view).handed(shard, &claim.next, lease_gen_at, Instant::now());
    if !serves {
        tracing::info!(
            shard,
            "the restored shard waits for this node to re-claim it"
        );
    }
    for (key, at) in alarms {
        shared.alarms.committed(key, Some(at));
    }
    Ok(RestoreReport {
        shard,
        epoch: claim.next.epoch,
        objects: copied.objects,
        keys: copied.keys,
        bytes: copied.bytes,
    })
}
