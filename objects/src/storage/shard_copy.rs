//! Copying a set of objects out of one store and into another, as a
//! cluster hand-off moves a shard: the sender reads the objects' committed
//! keys and alarms a bounded page at a time; the receiver writes each
//! object as a batch that first clears what it held of that object, through
//! the one writer (so the copy is group-committed and durable like any
//! event's writes). Nothing here knows about shards or the network.

use bytes::Bytes;

use super::list::KeyRange;
use super::overlay::Changes;
use super::{Batch, StorageError, Store};

pub(crate) use super::store::Catalogued;

/// One object's part of a copy: its keys from `after` on, as stored.
pub(crate) struct Page {
    /// Raw keys (without the id) and values (with their tag byte).
    pub(crate) keys: Vec<(Vec<u8>, Bytes)>,
    /// Bytes of keys and values in `keys`.
    pub(crate) bytes: usize,
    /// More keys follow the last one.
    pub(crate) more: bool,
}

impl Store {
    /// Every catalogued object whose id `pick` selects, and every object
    /// with an alarm but no catalog record (none should exist; a copy
    /// must not leave one behind).
    pub(crate) fn objects_where(
        &self,
        pick: &dyn Fn(&[u8; 32]) -> bool,
    ) -> Result<Vec<Catalogued>, StorageError> {
        let mut out: Vec<Catalogued> = self
            .catalogued()?
            .into_iter()
            .filter(|(id, _, _)| pick(id))
            .collect();
        let seen: std::collections::HashSet<[u8; 32]> = out.iter().map(|(id, _, _)| *id).collect();
        for (ns, id, _) in self.all_alarms()? {
            if pick(&id) && !seen.contains(&id) {
                out.push((id, ns, None));
            }
        }
        Ok(out)
    }

    /// Up to about `budget` bytes of one object's keys, after `after` (from
    /// the first key when `None`); at least one key when any is left.
    pub(crate) fn object_page(
        &self,
        id: &[u8; 32],
        after: Option<&[u8]>,
        budget: usize,
    ) -> Result<Page, StorageError> {
        use std::ops::Bound;
        let range = KeyRange {
            lower: after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_vec())),
            upper: Bound::Unbounded,
            reverse: false,
            limit: None,
        };
        let mut page = Page {
            keys: Vec::new(),
            bytes: 0,
            more: false,
        };
        self.scan(id, &range, &mut |k, v| {
            if !page.keys.is_empty() && page.bytes + k.len() + v.len() > budget {
                page.more = true;
                return false;
            }
            page.bytes += k.len() + v.len();
            page.keys.push((k, v));
            true
        })?;
        Ok(page)
    }
}

/// The batch that writes one object's copied part: its first part clears
/// what the receiver held of it and sets its alarm (or none); later parts
/// add keys.
pub(crate) fn copy_batch(
    id: [u8; 32],
    namespace: &str,
    name: Option<&str>,
    first: bool,
    alarm: Option<u64>,
    keys: Vec<(Vec<u8>, Bytes)>,
) -> Batch {
    Batch {
        id,
        namespace: namespace.into(),
        name: name.map(Into::into),
        record_catalog: true,
        changes: Changes {
            cleared: first,
            writes: keys.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            alarm: if first { Some(alarm) } else { None },
        },
    }
}

/// The batch that removes an object: its keys, catalog record and alarm.
pub(crate) fn removal_batch(id: [u8; 32], namespace: &str) -> Batch {
    copy_batch(id, namespace, None, true, None, Vec::new())
}

/// Commits `batches` through the store's writer (one group when they
/// queue together) and waits until all are durable.
pub(crate) async fn commit_all(store: &Store, batches: Vec<Batch>) -> Result<(), StorageError> {
    let mut waits = Vec::with_capacity(batches.len());
    for b in batches {
        let place = store.writer.reserve().await?;
        waits.push(place.send(b));
    }
    for w in waits {
        w.await.map_err(|_| StorageError::Closed)??;
    }
    Ok(())
}
