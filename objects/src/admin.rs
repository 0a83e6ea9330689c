//! Administration and inspection. Offline, without a runtime ([`Admin`]):
//! list the objects with stored state, export and import every key, value,
//! alarm and name, and back up; the format of exported lines is in
//! `docs/operations.md`. Live, on a running runtime (`inspect`): pages of
//! objects and one object's committed state, for an inspector.
//!
//! [`Admin`] holds the data dir's lock like a runtime does, so it refuses a
//! dir a server has open (and a server refuses a dir an `Admin` has open).
//! [`Admin::backup_live`] is the exception: it copies a dir that another
//! process is running on, through LMDB's own multi-process readers.
//!
//! Every method blocks on disk I/O: from async code, call them inside
//! `spawn_blocking`.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use heed::{EnvFlags, EnvOpenOptions};

use crate::error::Result;
use crate::id::{IdError, ObjectId, parse_hex};

mod import;
pub(crate) mod inspect;
mod line;
use crate::storage::layout::FORMAT_VERSION;
use crate::storage::{ListOptions, StorageError, Store, StoreOptions, StoredValue};
pub use line::MAX_LINE_BYTES;

/// Keys read from the store at a time during an export.
const EXPORT_PAGE: usize = 256;
/// Most entries an import commits in one transaction.
const IMPORT_BATCH_ENTRIES: usize = 4096;
/// Most value bytes an import commits in one transaction (LMDB keeps a
/// transaction's dirty pages in memory).
const IMPORT_BATCH_BYTES: usize = 32 << 20;

/// Errors of the admin tools (other failures are [`StorageError`]s).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The directory holds no store (no `data.mdb`).
    #[error("no data dir at {0}: it has no data.mdb")]
    NoStore(PathBuf),
    /// An exported line does not parse.
    #[error("malformed entry: {0}")]
    Malformed(String),
    /// An entry breaks a storage limit or rule.
    #[error("invalid entry: {0}")]
    Invalid(String),
    /// The export was made by a store format this version does not know.
    #[error("the export has store format {0}; this version reads format {FORMAT_VERSION}")]
    UnknownFormat(u32),
    /// The export comes from a store with another secret (so other ids) and
    /// the target already holds objects.
    #[error(
        "the export comes from another store (its id secret differs) and this data dir \
         already holds objects: import into an empty data dir"
    )]
    SecretMismatch,
    /// The store line came after object entries.
    #[error("the store line must come before every object entry")]
    StoreLineOutOfPlace,
}

/// An object with stored state, as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its namespace.
    pub namespace: String,
    /// Its id.
    pub id: ObjectId,
    /// The name its id came from; `None` for ids minted by `new_unique_id`
    /// (private rooms) and objects that never learned their name.
    pub name: Option<String>,
}

impl ObjectInfo {
    /// An object entry from its parts.
    pub fn new(namespace: impl Into<String>, id: [u8; 32], name: Option<String>) -> Self {
        let name_arc = name.as_deref().map(Arc::from);
        ObjectInfo {
            namespace: namespace.into(),
            id: ObjectId::from_parts(id, name_arc),
            name,
        }
    }
}

/// One unit of an export: what one JSON line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entry {
    /// The store's identity, first in every export: ids are keyed by the
    /// secret, so an import must carry it for names and private ids to map
    /// to the same objects. Treat exports as secret as the data dir.
    Store {
        /// The store format (`meta["format"]`).
        format: u32,
        /// The root of every namespace's id key (`meta["secret"]`).
        secret: [u8; 32],
    },
    /// An object with stored state (its catalog record); comes before the
    /// object's keys and alarm.
    Object(ObjectInfo),
    /// One key of an object.
    Key {
        /// Whose key.
        object: ObjectInfo,
        /// The user key.
        key: String,
        /// The value.
        value: StoredValue,
    },
    /// An object's alarm.
    Alarm {
        /// Whose alarm.
        object: ObjectInfo,
        /// Due time, ms since the Unix epoch.
        at_ms: u64,
    },
}

/// Which objects an export covers; the default is every object.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// Only objects of this namespace.
    pub namespace: Option<String>,
    /// Only the object with this id.
    pub id: Option<[u8; 32]>,
    /// Only objects with this name (in any namespace, unless one is given).
    pub name: Option<String>,
}

impl ExportFilter {
    /// Restricts the export to the id given as 64 hex digits.
    ///
    /// # Errors
    ///
    /// [`IdError::Malformed`] if it is not 64 hex digits.
    pub fn with_id_hex(mut self, hex: &str) -> Result<Self, IdError> {
        self.id = Some(parse_hex(hex)?);
        Ok(self)
    }

    fn matches(&self, o: &ObjectInfo) -> bool {
        self.namespace.as_ref().is_none_or(|n| *n == o.namespace)
            && self.id.as_ref().is_none_or(|id| id == o.id.as_bytes())
            && self
                .name
                .as_ref()
                .is_none_or(|n| o.name.as_ref() == Some(n))
    }
}

/// Counts of what an import wrote so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Distinct objects touched.
    pub objects: usize,
    /// Keys written.
    pub keys: usize,
    /// Alarms written.
    pub alarms: usize,
}

/// A data dir opened for offline administration.
///
/// ```
/// # fn main() -> objects::Result<()> {
/// use objects::{Admin, Entry, ExportFilter};
///
/// let dir = tempfile::tempdir().unwrap();
/// let mut admin = Admin::create(dir.path())?;
/// let lines: Vec<String> = admin
///     .export(&ExportFilter::default())?
///     .map(|e| Ok(e?.to_json_line()?))
///     .collect::<objects::Result<_>>()?;
/// assert_eq!(lines.len(), 1); // the store line; no objects yet
/// // The lines parse back; importing them into the same store is a no-op.
/// let entries = lines.iter().map(|l| Ok::<_, objects::Error>(Entry::from_json_line(l)?));
/// let stats = admin.import(entries, |_| {})?;
/// assert_eq!(stats.objects, 0);
/// # Ok(()) }
/// ```
pub struct Admin {
    store: Arc<Store>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("data_dir", &self.store.path())
            .finish_non_exhaustive()
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        // Join the writer thread so the environment is closed (and the dir
        // can be opened again in this process) once the Admin is gone.
        self.store.writer.close_blocking();
    }
}

impl Admin {
    /// Opens an existing data dir.
    ///
    /// # Errors
    ///
    /// [`AdminError::NoStore`] if the dir holds no store,
    /// [`StorageError::DataDirInUse`] if a runtime (or another `Admin`) has
    /// it open, or a storage error.
    pub fn open(dir: impl AsRef<Path>) -> Result<Admin> {
        let dir = dir.as_ref();
        if !dir.join("data.mdb").is_file() {
            return Err(AdminError::NoStore(dir.to_path_buf()).into());
        }
        Self::create(dir)
    }

    /// Opens a data dir, creating an empty store if there is none (the
    /// target of an import).
    ///
    /// # Errors
    ///
    /// As [`Admin::open`], except that a missing store is created.
    pub fn create(dir: impl AsRef<Path>) -> Result<Admin> {
        let dir = dir.as_ref();
        // Opened on a thread of our own: inside a tokio runtime the store
        // would start its writer on the blocking pool, which `Drop` cannot
        // join; on a plain thread it gets a plain writer thread.
        let store = std::thread::scope(|s| {
            s.spawn(|| Store::open(dir, &StoreOptions::default()))
                .join()
        })
        .map_err(|_| StorageError::Io {
            context: dir.display().to_string(),
            source: std::io::Error::other("opening the data dir panicked"),
        })??;
        Ok(Admin { store })
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// Every namespace with stored objects, with how many.
    ///
    /// # Errors
    ///
    /// An LMDB read error.
    pub fn namespaces(&self) -> Result<BTreeMap<String, usize>> {
        let mut out = BTreeMap::new();
        for o in self.catalog()? {
            *out.entry(o.namespace).or_insert(0) += 1;
        }
        Ok(out)
    }

    /// Every object with stored state in `namespace`, in id order.
    ///
    /// # Errors
    ///
    /// An LMDB read error.
    pub fn objects(&self, namespace: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .store
            .catalog(namespace)?
            .into_iter()
            .map(|(id, name)| ObjectInfo::new(namespace, id, name))
            .collect())
    }

    /// Every catalog entry, in id order.
    fn catalog(&self) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .store
            .catalogued()?
            .into_iter()
            .map(|(id, ns, name)| ObjectInfo::new(ns, id, name))
            .collect())
    }

    /// The store's format and secret.
    fn identity(&self) -> Result<Entry> {
        let rtxn = self
            .store
            .env
            .read_txn()
            .map_err(|e| StorageError::lmdb("read", e))?;
        let secret = self
            .store
            .dbs
            .meta
            .get(&rtxn, b"secret")
            .map_err(|e| StorageError::lmdb("read secret", e))?
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
            .ok_or_else(|| StorageError::Corrupt("meta secret is missing".into()))?;
        Ok(Entry::Store {
            format: FORMAT_VERSION,
            secret,
        })
    }

    /// Every entry of the objects `filter` selects: first the store line,
    /// then per object (in id order) its catalog entry, its keys in key
    /// order and its alarm. Reads lazily, a page of keys at a time.
    ///
    /// # Errors
    ///
    /// An LMDB read error now; the iterator yields read errors and corrupt
    /// records as it meets them.
    pub fn export(&self, filter: &ExportFilter) -> Result<Export<'_>> {
        let objects: Vec<ObjectInfo> = self
            .catalog()?
            .into_iter()
            .filter(|o| filter.matches(o))
            .collect();
        Ok(Export {
            admin: self,
            pending: VecDeque::from([self.identity()?]),
            objects: objects.into_iter(),
            current: None,
            failed: false,
        })
    }

    /// Up to `EXPORT_PAGE` keys of one object after `after`.
    fn page(&self, o: &ObjectInfo, after: Option<&str>) -> Result<Vec<Entry>> {
        let mut opts = ListOptions::new().limit(EXPORT_PAGE);
        if let Some(a) = after {
            opts = opts.start_after(a);
        }
        let Some(range) = opts.compile()? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut err = None;
        self.store
            .scan(o.id.as_bytes(), &range, &mut |k, v| match decode(k, &v) {
                Ok((key, value)) => {
                    out.push(Entry::Key {
                        object: o.clone(),
                        key,
                        value,
                    });
                    true
                }
                Err(e) => {
                    err = Some(e);
                    false
                }
            })?;
        match err {
            Some(e) => Err(e.into()),
            None => Ok(out),
        }
    }

    /// Writes a consistent, compacted copy of the store to `to/data.mdb`
    /// (`to` is created if missing). Open `to` as a data dir to restore.
    ///
    /// # Errors
    ///
    /// [`StorageError::BackupTargetExists`] if `to` holds a store, or an
    /// I/O or LMDB error.
    pub fn backup(&self, to: &Path) -> Result<()> {
        self.store.backup(to)?;
        sync_file(&to.join("data.mdb"))
    }

    /// Backs up `dir` whether or not a runtime in another process has it
    /// open: opens the environment read-only, as a second LMDB process
    /// (LMDB coordinates readers and the writer across processes; the
    /// `LOCK` file only keeps a second *writer* of ours out), and copies
    /// from one read transaction. While the copy runs the server cannot
    /// reuse pages freed meanwhile, so its file may grow.
    ///
    /// Within one process the dir must not be open (use
    /// `Runtime::backup` there).
    ///
    /// # Errors
    ///
    /// [`AdminError::NoStore`], [`StorageError::BackupTargetExists`],
    /// [`StorageError::DataDirInUse`] if this process has the dir open, or
    /// an I/O or LMDB error.
    pub fn backup_live(dir: &Path, to: &Path) -> Result<()> {
        if !dir.join("data.mdb").is_file() {
            return Err(AdminError::NoStore(dir.to_path_buf()).into());
        }
        let file = to.join("data.mdb");
        if file.exists() {
            return Err(StorageError::BackupTargetExists(file).into());
        }
        let mut opts = EnvOpenOptions::new().read_txn_without_tls();
        opts.map_size(StoreOptions::default().max_size)
            .max_dbs(8)
            .max_readers(1024);
        // SAFETY: READ_ONLY is not one of the flags heed calls unsafe
        // (NO_SYNC, NO_META_SYNC, NO_LOCK); it only refuses write
        // transactions.
        #[allow(unsafe_code)]
        unsafe {
            opts.flags(EnvFlags::READ_ONLY);
        }
        // SAFETY: the map is read-only here, and the only process that may
        // write the file is a runtime of ours going through LMDB, whose lock
        // file (`lock.mdb`) coordinates it with this reader.
        #[allow(unsafe_code)]
        let env = unsafe { opts.open(dir) }.map_err(|e| match e {
            heed::Error::EnvAlreadyOpened => StorageError::DataDirInUse(dir.to_path_buf()),
            e => StorageError::lmdb("open for backup", e),
        })?;
        // Reader slots left by a killed earlier backup would pin old pages
        // in the server's file; free them.
        let _ = env.clear_stale_readers();
        crate::storage::copy_env_to(&env, to)?;
        drop(env);
        sync_file(&file)
    }
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StorageError::io(path, e).into())
}

/// Decodes one stored key and value exactly.
fn decode(key: Vec<u8>, value: &[u8]) -> Result<(String, StoredValue), StorageError> {
    let key = String::from_utf8(key)
        .map_err(|_| StorageError::Corrupt("stored key is not UTF-8".into()))?;
    let value = StoredValue::from_stored(value)
        .map_err(|e| StorageError::Corrupt(format!("value of {key:?}: {e}")))?;
    Ok((key, value))
}

/// The entries of an export; see [`Admin::export`].
pub struct Export<'a> {
    admin: &'a Admin,
    pending: VecDeque<Entry>,
    objects: std::vec::IntoIter<ObjectInfo>,
    /// The object being read, and the last key read from it.
    current: Option<(ObjectInfo, Option<String>)>,
    /// An error was yielded: the iterator ends.
    failed: bool,
}

impl std::fmt::Debug for Export<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("objects_left", &self.objects.len())
            .finish_non_exhaustive()
    }
}

impl Export<'_> {
    /// Queues the next entries; false at the end.
    fn refill(&mut self) -> Result<bool> {
        loop {
            if let Some((object, after)) = self.current.take() {
                let page = self.admin.page(&object, after.as_deref())?;
                let last = match page.last() {
                    Some(Entry::Key { key, .. }) if page.len() == EXPORT_PAGE => Some(key.clone()),
                    _ => None,
                };
                let any = !page.is_empty();
                self.pending.extend(page);
                match last {
                    Some(last) => self.current = Some((object, Some(last))),
                    None => {
                        if let Some(at_ms) = self.admin.store.alarm(object.id.as_bytes())? {
                            self.pending.push_back(Entry::Alarm { object, at_ms });
                        }
                    }
                }
                if !self.pending.is_empty() || any {
                    return Ok(true);
                }
                continue;
            }
            let Some(object) = self.objects.next() else {
                return Ok(false);
            };
            self.pending.push_back(Entry::Object(object.clone()));
            self.current = Some((object, None));
            return Ok(true);
        }
    }
}

impl Iterator for Export<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(Ok(e));
            }
            if self.failed {
                return None;
            }
            match self.refill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
