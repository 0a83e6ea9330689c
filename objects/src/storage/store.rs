//! The LMDB environment of one data dir: opening, reads, catalog, backup.
//! Writes go through the single writer thread in `writer.rs`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use bytes::Bytes;
use heed::types::Bytes as RawBytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, WithoutTls};

use super::StorageError;
use super::layout::{self, FORMAT_VERSION, ID_LEN};
use super::list::KeyRange;
use super::writer::{self, Writer};

pub(crate) type Db = Database<RawBytes, RawBytes>;

/// An object with stored data: its id and, when known, its name.
pub(crate) type CatalogEntry = ([u8; 32], Option<String>);

/// A cheap handle that tells how full a runtime's store is (from
/// [`Runtime::store_usage`](crate::Runtime::store_usage)); it keeps the
/// store, not the runtime, alive.
#[derive(Clone)]
pub struct StoreUsage(Arc<Store>);

impl StoreUsage {
    pub(crate) fn new(store: Arc<Store>) -> StoreUsage {
        StoreUsage(store)
    }

    /// Bytes in use (pages holding data, not free ones) and the most the
    /// store may hold ([`StoreOptions::max_size`]). A short read
    /// transaction; cheap enough to ask before each write.
    pub fn bytes(&self) -> (u64, u64) {
        self.0.usage()
    }
}

impl std::fmt::Debug for StoreUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StoreUsage").finish_non_exhaustive()
    }
}

/// Options for a data dir.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// The most bytes the LMDB map may hold. The file grows as data is
    /// written, up to this; past it writes fail with
    /// [`StorageError::Full`]. Default 16 GiB.
    pub max_size: usize,
    /// Commit batches queued for the writer before callers wait (backpressure).
    pub writer_queue: usize,
    /// The most object batches committed in one LMDB transaction.
    pub max_group: usize,
    /// How long a commit that finds the writer idle waits for others to
    /// share its sync (until [`max_group`](Self::max_group) batches are
    /// queued or this has passed). Zero, the default, commits at once.
    /// Under a light, steady load a wait of a millisecond or two trades
    /// that much latency for fewer syncs per write (`docs/storage.md`).
    pub commit_delay: std::time::Duration,
    /// Where the writer and the output gate record what they do, for tests
    /// of the durability ordering.
    #[cfg(feature = "testing")]
    pub journal: Option<Arc<super::journal::Journal>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_size: 16 << 30,
            writer_queue: 4096,
            max_group: 1024,
            commit_delay: std::time::Duration::ZERO,
            #[cfg(feature = "testing")]
            journal: None,
        }
    }
}

with_setters!(StoreOptions {
    with_max_size => max_size: usize,
    with_writer_queue => writer_queue: usize,
    with_max_group => max_group: usize,
    with_commit_delay => commit_delay: std::time::Duration,
});

/// An object's catalog entry: id, namespace, name.
pub(crate) type Catalogued = ([u8; 32], String, Option<String>);

/// The handles of every database in the environment.
#[derive(Clone, Copy)]
pub(crate) struct Dbs {
    pub(crate) data: Db,
    pub(crate) alarms: Db,
    pub(crate) alarm_index: Db,
    pub(crate) catalog: Db,
    pub(crate) meta: Db,
}

/// One open data dir.
pub(crate) struct Store {
    pub(crate) env: Env<WithoutTls>,
    pub(crate) dbs: Dbs,
    pub(crate) writer: Writer,
    /// Longest user key accepted (LMDB's key limit minus the id prefix).
    pub(crate) max_key: usize,
    pub(crate) secret: [u8; 32],
    /// Test seam: the next N commits fail as if the disk did (set through
    /// `Runtime::inject_commit_failures`, a `testing` feature).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fail_commits: Arc<AtomicU32>,
    /// Where the writer and the output gate record what they do (tests).
    pub(crate) recorder: super::writer::Recorder,
    /// Replication's side of the writer, set when a cluster starts.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) replication: super::replication::Hook,
    path: PathBuf,
    /// Held for the life of the store: an advisory lock on `LOCK`, so a
    /// second process (or a second open in this one) is refused at start.
    _lock: File,
}

/// The user key limit we promise, when LMDB allows it.
const KEY_LIMIT: usize = 2048;

impl Store {
    /// Opens (creating if needed) the data dir.
    pub(crate) fn open(dir: &Path, opts: &StoreOptions) -> Result<Arc<Store>, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StorageError::io(&lock_path, e))?;
        lock.try_lock()
            .map_err(|_| StorageError::DataDirInUse(dir.to_path_buf()))?;

        let mut env_opts = EnvOpenOptions::new().read_txn_without_tls();
        env_opts
            .map_size(opts.max_size)
            .max_dbs(8)
            .max_readers(1024);
        // SAFETY: MDB_NOMETASYNC keeps the store consistent after a crash
        // but may undo the last transaction, whose meta page was written
        // and not synced. The writer answers a commit only after a later
        // sync covered its meta page (storage/durability.rs), and every
        // other commit here is followed by an explicit sync, so nothing
        // acknowledged can be undone.
        #[allow(unsafe_code)]
        unsafe {
            env_opts.flags(EnvFlags::NO_META_SYNC);
        }
        // SAFETY: LMDB maps the file into memory; that is sound as long as no
        // one modifies the file behind LMDB's back. The LOCK file above keeps
        // other instances of this library out, and we never open the files
        // any other way.
        #[allow(unsafe_code)]
        let env = unsafe { env_opts.open(dir) }.map_err(|e| match e {
            heed::Error::EnvAlreadyOpened => StorageError::DataDirInUse(dir.to_path_buf()),
            e => StorageError::lmdb("open", e),
        })?;

        let mut wtxn = env.write_txn().map_err(|e| StorageError::lmdb("open", e))?;
        let mut create = |name: &str| -> Result<Db, StorageError> {
            env.create_database(&mut wtxn, Some(name))
                .map_err(|e| StorageError::lmdb("create database", e))
        };
        let dbs = Dbs {
            data: create("data")?,
            alarms: create("alarms")?,
            alarm_index: create("alarm_index")?,
            catalog: create("catalog")?,
            meta: create("meta")?,
        };
        let format = dbs
            .meta
            .get(&wtxn, b"format")
            .map_err(|e| StorageError::lmdb("read format", e))?
            .map(<[u8]>::to_vec);
        match format {
            None => {
                dbs.meta
                    .put(&mut wtxn, b"format", &FORMAT_VERSION.to_be_bytes())
                    .map_err(|e| StorageError::lmdb("write format", e))?;
            }
            Some(v) if v == FORMAT_VERSION.to_be_bytes() => {}
            Some(v) => return Err(StorageError::UnknownFormat(format!("{v:?}"))),
        }
        let secret = match dbs
            .meta
            .get(&wtxn, b"secret")
            .map_err(|e| StorageError::lmdb("read secret", e))?
        {
            Some(s) => <[u8; 32]>::try_from(s)
                .map_err(|_| StorageError::Corrupt("meta secret is not 32 bytes".into()))?,
            None => {
                let mut s = [0u8; 32];
                getrandom::fill(&mut s).map_err(|e| StorageError::Corrupt(e.to_string()))?;
                dbs.meta
                    .put(&mut wtxn, b"secret", &s)
                    .map_err(|e| StorageError::lmdb("write secret", e))?;
                s
            }
        };
        wtxn.commit().map_err(|e| StorageError::lmdb("open", e))?;
        env.force_sync()
            .map_err(|e| StorageError::lmdb("open", e))?;

        let max_key = env.max_key_size().saturating_sub(ID_LEN).min(KEY_LIMIT);
        let fail_commits = Arc::new(AtomicU32::new(0));
        let replication = super::replication::Hook::default();
        let writer = writer::spawn(
            env.clone(),
            dbs,
            opts,
            fail_commits.clone(),
            replication.clone(),
        )?;
        #[cfg(feature = "testing")]
        let recorder = opts.journal.clone();
        #[cfg(not(feature = "testing"))]
        let recorder = None;
        Ok(Arc::new(Store {
            env,
            dbs,
            writer,
            max_key,
            secret,
            fail_commits,
            recorder,
            replication,
            path: dir.to_path_buf(),
            _lock: lock,
        }))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn rtxn(&self) -> Result<heed::RoTxn<'_, WithoutTls>, StorageError> {
        self.env
            .read_txn()
            .map_err(|e| StorageError::lmdb("read", e))
    }

    /// Bytes of the map in use, and the map's size.
    pub(crate) fn usage(&self) -> (u64, u64) {
        let used = self.env.non_free_pages_size().unwrap_or(0);
        (used, self.env.info().map_size as u64)
    }

    /// Reads one committed value.
    pub(crate) fn get(&self, id: &[u8; 32], key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        let rtxn = self.rtxn()?;
        let k = layout::data_key(id, key);
        let v = self
            .dbs
            .data
            .get(&rtxn, &k)
            .map_err(|e| StorageError::lmdb("get", e))?;
        Ok(v.map(Bytes::copy_from_slice))
    }

    /// Lists committed entries of one object in `range` (listing order),
    /// calling `visit` with each until it returns false.
    pub(crate) fn scan(
        &self,
        id: &[u8; 32],
        range: &KeyRange,
        visit: &mut dyn FnMut(Vec<u8>, Bytes) -> bool,
    ) -> Result<(), StorageError> {
        use std::ops::Bound;
        let rtxn = self.rtxn()?;
        let wrap = |b: &Bound<Vec<u8>>, upper: bool| match b {
            Bound::Included(k) => Bound::Included(layout::data_key(id, k)),
            Bound::Excluded(k) => Bound::Excluded(layout::data_key(id, k)),
            Bound::Unbounded if upper => match super::list::successor(id) {
                Some(next) => Bound::Excluded(next),
                None => Bound::Unbounded,
            },
            Bound::Unbounded => Bound::Included(id.to_vec()),
        };
        let lo = wrap(&range.lower, false);
        let hi = wrap(&range.upper, true);
        let bounds = (as_slice(&lo), as_slice(&hi));
        let mut emit = |item: heed::Result<(&[u8], &[u8])>| -> Result<bool, StorageError> {
            let (k, v) = item.map_err(|e| StorageError::lmdb("list", e))?;
            let user = k.get(ID_LEN..).unwrap_or_default().to_vec();
            Ok(visit(user, Bytes::copy_from_slice(v)))
        };
        if range.reverse {
            for item in self
                .dbs
                .data
                .rev_range(&rtxn, &bounds)
                .map_err(|e| StorageError::lmdb("list", e))?
            {
                if !emit(item)? {
                    break;
                }
            }
        } else {
            for item in self
                .dbs
                .data
                .range(&rtxn, &bounds)
                .map_err(|e| StorageError::lmdb("list", e))?
            {
                if !emit(item)? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The stored alarm time of one object.
    pub(crate) fn alarm(&self, id: &[u8; 32]) -> Result<Option<u64>, StorageError> {
        let rtxn = self.rtxn()?;
        let v = self
            .dbs
            .alarms
            .get(&rtxn, id)
            .map_err(|e| StorageError::lmdb("get alarm", e))?;
        Ok(v.and_then(layout::parse_alarm_record).map(|(t, _)| t))
    }

    /// Every catalog entry, in id order.
    #[cfg_attr(not(any(feature = "admin", feature = "cluster")), allow(dead_code))]
    pub(crate) fn catalogued(&self) -> Result<Vec<Catalogued>, StorageError> {
        self.by_id(self.dbs.catalog, "catalog", |id, v| {
            let (ns, name) = layout::parse_catalog_record(v)?;
            Some((id, ns.to_string(), name.map(str::to_string)))
        })
    }

    /// Every stored alarm: (namespace, id, time).
    pub(crate) fn all_alarms(&self) -> Result<Vec<(String, [u8; 32], u64)>, StorageError> {
        self.by_id(self.dbs.alarms, "alarm", |id, v| {
            let (t, ns) = layout::parse_alarm_record(v)?;
            Some((ns.to_string(), id, t))
        })
    }

    /// Every record of a table keyed by object id, in id order, each read
    /// by `parse` (`None`: a corrupt record).
    fn by_id<T>(
        &self,
        db: Db,
        what: &str,
        parse: impl Fn([u8; 32], &[u8]) -> Option<T>,
    ) -> Result<Vec<T>, StorageError> {
        let rtxn = self.rtxn()?;
        let mut out = Vec::new();
        for item in db.iter(&rtxn).map_err(|e| StorageError::lmdb("scan", e))? {
            let (k, v) = item.map_err(|e| StorageError::lmdb("scan", e))?;
            let id = <[u8; 32]>::try_from(k)
                .map_err(|_| StorageError::Corrupt(format!("{what} key is not an id")))?;
            let record =
                parse(id, v).ok_or_else(|| StorageError::Corrupt(format!("{what} record")))?;
            out.push(record);
        }
        Ok(out)
    }

    /// The catalog entry of one object: (namespace, name).
    pub(crate) fn catalog_entry(
        &self,
        id: &[u8; 32],
    ) -> Result<Option<(String, Option<String>)>, StorageError> {
        let rtxn = self.rtxn()?;
        let v = self
            .dbs
            .catalog
            .get(&rtxn, id)
            .map_err(|e| StorageError::lmdb("catalog", e))?;
        Ok(v.and_then(layout::parse_catalog_record)
            .map(|(ns, name)| (ns.to_string(), name.map(str::to_string))))
    }

    /// Every object with stored data in `namespace`: (id, name).
    pub(crate) fn catalog(&self, namespace: &str) -> Result<Vec<CatalogEntry>, StorageError> {
        let rtxn = self.rtxn()?;
        let mut out = Vec::new();
        for item in self
            .dbs
            .catalog
            .iter(&rtxn)
            .map_err(|e| StorageError::lmdb("catalog", e))?
        {
            let (k, v) = item.map_err(|e| StorageError::lmdb("catalog", e))?;
            let Ok(id) = <[u8; 32]>::try_from(k) else {
                continue;
            };
            if let Some((ns, name)) = layout::parse_catalog_record(v)
                && ns == namespace
            {
                out.push((id, name.map(str::to_string)));
            }
        }
        Ok(out)
    }

    /// Writes a consistent copy of the whole store to `dest` (a directory
    /// that must not hold a store), while the store stays in use.
    pub(crate) fn backup(&self, dest: &Path) -> Result<(), StorageError> {
        copy_env_to(&self.env, dest)
    }
}

/// Copies `env`, compacted, to a new `dest/data.mdb` that only the owner
/// may read (0600; `dest` is created 0700 if missing): a copy holds the
/// id secret and every private room id, like the live store.
pub(crate) fn copy_env_to(env: &Env<WithoutTls>, dest: &Path) -> Result<(), StorageError> {
    let mut dirs = std::fs::DirBuilder::new();
    dirs.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
    dirs.create(dest).map_err(|e| StorageError::io(dest, e))?;
    let path = dest.join("data.mdb");
    let mut options = OpenOptions::new();
    // create_new: never overwrite a store, and no window between a check
    // and the create.
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => StorageError::BackupTargetExists(path.clone()),
        _ => StorageError::io(&path, e),
    })?;
    if let Err(e) = env.copy_to_file(&mut file, heed::CompactionOption::Enabled) {
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(StorageError::lmdb("backup", e));
    }
    Ok(())
}

fn as_slice(b: &std::ops::Bound<Vec<u8>>) -> std::ops::Bound<&[u8]> {
    match b {
        std::ops::Bound::Included(v) => std::ops::Bound::Included(v.as_slice()),
        std::ops::Bound::Excluded(v) => std::ops::Bound::Excluded(v.as_slice()),
        std::ops::Bound::Unbounded => std::ops::Bound::Unbounded,
    }
}
