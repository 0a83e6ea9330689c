//! What the storage writer does for replication (the cluster implements
//! the other side, `cluster::replicate`): each commit group's writes are
//! split by shard, a shard this node is primary of gets a label
//! `(epoch, seq)` stored with its data in the same transaction, the writes
//! are handed on to be sent to the followers, and the answers (the output
//! gate) wait until replication releases the label. A follower's writer
//! applies the groups it receives, and installs catch-up copies, each in
//! one transaction with its label. Nothing here knows about the network.

use std::collections::BTreeMap;
use std::sync::Arc;

use heed::RwTxn;
use tokio::sync::oneshot;

use super::store::Dbs;
use super::{Batch, StorageError, Store, layout};

/// A shard's place in its replicated history, stored in `meta` under
/// `repl/` and the shard (u32 big-endian) as epoch and seq (u64
/// big-endian each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mark {
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
}

impl Mark {
    /// Stored when the store's copy of a shard was rewritten outside
    /// replication (a hand-off or a restore): no primary issues it (epochs
    /// never reach it), so a replica that starts from it is refused every
    /// group and catches up by copy.
    pub(crate) const REWRITTEN: Mark = Mark {
        epoch: u64::MAX,
        seq: 0,
    };
}

/// Where a commit's answer goes once it may be given.
pub(crate) type Reply = oneshot::Sender<Result<(), StorageError>>;

/// The writer's side of replication, implemented by the cluster. Every
/// method is called on the writer thread and must not block for long.
pub(crate) trait Replicate: Send + Sync {
    /// The shard an object belongs to.
    fn shard(&self, id: &[u8; 32]) -> u32;
    /// The label of `shard`'s next local group, if this node labels it (it
    /// is the shard's primary). Called before the group commits.
    fn label(&self, shard: u32) -> Option<Mark>;
    /// The group labelled `mark` did not commit: the label is unused.
    fn retract(&self, shard: u32, mark: Mark);
    /// The group labelled `mark` committed (its meta page is not synced
    /// yet): its batches of `shard`, to send to the followers.
    fn committed(&self, shard: u32, mark: Mark, batches: &[&Batch]);
    /// The group `seq` of `shard` is durable here: answer `replies` once
    /// replication releases it (at once, without followers).
    fn durable(&self, shard: u32, seq: u64, replies: Vec<Reply>);
}

/// The hook, set once when the cluster starts (empty: no replication).
pub(crate) type Hook = Arc<std::sync::OnceLock<Arc<dyn Replicate>>>;

/// A group received from a shard's primary, to apply in one transaction.
pub(crate) struct Received {
    pub(crate) shard: u32,
    /// The label the store must hold for the shard for the group to apply
    /// (`None`: whatever it holds).
    pub(crate) prev: Option<Mark>,
    pub(crate) mark: Mark,
    pub(crate) batches: Vec<Batch>,
}

/// A catch-up copy of a shard, to install over what this store holds of
/// it, in one transaction.
pub(crate) struct Copy {
    pub(crate) shard: u32,
    pub(crate) mark: Mark,
    pub(crate) records: Vec<Record>,
}

/// Which table a copied record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    Data,
    Catalog,
    Alarm,
}

/// One stored record of a shard: its table, key (starting with the object
/// id) and value, as stored.
pub(crate) type Record = (Table, Vec<u8>, Vec<u8>);

fn label_key(shard: u32) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..5].copy_from_slice(b"repl/");
    k[5..].copy_from_slice(&shard.to_be_bytes());
    k
}

fn mark_value(m: Mark) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&m.epoch.to_be_bytes());
    v[8..].copy_from_slice(&m.seq.to_be_bytes());
    v
}

fn parse_mark(v: &[u8]) -> Option<Mark> {
    let (e, s) = v.split_first_chunk::<8>()?;
    let s = <[u8; 8]>::try_from(s).ok()?;
    Some(Mark {
        epoch: u64::from_be_bytes(*e),
        seq: u64::from_be_bytes(s),
    })
}

/// `shard`'s label as the transaction sees it (none: the empty history).
pub(crate) fn get_label(
    dbs: Dbs,
    txn: &heed::RoTxn<'_, heed::WithoutTls>,
    shard: u32,
) -> heed::Result<Mark> {
    Ok(dbs
        .meta
        .get(txn, &label_key(shard))?
        .and_then(parse_mark)
        .unwrap_or_default())
}

/// Stores `shard`'s label in the transaction that holds its group.
pub(crate) fn put_label(dbs: Dbs, wtxn: &mut RwTxn<'_>, shard: u32, m: Mark) -> heed::Result<()> {
    dbs.meta.put(wtxn, &label_key(shard), &mark_value(m))
}

/// Replaces what the store holds of the objects `pick` selects with
/// `records` (in one transaction: the caller commits it).
pub(crate) fn install(
    dbs: Dbs,
    wtxn: &mut RwTxn<'_>,
    pick: &dyn Fn(&[u8; 32]) -> bool,
    records: &[Record],
) -> heed::Result<()> {
    let mut ids = Vec::new();
    for entry in dbs.catalog.iter(wtxn)? {
        let (k, _) = entry?;
        if let Ok(id) = <[u8; 32]>::try_from(k)
            && pick(&id)
        {
            ids.push(id);
        }
    }
    for entry in dbs.alarms.iter(wtxn)? {
        let (k, _) = entry?;
        if let Ok(id) = <[u8; 32]>::try_from(k)
            && pick(&id)
        {
            ids.push(id);
        }
    }
    let mut data = Vec::new();
    for entry in dbs.data.iter(wtxn)? {
        let (k, _) = entry?;
        if let Some(id) = k.first_chunk::<32>()
            && pick(id)
        {
            data.push(k.to_vec());
        }
    }
    for k in data {
        dbs.data.delete(wtxn, &k)?;
    }
    for id in ids {
        dbs.catalog.delete(wtxn, &id)?;
        if let Some(t) = dbs
            .alarms
            .get(wtxn, &id)?
            .and_then(layout::parse_alarm_record)
            .map(|(t, _)| t)
        {
            dbs.alarm_index
                .delete(wtxn, &layout::alarm_index_key(t, &id))?;
        }
        dbs.alarms.delete(wtxn, &id)?;
    }
    for (table, k, v) in records {
        match table {
            Table::Data => dbs.data.put(wtxn, k, v)?,
            Table::Catalog => dbs.catalog.put(wtxn, k, v)?,
            Table::Alarm => {
                dbs.alarms.put(wtxn, k, v)?;
                if let (Ok(id), Some((t, _))) = (
                    <[u8; 32]>::try_from(k.as_slice()),
                    layout::parse_alarm_record(v),
                ) {
                    dbs.alarm_index
                        .put(wtxn, &layout::alarm_index_key(t, &id), &[])?;
                }
            }
        }
    }
    Ok(())
}

impl Store {
    /// Every shard's stored label.
    pub(crate) fn labels(&self) -> Result<BTreeMap<u32, Mark>, StorageError> {
        let rtxn = self
            .env
            .read_txn()
            .map_err(|e| StorageError::lmdb("read", e))?;
        let mut out = BTreeMap::new();
        let iter = self
            .dbs
            .meta
            .prefix_iter(&rtxn, b"repl/")
            .map_err(|e| StorageError::lmdb("read labels", e))?;
        for entry in iter {
            let (k, v) = entry.map_err(|e| StorageError::lmdb("read labels", e))?;
            if let (Some(shard), Some(m)) = (
                k.get(5..9)
                    .and_then(|s| <[u8; 4]>::try_from(s).ok())
                    .map(u32::from_be_bytes),
                parse_mark(v),
            ) {
                out.insert(shard, m);
            }
        }
        Ok(out)
    }

    /// A consistent copy of the objects `pick` selects, with `shard`'s
    /// label, read in one transaction. At most `max_bytes` of keys and
    /// values.
    ///
    /// # Errors
    ///
    /// A read failure, or a shard over `max_bytes`.
    pub(crate) fn snapshot(
        &self,
        shard: u32,
        pick: &dyn Fn(&[u8; 32]) -> bool,
        max_bytes: usize,
    ) -> Result<(Mark, Vec<Record>), StorageError> {
        let e = |e| StorageError::lmdb("copy a shard", e);
        let rtxn = self.env.read_txn().map_err(e)?;
        let mark = get_label(self.dbs, &rtxn, shard).map_err(e)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let tables = [
            (Table::Catalog, self.dbs.catalog),
            (Table::Alarm, self.dbs.alarms),
            (Table::Data, self.dbs.data),
        ];
        for (table, db) in tables {
            for entry in db.iter(&rtxn).map_err(e)? {
                let (k, v) = entry.map_err(e)?;
                let Some(id) = k.first_chunk::<32>() else {
                    continue;
                };
                if !pick(id) {
                    continue;
                }
                bytes += k.len() + v.len();
                if bytes > max_bytes {
                    return Err(StorageError::Corrupt(format!(
                        "shard {shard} holds over {max_bytes} bytes: too large to copy to a replica in one piece"
                    )));
                }
                out.push((table, k.to_vec(), v.to_vec()));
            }
        }
        Ok((mark, out))
    }
}

#[cfg(all(test, feature = "cluster"))]
#[path = "replication_tests.rs"]
mod tests;
