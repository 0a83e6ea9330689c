//! Import: the JSON-lines format back into a store.

use std::collections::HashSet;

use crate::error::{Error, Result};

use crate::storage::layout::{self, FORMAT_VERSION};
use crate::storage::{MAX_VALUE_BYTES, StorageError, StoredValue};

use super::*;

impl Admin {
    /// Writes `entries` (as [`Admin::export`] yields them, or parsed from
    /// its lines) into this data dir, committing every few thousand
    /// entries and calling `progress` after each commit. Keys and alarms
    /// replace what the dir holds; nothing is deleted.
    ///
    /// The store entry, if any, must come first: its secret replaces this
    /// dir's when the dir holds no objects yet, and must equal it otherwise.
    ///
    /// # Errors
    ///
    /// The first error of `entries`, an entry that breaks a limit (see
    /// [`AdminError`]), or a storage error. Batches committed before the
    /// error stay: import into an empty dir, and wipe it to retry.
    pub fn import<E: From<Error>>(
        &mut self,
        entries: impl IntoIterator<Item = Result<Entry, E>>,
        mut progress: impl FnMut(&ImportStats),
    ) -> Result<ImportStats, E> {
        let mut stats = ImportStats::default();
        let mut seen: HashSet<[u8; 32]> = HashSet::new();
        let mut batch: Vec<Entry> = Vec::new();
        let mut batch_bytes = 0;
        let mut first = true;
        for entry in entries {
            let entry = entry?;
            if let Entry::Store { format, secret } = &entry {
                if !first {
                    return Err(Error::from(AdminError::StoreLineOutOfPlace).into());
                }
                self.adopt_identity(*format, secret)?;
                first = false;
                continue;
            }
            first = false;
            batch_bytes += self.check(&entry)?;
            match &entry {
                Entry::Object(o) => {
                    seen.insert(*o.id.as_bytes());
                }
                Entry::Key { object, .. } => {
                    seen.insert(*object.id.as_bytes());
                    stats.keys += 1;
                }
                Entry::Alarm { object, .. } => {
                    seen.insert(*object.id.as_bytes());
                    stats.alarms += 1;
                }
                Entry::Store { .. } => {}
            }
            batch.push(entry);
            if batch.len() >= IMPORT_BATCH_ENTRIES || batch_bytes >= IMPORT_BATCH_BYTES {
                self.write(&batch)?;
                batch.clear();
                batch_bytes = 0;
                stats.objects = seen.len();
                progress(&stats);
            }
        }
        if !batch.is_empty() {
            self.write(&batch)?;
        }
        stats.objects = seen.len();
        progress(&stats);
        Ok(stats)
    }

    /// Takes the export's secret, if this dir is empty or already has it.
    fn adopt_identity(&self, format: u32, secret: &[u8; 32]) -> Result<()> {
        if format != FORMAT_VERSION {
            return Err(AdminError::UnknownFormat(format).into());
        }
        let Entry::Store { secret: ours, .. } = self.identity()? else {
            return Ok(());
        };
        if ours == *secret {
            return Ok(());
        }
        let env = &self.store.env;
        let dbs = &self.store.dbs;
        let mut wtxn = env
            .write_txn()
            .map_err(|e| StorageError::lmdb("import", e))?;
        let empty = dbs
            .catalog
            .is_empty(&wtxn)
            .map_err(|e| StorageError::lmdb("import", e))?
            && dbs
                .data
                .is_empty(&wtxn)
                .map_err(|e| StorageError::lmdb("import", e))?;
        if !empty {
            return Err(AdminError::SecretMismatch.into());
        }
        dbs.meta
            .put(&mut wtxn, b"secret", secret)
            .map_err(|e| StorageError::lmdb("import", e))?;
        wtxn.commit().map_err(|e| StorageError::lmdb("import", e))?;
        // The store skips the meta page's sync at commit (NOMETASYNC).
        self.store
            .env
            .force_sync()
            .map_err(|e| StorageError::lmdb("import", e))?;
        Ok(())
    }

    /// Checks an entry against the store's limits; returns its size.
    fn check(&self, entry: &Entry) -> Result<usize> {
        let invalid = |m: String| Error::from(AdminError::Invalid(m));
        let object = match entry {
            Entry::Object(o) | Entry::Key { object: o, .. } | Entry::Alarm { object: o, .. } => o,
            Entry::Store { .. } => return Ok(0),
        };
        if object.namespace.is_empty() || object.namespace.len() > usize::from(u16::MAX) {
            return Err(invalid(format!(
                "namespace of {} bytes (1 to {} allowed)",
                object.namespace.len(),
                u16::MAX
            )));
        }
        match entry {
            Entry::Key { key, value, .. } => {
                if key.len() > self.store.max_key {
                    return Err(invalid(format!(
                        "key of {} bytes is over the limit of {}",
                        key.len(),
                        self.store.max_key
                    )));
                }
                let len = match value {
                    StoredValue::Json(text) => {
                        serde_json::from_str::<serde::de::IgnoredAny>(text)
                            .map_err(|e| invalid(format!("value of key {key:?}: {e}")))?;
                        text.len()
                    }
                    StoredValue::Bytes(b) => b.len(),
                };
                if len > MAX_VALUE_BYTES {
                    return Err(invalid(format!(
                        "value of key {key:?} has {len} bytes, over the limit of {MAX_VALUE_BYTES}"
                    )));
                }
                Ok(key.len() + len)
            }
            Entry::Alarm { at_ms: 0, .. } => Err(invalid("alarm time 0".into())),
            _ => Ok(0),
        }
    }

    /// Writes checked entries in one transaction.
    fn write(&self, batch: &[Entry]) -> Result<()> {
        let lmdb = |e| StorageError::lmdb("import", e);
        let dbs = &self.store.dbs;
        let mut wtxn = self.store.env.write_txn().map_err(lmdb)?;
        for entry in batch {
            let object = match entry {
                Entry::Object(o) => {
                    let rec = layout::catalog_record(&o.namespace, o.name.as_deref());
                    dbs.catalog
                        .put(&mut wtxn, o.id.as_bytes(), &rec)
                        .map_err(lmdb)?;
                    continue;
                }
                Entry::Key { object, key, value } => {
                    let k = layout::data_key(object.id.as_bytes(), key.as_bytes());
                    let v = value.to_stored();
                    dbs.data.put(&mut wtxn, &k, &v).map_err(lmdb)?;
                    object
                }
                Entry::Alarm { object, at_ms } => {
                    let id = object.id.as_bytes();
                    let old = dbs
                        .alarms
                        .get(&wtxn, id)
                        .map_err(lmdb)?
                        .and_then(layout::parse_alarm_record)
                        .map(|(t, _)| t);
                    if let Some(t) = old {
                        dbs.alarm_index
                            .delete(&mut wtxn, &layout::alarm_index_key(t, id))
                            .map_err(lmdb)?;
                    }
                    let rec = layout::alarm_record(*at_ms, &object.namespace);
                    dbs.alarms.put(&mut wtxn, id, &rec).map_err(lmdb)?;
                    dbs.alarm_index
                        .put(&mut wtxn, &layout::alarm_index_key(*at_ms, id), &[])
                        .map_err(lmdb)?;
                    object
                }
                Entry::Store { .. } => continue,
            };
            // An export lists the catalog entry first; a hand-made file may
            // not, and then the key's own namespace and name are recorded.
            let id = object.id.as_bytes();
            if dbs.catalog.get(&wtxn, id).map_err(lmdb)?.is_none() {
                let rec = layout::catalog_record(&object.namespace, object.name.as_deref());
                dbs.catalog.put(&mut wtxn, id, &rec).map_err(lmdb)?;
            }
        }
        wtxn.commit().map_err(lmdb)?;
        // The store skips the meta page's sync at commit (NOMETASYNC).
        self.store.env.force_sync().map_err(lmdb)?;
        Ok(())
    }
}
