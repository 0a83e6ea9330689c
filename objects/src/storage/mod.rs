//! Per-object transactional storage on LMDB.
//!
//! Reads are synchronous and see the event's own writes (the overlay).
//! Writes collect in the overlay and commit atomically when the event ends,
//! or at [`Storage::sync`] / the end of a [`Storage::transaction`]. The
//! output gate (in the runtime) holds everything the event sends until that
//! commit is durable.

mod durability;
mod error;
mod gather;
#[cfg(feature = "testing")]
pub(crate) mod journal;
pub(crate) mod layout;
mod list;
mod overlay;
// The writer's side of replication; only a cluster sets its hook.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) mod replication;
#[cfg(feature = "cluster")]
pub(crate) mod shard_copy;
mod store;
pub(crate) mod timers;
mod value;
mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::StorageError;
pub use list::ListOptions;
pub use store::{StoreOptions, StoreUsage};
pub use timers::{MAX_TIMER_NAME, MAX_TIMERS, Timer, TimerInfo, Timers};
pub use value::StoredValue;

pub(crate) use overlay::{Changes, Overlay, Savepoint};
pub(crate) use store::Store;
#[cfg(feature = "admin")]
pub(crate) use store::copy_env_to;
pub(crate) use writer::{Batch, Recorder, record};
#[cfg(feature = "cluster")]
pub(crate) use writer::{Done, Place};

use overlay::Lookup;
pub(crate) use value::encode_json;
use value::{decode, encode_raw, payload};

/// Longest value accepted, in bytes (encoded). Cloudflare's KV backend
/// allows 128 KiB; so do we.
pub const MAX_VALUE_BYTES: usize = 128 * 1024;
/// Most keys in one `get_many`/`put_many`/`delete_many`.
pub const MAX_KEYS_PER_CALL: usize = 128;
/// Most bytes one event may buffer before it must call [`Storage::sync`].
pub const MAX_EVENT_BYTES: usize = 32 << 20;

/// Entries a bounded listing reserves room for before it reads.
const LIST_RESERVE: usize = 1024;

/// Every committed entry of one object, decoded (no overlay: for tools
/// outside the object).
pub(crate) fn export_committed(
    store: &Store,
    id: &[u8; 32],
) -> Result<Vec<(String, StoredValue)>, StorageError> {
    list_committed(store, id, &ListOptions::new())
}

/// The committed entries of one object in a listing's range, decoded.
pub(crate) fn list_committed(
    store: &Store,
    id: &[u8; 32],
    opts: &ListOptions,
) -> Result<Vec<(String, StoredValue)>, StorageError> {
    let Some(range) = opts.compile()? else {
        return Ok(Vec::new());
    };
    let limit = range.limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut err = None;
    store.scan(
        id,
        &range,
        &mut |k, v| match (String::from_utf8(k), StoredValue::from_stored(&v)) {
            (Ok(k), Ok(v)) => {
                out.push((k, v));
                out.len() < limit
            }
            (Err(_), _) => {
                err = Some(StorageError::Corrupt("stored key is not UTF-8".into()));
                false
            }
            (_, Err(e)) => {
                err = Some(e);
                false
            }
        },
    )?;
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// One object's storage, handed to its handlers through the
/// [`Context`](crate::Context).
///
#[doc = include_str!("../docs/storage.md")]
pub struct Storage {
    store: Arc<Store>,
    id: [u8; 32],
    namespace: Arc<str>,
    name: Option<Arc<str>>,
    overlay: Overlay,
    /// The catalog already records this object.
    catalogued: bool,
    in_transaction: bool,
    /// A commit failed during this event: the runtime resets the object
    /// whatever the handler does with the error.
    pub(crate) broken: Option<Arc<StorageError>>,
    /// A commit handed to the writer whose answer has not been read (a
    /// handler dropped its `sync()` mid-way); settled before any output.
    in_flight: Option<InFlight>,
    /// Alarm changes made durable by commits since the runtime last asked.
    durable_alarm: Option<Option<u64>>,
}

/// A commit on its way to disk.
struct InFlight {
    done: writer::Done,
    alarm: Option<Option<u64>>,
    record_catalog: bool,
    cleared: bool,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("namespace", &self.namespace)
            .field("pending_bytes", &self.overlay.bytes())
            .finish_non_exhaustive()
    }
}

impl Storage {
    pub(crate) fn new(
        store: Arc<Store>,
        id: [u8; 32],
        namespace: Arc<str>,
        name: Option<Arc<str>>,
        catalogued: bool,
    ) -> Self {
        Storage {
            store,
            id,
            namespace,
            name,
            overlay: Overlay::default(),
            catalogued,
            in_transaction: false,
            broken: None,
            in_flight: None,
            durable_alarm: None,
        }
    }

    fn check_key(&self, key: &str) -> Result<(), StorageError> {
        if key.len() > self.store.max_key {
            return Err(StorageError::KeyTooLarge {
                len: key.len(),
                max: self.store.max_key,
            });
        }
        Ok(())
    }

    fn check_count(n: usize) -> Result<(), StorageError> {
        if n > MAX_KEYS_PER_CALL {
            return Err(StorageError::TooManyKeys {
                len: n,
                max: MAX_KEYS_PER_CALL,
            });
        }
        Ok(())
    }

    fn raw(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        self.check_key(key)?;
        match self.overlay.lookup(key.as_bytes()) {
            Lookup::Value(v) => Ok(Some(v.clone())),
            Lookup::Deleted => Ok(None),
            Lookup::Miss => self.store.get(&self.id, key.as_bytes()),
        }
    }

    /// Reads a typed value.
    ///
    /// # Errors
    ///
    /// Key over the limit, a value that does not decode as `T`, or an LMDB
    /// read error.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        self.raw(key)?.as_ref().map(decode).transpose()
    }

    /// Reads a value's bytes (for JSON values, the JSON text).
    ///
    /// # Errors
    ///
    /// Key over the limit, or an LMDB read error.
    pub fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        Ok(self.raw(key)?.map(payload))
    }

    /// Reads up to 128 keys; missing keys are left out of the map.
    ///
    /// # Errors
    ///
    /// More than 128 keys, or as [`Storage::get`].
    pub fn get_many<T: DeserializeOwned>(
        &self,
        keys: &[&str],
    ) -> Result<BTreeMap<String, T>, StorageError> {
        Self::check_count(keys.len())?;
        let mut out = BTreeMap::new();
        for k in keys {
            if let Some(v) = self.get(k)? {
                out.insert((*k).to_string(), v);
            }
        }
        Ok(out)
    }

    fn put_encoded(&mut self, key: &str, value: Bytes) -> Result<(), StorageError> {
        self.check_key(key)?;
        if value.len() - 1 > MAX_VALUE_BYTES {
            return Err(StorageError::ValueTooLarge {
                len: value.len() - 1,
                max: MAX_VALUE_BYTES,
            });
        }
        if self.overlay.bytes() > MAX_EVENT_BYTES {
            return Err(StorageError::EventTooLarge(MAX_EVENT_BYTES));
        }
        self.overlay.put(key.as_bytes().to_vec(), value);
        Ok(())
    }

    /// Writes a typed value (encoded as JSON).
    ///
    /// # Errors
    ///
    /// Key or value over the limit, or a value that does not serialise.
    pub fn put<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), StorageError> {
        self.put_encoded(key, encode_json(value)?)
    }

    /// Writes raw bytes.
    ///
    /// # Errors
    ///
    /// Key or value over the limit.
    pub fn put_bytes(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.put_encoded(key, encode_raw(value))
    }

    /// Writes up to 128 typed values; all or none are written.
    ///
    /// # Errors
    ///
    /// As [`Storage::put`]; on error nothing was written.
    pub fn put_many<T: Serialize>(&mut self, entries: &[(&str, T)]) -> Result<(), StorageError> {
        Self::check_count(entries.len())?;
        let mut encoded = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            self.check_key(k)?;
            let e = encode_json(v)?;
            if e.len() - 1 > MAX_VALUE_BYTES {
                return Err(StorageError::ValueTooLarge {
                    len: e.len() - 1,
                    max: MAX_VALUE_BYTES,
                });
            }
            encoded.push((*k, e));
        }
        let total: usize = encoded.iter().map(|(k, e)| k.len() + e.len()).sum();
        if self.overlay.bytes() + total > MAX_EVENT_BYTES {
            return Err(StorageError::EventTooLarge(MAX_EVENT_BYTES));
        }
        for (k, e) in encoded {
            self.overlay.put(k.as_bytes().to_vec(), e);
        }
        Ok(())
    }

    /// Deletes a key; says whether it existed.
    ///
    /// # Errors
    ///
    /// Key over the limit, or an LMDB read error.
    pub fn delete(&mut self, key: &str) -> Result<bool, StorageError> {
        let existed = self.raw(key)?.is_some();
        self.overlay.delete(key.as_bytes().to_vec());
        Ok(existed)
    }

    /// Deletes up to 128 keys; returns how many existed.
    ///
    /// # Errors
    ///
    /// More than 128 keys, or as [`Storage::delete`].
    pub fn delete_many(&mut self, keys: &[&str]) -> Result<usize, StorageError> {
        Self::check_count(keys.len())?;
        for k in keys {
            self.check_key(k)?;
        }
        let mut n = 0;
        for k in keys {
            n += usize::from(self.delete(k)?);
        }
        Ok(n)
    }

    /// Lists typed entries in key order (see [`ListOptions`]).
    ///
    /// # Errors
    ///
    /// Invalid options, a value that does not decode as `T`, or an LMDB
    /// read error.
    pub fn list<T: DeserializeOwned>(
        &self,
        opts: &ListOptions,
    ) -> Result<Vec<(String, T)>, StorageError> {
        self.list_raw(opts)?
            .into_iter()
            .map(|(k, v)| Ok((k, decode(&v)?)))
            .collect()
    }

    /// Lists entries as bytes (see [`ListOptions`]).
    ///
    /// # Errors
    ///
    /// Invalid options or an LMDB read error.
    pub fn list_bytes(&self, opts: &ListOptions) -> Result<Vec<(String, Bytes)>, StorageError> {
        Ok(self
            .list_raw(opts)?
            .into_iter()
            .map(|(k, v)| (k, payload(v)))
            .collect())
    }

    /// Every entry of this object, decoded, for export.
    ///
    /// # Errors
    ///
    /// An LMDB read error or a corrupt value.
    pub fn export(&self) -> Result<Vec<(String, StoredValue)>, StorageError> {
        self.list_raw(&ListOptions::new())?
            .into_iter()
            .map(|(k, v)| Ok((k, StoredValue::from_stored(&v)?)))
            .collect()
    }

    fn list_raw(&self, opts: &ListOptions) -> Result<Vec<(String, Bytes)>, StorageError> {
        let Some(range) = opts.compile()? else {
            return Ok(Vec::new());
        };
        // Keys beginning with NUL are the runtime's (timer records,
        // `timers.rs`): hidden unless the listing asks for them by prefix.
        let internal = opts.prefix.as_deref().is_some_and(|p| p.starts_with('\0'));
        let shown = |k: &[u8]| internal || k.first() != Some(&0);
        // Committed entries, read eagerly but bounded: the overlay can hide
        // at most as many entries as it holds, so limit + that suffices.
        let mut base = Vec::new();
        if !self.overlay.cleared() {
            let want = range
                .limit
                .map(|l| l.saturating_add(self.overlay.range(&range).count()));
            // Room for a bounded listing up front (not for an unbounded
            // one, whose size is unknown).
            base.reserve(want.unwrap_or(0).min(LIST_RESERVE));
            self.store.scan(&self.id, &range, &mut |k, v| {
                if shown(&k) {
                    base.push(Ok((k, v)));
                }
                want.is_none_or(|w| base.len() < w)
            })?;
        }
        let merged = list::merge(
            base.into_iter(),
            self.overlay.range(&range).filter(|(k, _)| shown(k)),
            range.reverse,
            range.limit,
        )?;
        merged
            .into_iter()
            .map(|(k, v)| {
                String::from_utf8(k)
                    .map(|k| (k, v))
                    .map_err(|_| StorageError::Corrupt("stored key is not UTF-8".into()))
            })
            .collect()
    }

    /// Deletes every key of this object, and its alarm.
    ///
    /// # Errors
    ///
    /// [`StorageError::InTransaction`] inside [`Storage::transaction`].
    pub fn delete_all(&mut self) -> Result<(), StorageError> {
        if self.in_transaction {
            return Err(StorageError::InTransaction("delete_all"));
        }
        self.overlay.clear();
        Ok(())
    }

    /// The alarm's time, if one is set.
    ///
    /// # Errors
    ///
    /// An LMDB read error.
    pub fn alarm(&self) -> Result<Option<SystemTime>, StorageError> {
        // With timers in use, the stored alarm is the earliest of them and
        // the plain alarm lives in a record (`timers.rs`).
        Ok(self.user_alarm_ms()?.map(crate::clock::from_ms))
    }

    pub(crate) fn alarm_ms(&self) -> Result<Option<u64>, StorageError> {
        match self.overlay.alarm() {
            Some(a) => Ok(a),
            None => self.store.alarm(&self.id),
        }
    }

    /// Sets the alarm (replacing any other), to the millisecond (finer
    /// parts are dropped). A time in the past fires at once.
    ///
    #[doc = include_str!("../docs/set_alarm.md")]
    ///
    /// # Errors
    ///
    /// [`StorageError::InvalidAlarm`] for the epoch itself or a time
    /// before it.
    pub fn set_alarm(&mut self, at: SystemTime) -> Result<(), StorageError> {
        let at_ms = crate::clock::to_ms(at);
        if at_ms == 0 {
            return Err(StorageError::InvalidAlarm);
        }
        if !self.set_user_alarm(Some(at_ms))? {
            self.overlay.set_alarm(Some(at_ms));
        }
        Ok(())
    }

    /// Deletes the alarm, if any.
    pub fn delete_alarm(&mut self) {
        match self.set_user_alarm(None) {
            Ok(true) => {}
            Ok(false) => self.overlay.set_alarm(None),
            Err(e) => {
                // Only with timers in use (their record unreadable); the
                // stored alarm is cleared, the timers keep theirs.
                tracing::warn!(error = %e, "delete_alarm: timer records unreadable");
                self.overlay.set_alarm(None);
            }
        }
    }

    /// Clears the stored alarm itself (a due alarm is being run).
    pub(crate) fn clear_stored_alarm(&mut self) {
        self.overlay.set_alarm(None);
    }

    /// Runs `f` as a transaction: if it returns an error, none of its writes
    /// are applied (and the object is not reset); if it succeeds, its writes
    /// (and all earlier writes of this event) are committed before this
    /// returns.
    ///
    #[doc = include_str!("../docs/transaction.md")]
    ///
    /// # Errors
    ///
    /// The closure's error, or a commit failure.
    pub async fn transaction<R, E>(
        &mut self,
        f: impl FnOnce(&mut Storage) -> Result<R, E>,
    ) -> Result<R, E>
    where
        E: From<StorageError>,
    {
        let sp = self.overlay.savepoint();
        self.in_transaction = true;
        let result = f(self);
        self.in_transaction = false;
        match result {
            Ok(r) => {
                self.overlay.release(sp);
                self.sync().await?;
                Ok(r)
            }
            Err(e) => {
                self.overlay.rollback(sp);
                Err(e)
            }
        }
    }

    /// Commits everything written so far; returns once it is durable.
    ///
    /// # Errors
    ///
    /// A commit failure. The object will be reset when the event ends.
    pub async fn sync(&mut self) -> Result<(), StorageError> {
        if let Some(cause) = &self.broken {
            return Err(StorageError::CommitFailed(cause.clone()));
        }
        match self.commit().await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.broken = Some(Arc::new(e.duplicate()));
                Err(e)
            }
        }
    }

    /// Commits the overlay and waits until it is durable. Cancel-safe: if
    /// the future is dropped after the batch went to the writer, the next
    /// call waits for that batch's answer first.
    pub(crate) async fn commit(&mut self) -> Result<(), StorageError> {
        self.settle().await?;
        if self.overlay.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let place = store.writer.reserve().await?;
        let changes = self.overlay.take();
        let alarm = changes.alarm;
        let puts = changes.writes.iter().any(|(_, v)| v.is_some())
            || matches!(changes.alarm, Some(Some(_)));
        let cleared = changes.cleared;
        let record_catalog = puts && (!self.catalogued || cleared);
        let done = place.send(Batch {
            id: self.id,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            record_catalog,
            changes,
        });
        self.in_flight = Some(InFlight {
            done,
            alarm,
            record_catalog,
            cleared,
        });
        self.settle().await
    }

    /// Waits for the commit in flight, if any.
    async fn settle(&mut self) -> Result<(), StorageError> {
        let Some(f) = self.in_flight.as_mut() else {
            return Ok(());
        };
        let answer = (&mut f.done).await;
        let Some(f) = self.in_flight.take() else {
            return Ok(());
        };
        match answer {
            Ok(Ok(())) => {
                if f.record_catalog {
                    self.catalogued = true;
                } else if f.cleared {
                    self.catalogued = false;
                }
                if let Some(a) = f.alarm {
                    self.durable_alarm = Some(a);
                }
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StorageError::Closed),
        }
    }

    /// The alarm change made durable since the last call, if any.
    /// Where the output gate records what it releases (tests).
    pub(crate) fn recorder(&self) -> &Recorder {
        &self.store.recorder
    }

    pub(crate) fn take_durable_alarm(&mut self) -> Option<Option<u64>> {
        self.durable_alarm.take()
    }

    /// Drops uncommitted writes (the object is being reset).
    pub(crate) fn discard(&mut self) {
        self.overlay = Overlay::default();
        self.in_transaction = false;
        self.broken = None;
    }

    /// A failed event ends: a panic inside a transaction closure must not
    /// leave the next event "inside a transaction".
    pub(crate) fn end_event(&mut self) {
        self.in_transaction = false;
    }

    pub(crate) fn overlay_mut(&mut self) -> &mut Overlay {
        &mut self.overlay
    }
}
