//! A pure model of one object's storage and its events, on a `BTreeMap`.
//!
//! It follows the documented rules: an event's writes commit when it ends,
//! or earlier at `sync` and a successful transaction; a failed transaction
//! undoes only its own writes; a handler error (or panic) drops the event's
//! uncommitted writes and resets the instance; events queued together run
//! back to back and share one commit (at most `max_events_per_commit` of
//! them, a group ending early at a failed event); a failed commit resets
//! the instance and fails every event whose writes it carried.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Exported, ListSpec, Obs, Op, Point, failed};
use crate::{MAX_KEYS_PER_CALL, MAX_VALUE_BYTES};

/// Longest key the model takes. The store's own limit depends on LMDB's
/// page size (at least 1,900 bytes), which the model does not know, so it
/// refuses to guess what a longer key does.
pub const MAX_MODELLED_KEY_BYTES: usize = 1024;

/// A stored value as the store keeps it: typed values as JSON text, raw
/// values as given.
#[derive(Debug, Clone)]
enum Stored {
    Json(Vec<u8>),
    Bytes(Vec<u8>),
}

impl Stored {
    /// What `get_bytes` returns: the JSON text or the raw bytes.
    fn payload(&self) -> &[u8] {
        match self {
            Stored::Json(b) | Stored::Bytes(b) => b,
        }
    }

    /// What `get::<T>` returns.
    fn decode<T: DeserializeOwned>(&self) -> Result<T, Obs> {
        match self {
            Stored::Json(text) => serde_json::from_slice(text).map_err(|_| failed("Codec")),
            Stored::Bytes(_) => Err(failed("Codec")),
        }
    }
}

type Map = BTreeMap<String, Stored>;

/// The state of one commit group.
struct Group {
    /// What the object sees: committed data plus the overlay.
    view: Map,
    /// The overlay holds something (a commit would write).
    dirty: bool,
    /// A commit failed during this group.
    broken: bool,
}

/// What the model expects of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// The event ran on a fresh instance (its constructor ran first).
    pub fresh: bool,
    /// Each op's observation, up to the op that failed the handler.
    pub obs: Vec<Obs>,
    /// The caller gets a success.
    pub ok: bool,
}

/// The model of one object: its committed data, its instance, and the
/// commit failures injected into its runtime.
#[derive(Debug)]
pub struct Model {
    committed: Map,
    /// Commits still to fail (as `Runtime::inject_commit_failures`).
    pending_failures: u32,
    /// An instance is live (the next event does not construct one).
    alive: bool,
    /// The live instance's `Bump` counter.
    bumps: u64,
    max_events_per_commit: usize,
}

impl Model {
    /// An empty store with no instance, for a runtime whose
    /// `RuntimeOptions::max_events_per_commit` is this.
    pub fn new(max_events_per_commit: usize) -> Model {
        Model {
            committed: Map::new(),
            pending_failures: 0,
            alive: false,
            bumps: 0,
            max_events_per_commit: max_events_per_commit.max(1),
        }
    }

    /// The next `n` commits fail (replacing any count still pending).
    pub fn inject_commit_failures(&mut self, n: u32) {
        self.pending_failures = n;
    }

    /// The runtime was shut down and opened again: committed data stays,
    /// the instance and any injected failures are gone.
    pub fn reopen(&mut self) {
        self.pending_failures = 0;
        self.alive = false;
    }

    /// Runs events queued together, in order, the way the object task
    /// does, and says what each should observe.
    ///
    /// # Panics
    ///
    /// On a key longer than [`MAX_MODELLED_KEY_BYTES`].
    pub fn run(&mut self, events: &[Vec<Op>]) -> Vec<Expected> {
        let mut results: Vec<Expected> = Vec::with_capacity(events.len());
        let mut next = 0;
        while next < events.len() {
            let mut g = Group {
                view: self.committed.clone(),
                dirty: false,
                broken: false,
            };
            let mut held: Vec<usize> = Vec::new();
            let mut commit = true;
            while next < events.len() {
                let ops = &events[next];
                let idx = next;
                next += 1;
                let fresh = !self.alive;
                if fresh {
                    self.alive = true;
                    self.bumps = 0;
                }
                // Where a handler error in this event rolls back to.
                let mut rollback_to = (g.view.clone(), g.dirty);
                let mut obs = Vec::new();
                let mut handler_failed = false;
                for op in ops {
                    if matches!(op, Op::Fail | Op::Panic) {
                        handler_failed = true;
                        break;
                    }
                    obs.push(self.op(&mut g, &mut rollback_to, op));
                }
                if g.broken {
                    // The failed commit carried every held event's writes.
                    for &h in &held {
                        results[h].ok = false;
                    }
                    results.push(Expected {
                        fresh,
                        obs,
                        ok: false,
                    });
                    self.alive = false;
                    commit = false;
                    break;
                }
                if handler_failed {
                    // This event's uncommitted writes go; earlier events'
                    // stay and commit with the group.
                    (g.view, g.dirty) = rollback_to;
                    results.push(Expected {
                        fresh,
                        obs,
                        ok: false,
                    });
                    self.alive = false;
                    break;
                }
                results.push(Expected {
                    fresh,
                    obs,
                    ok: true,
                });
                held.push(idx);
                if held.len() >= self.max_events_per_commit {
                    break;
                }
            }
            if commit && g.dirty {
                if self.pending_failures > 0 {
                    self.pending_failures -= 1;
                    for &h in &held {
                        results[h].ok = false;
                    }
                    self.alive = false;
                } else {
                    self.committed = g.view;
                }
            }
        }
        results
    }

    /// Commits the group's overlay, as `sync` does. `rollback_to` is where
    /// a later handler error in this event rolls back to.
    fn sync(&mut self, g: &mut Group, rollback_to: &mut (Map, bool)) -> Obs {
        if g.broken {
            return failed("CommitFailed");
        }
        if !g.dirty {
            return Obs::Done;
        }
        if self.pending_failures > 0 {
            self.pending_failures -= 1;
            g.broken = true;
            // The overlay went with the failed commit.
            g.view = self.committed.clone();
            g.dirty = false;
            return failed("CommitFailed");
        }
        self.committed = g.view.clone();
        g.dirty = false;
        *rollback_to = (g.view.clone(), false);
        Obs::Done
    }

    fn op(&mut self, g: &mut Group, rollback_to: &mut (Map, bool), op: &Op) -> Obs {
        match op {
            Op::Sync => self.sync(g, rollback_to),
            Op::Txn { ops, fail } => {
                let before = (g.view.clone(), g.dirty);
                let inner = ops.iter().map(|op| storage_op(g, op, true)).collect();
                let result = if *fail {
                    (g.view, g.dirty) = before;
                    failed("App")
                } else {
                    self.sync(g, rollback_to)
                };
                Obs::Txn(inner, Box::new(result))
            }
            // The closure's delete_all is refused; nothing was written.
            Op::TxnDeleteAll => failed("InTransaction"),
            Op::Bump => {
                self.bumps += 1;
                Obs::Bumped(self.bumps)
            }
            Op::Block => Obs::Done,
            op => storage_op(g, op, false),
        }
    }
}

/// A synchronous storage op on the group's view.
fn storage_op(g: &mut Group, op: &Op, in_txn: bool) -> Obs {
    match op {
        Op::Put(k, v) => put(g, k, encode(v)),
        Op::PutText(k, v) => put(g, k, encode(v)),
        Op::PutBytes(k, v) => put(g, k, Ok(Stored::Bytes(v.clone()))),
        Op::PutMany(entries) => put_many(g, entries),
        Op::Get(k) => get(g, k).map_or_else(|e| e, Obs::Point),
        Op::GetText(k) => get(g, k).map_or_else(|e| e, Obs::Text),
        Op::GetBytes(k) => {
            check_key(k);
            Obs::Bytes(g.view.get(k).map(|v| v.payload().to_vec()))
        }
        Op::GetMany(keys) => get_many(g, keys),
        Op::Delete(k) => {
            check_key(k);
            g.dirty = true;
            Obs::Existed(g.view.remove(k).is_some())
        }
        Op::DeleteMany(keys) => {
            if let Err(e) = check_count(keys.len()) {
                return e;
            }
            keys.iter().for_each(|k| check_key(k));
            if !keys.is_empty() {
                g.dirty = true;
            }
            Obs::Deleted(keys.iter().filter(|k| g.view.remove(*k).is_some()).count())
        }
        Op::List(spec) => match listed(&g.view, spec) {
            Ok(entries) => entries
                .into_iter()
                .map(|(k, v)| Ok((k.clone(), v.decode::<Point>()?)))
                .collect::<Result<_, Obs>>()
                .map_or_else(|e| e, Obs::Entries),
            Err(e) => e,
        },
        Op::ListBytes(spec) => match listed(&g.view, spec) {
            Ok(entries) => Obs::ByteEntries(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), v.payload().to_vec()))
                    .collect(),
            ),
            Err(e) => e,
        },
        Op::Export => g
            .view
            .iter()
            .filter(|(k, _)| !k.starts_with('\0'))
            .map(|(k, v)| {
                let v = match v {
                    Stored::Json(text) => {
                        Exported::Json(serde_json::from_slice(text).map_err(|_| failed("Corrupt"))?)
                    }
                    Stored::Bytes(b) => Exported::Bytes(b.clone()),
                };
                Ok((k.clone(), v))
            })
            .collect::<Result<_, Obs>>()
            .map_or_else(|e| e, Obs::Exported),
        Op::DeleteAll if in_txn => failed("InTransaction"),
        Op::DeleteAll => {
            g.view.clear();
            g.dirty = true;
            Obs::Done
        }
        Op::Sync
        | Op::Txn { .. }
        | Op::TxnDeleteAll
        | Op::Bump
        | Op::Block
        | Op::Fail
        | Op::Panic => failed("Unsupported"),
    }
}

fn check_key(k: &str) {
    assert!(
        k.len() <= MAX_MODELLED_KEY_BYTES,
        "the storage model takes keys of at most {MAX_MODELLED_KEY_BYTES} bytes, not {}",
        k.len()
    );
}

fn check_count(len: usize) -> Result<(), Obs> {
    if len > MAX_KEYS_PER_CALL {
        return Err(Obs::TooManyKeys {
            len,
            max: MAX_KEYS_PER_CALL,
        });
    }
    Ok(())
}

/// A typed value as the store encodes it, size-checked.
fn encode<T: Serialize>(value: &T) -> Result<Stored, Obs> {
    let text = serde_json::to_vec(value).map_err(|_| failed("Codec"))?;
    Ok(Stored::Json(text))
}

fn check_size(v: &Stored) -> Result<(), Obs> {
    let len = v.payload().len();
    if len > MAX_VALUE_BYTES {
        return Err(Obs::ValueTooLarge {
            len,
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

fn put(g: &mut Group, k: &str, v: Result<Stored, Obs>) -> Obs {
    check_key(k);
    let v = match v.and_then(|v| check_size(&v).map(|()| v)) {
        Ok(v) => v,
        Err(e) => return e,
    };
    g.view.insert(k.to_owned(), v);
    g.dirty = true;
    Obs::Done
}

/// All or none: every entry is checked before any is written.
fn put_many(g: &mut Group, entries: &[(String, Point)]) -> Obs {
    let checked = check_count(entries.len()).and_then(|()| {
        entries
            .iter()
            .map(|(k, v)| {
                check_key(k);
                let v = encode(v)?;
                check_size(&v)?;
                Ok((k.clone(), v))
            })
            .collect::<Result<Vec<_>, Obs>>()
    });
    match checked {
        Ok(encoded) => {
            if !encoded.is_empty() {
                g.dirty = true;
            }
            g.view.extend(encoded);
            Obs::Done
        }
        Err(e) => e,
    }
}

fn get<T: DeserializeOwned>(g: &Group, k: &str) -> Result<Option<T>, Obs> {
    check_key(k);
    g.view.get(k).map(Stored::decode).transpose()
}

fn get_many(g: &Group, keys: &[String]) -> Obs {
    let got = check_count(keys.len()).and_then(|()| {
        let mut out = BTreeMap::new();
        for k in keys {
            if let Some(v) = get::<Point>(g, k)? {
                out.insert(k.clone(), v);
            }
        }
        Ok(out)
    });
    got.map_or_else(|e| e, Obs::Points)
}

/// `list` by its documented rules: keys in UTF-8 byte order (which is
/// `String` order), `start` inclusive, `start_after` exclusive (not both),
/// `end` exclusive, `prefix` narrowing, `reverse` the same range
/// descending, `limit` positive. Keys beginning with NUL are the
/// runtime's (timer records): hidden unless the prefix begins with NUL.
fn listed<'a>(view: &'a Map, spec: &ListSpec) -> Result<Vec<(&'a String, &'a Stored)>, Obs> {
    if spec.limit == Some(0) || (spec.start.is_some() && spec.start_after.is_some()) {
        return Err(failed("InvalidList"));
    }
    let internal = spec.prefix.as_deref().is_some_and(|p| p.starts_with('\0'));
    let keep = |k: &String| {
        (internal || !k.starts_with('\0'))
            && spec.start.as_ref().is_none_or(|s| k >= s)
            && spec.start_after.as_ref().is_none_or(|s| k > s)
            && spec.end.as_ref().is_none_or(|e| k < e)
            && spec
                .prefix
                .as_ref()
                .is_none_or(|p| k.starts_with(p.as_str()))
    };
    let mut entries: Vec<_> = view.iter().filter(|(k, _)| keep(k)).collect();
    if spec.reverse {
        entries.reverse();
    }
    entries.truncate(spec.limit.unwrap_or(usize::MAX));
    Ok(entries)
}
