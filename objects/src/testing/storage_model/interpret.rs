//! Runs [`Op`]s on a real [`Storage`] and records what they observed.

use std::sync::Arc;

use tokio::sync::Notify;

use super::{Exported, Obs, Op};
use crate::{BoxError, ListOptions, Storage, StorageError, StoredValue};

/// Where [`Op::Block`] waits, shared between the object's env and the test.
#[derive(Debug, Default)]
pub struct Pause {
    /// Signalled (one permit) when an event reaches a `Block`.
    pub entered: Notify,
    /// The blocked event goes on once this is signalled.
    pub release: Notify,
}

/// Runs ops for one object instance. Holds what lives in the instance's
/// memory (the [`Op::Bump`] counter), so a reset shows as a fresh count:
/// build one in the object's constructor.
#[derive(Debug, Default)]
pub struct Interpreter {
    bumps: u64,
    pause: Arc<Pause>,
}

impl Interpreter {
    /// An interpreter whose [`Op::Block`]s wait on `pause`.
    pub fn new(pause: Arc<Pause>) -> Interpreter {
        Interpreter { bumps: 0, pause }
    }

    /// Runs one op of an event.
    ///
    /// # Errors
    ///
    /// [`Op::Fail`] returns an application error, for the handler to
    /// return; every other op's error is an [`Obs`].
    ///
    /// # Panics
    ///
    /// On [`Op::Panic`], on purpose.
    pub async fn run(&mut self, storage: &mut Storage, op: &Op) -> Result<Obs, BoxError> {
        Ok(match op {
            Op::Sync => match storage.sync().await {
                Ok(()) => Obs::Done,
                Err(e) => from_storage_error(e),
            },
            Op::Txn { ops, fail } => {
                let mut inner = Vec::new();
                let r = storage
                    .transaction(|s| {
                        inner.extend(ops.iter().map(|op| apply(s, op)));
                        if *fail {
                            Err(BoxError::from("rolled back on purpose"))
                        } else {
                            Ok(())
                        }
                    })
                    .await;
                let result = match r {
                    Ok(()) => Obs::Done,
                    Err(e) => from_error(e),
                };
                Obs::Txn(inner, Box::new(result))
            }
            Op::TxnDeleteAll => match storage.transaction(|s| s.delete_all()).await {
                Ok(()) => Obs::Done,
                Err(e) => from_storage_error(e),
            },
            Op::Bump => {
                self.bumps += 1;
                Obs::Bumped(self.bumps)
            }
            Op::Block => {
                self.pause.entered.notify_one();
                self.pause.release.notified().await;
                Obs::Done
            }
            Op::Fail => return Err("failed on purpose".into()),
            Op::Panic => panic!("panicked on purpose"),
            op => apply(storage, op),
        })
    }
}

/// Runs one synchronous storage op (what a transaction's closure may run);
/// any other op is refused as `Unsupported`.
pub fn apply(s: &mut Storage, op: &Op) -> Obs {
    match op {
        Op::Put(k, v) => done(s.put(k, v)),
        Op::PutText(k, v) => done(s.put(k, v)),
        Op::PutBytes(k, v) => done(s.put_bytes(k, v)),
        Op::PutMany(entries) => {
            let entries: Vec<(&str, &super::Point)> =
                entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
            done(s.put_many(&entries))
        }
        Op::Get(k) => observe(s.get(k), Obs::Point),
        Op::GetText(k) => observe(s.get(k), Obs::Text),
        Op::GetBytes(k) => observe(s.get_bytes(k), |v| Obs::Bytes(v.map(|b| b.to_vec()))),
        Op::GetMany(keys) => {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            observe(s.get_many(&keys), Obs::Points)
        }
        Op::Delete(k) => observe(s.delete(k), Obs::Existed),
        Op::DeleteMany(keys) => {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            observe(s.delete_many(&keys), Obs::Deleted)
        }
        Op::List(spec) => observe(s.list(&ListOptions::from(spec)), Obs::Entries),
        Op::ListBytes(spec) => observe(s.list_bytes(&ListOptions::from(spec)), |v| {
            Obs::ByteEntries(v.into_iter().map(|(k, b)| (k, b.to_vec())).collect())
        }),
        Op::Export => match s.export() {
            Ok(v) => {
                let mut out = Vec::with_capacity(v.len());
                for (k, v) in v {
                    let v = match v {
                        StoredValue::Json(text) => match serde_json::from_str(&text) {
                            Ok(j) => Exported::Json(j),
                            Err(e) => {
                                return Obs::Failed {
                                    kind: "Corrupt".into(),
                                    message: e.to_string(),
                                };
                            }
                        },
                        StoredValue::Bytes(b) => Exported::Bytes(b.to_vec()),
                    };
                    out.push((k, v));
                }
                Obs::Exported(out)
            }
            Err(e) => from_storage_error(e),
        },
        Op::DeleteAll => done(s.delete_all()),
        op => Obs::Failed {
            kind: "Unsupported".into(),
            message: format!("{op:?} cannot run inside a transaction"),
        },
    }
}

fn done(r: std::result::Result<(), StorageError>) -> Obs {
    observe(r, |()| Obs::Done)
}

fn observe<T>(r: std::result::Result<T, StorageError>, f: impl FnOnce(T) -> Obs) -> Obs {
    r.map_or_else(from_storage_error, f)
}

/// The variant name at the start of a `Debug` rendering.
fn kind_of(debug: &str) -> String {
    debug.chars().take_while(|c| c.is_alphanumeric()).collect()
}

fn from_storage_error(e: StorageError) -> Obs {
    match e {
        StorageError::KeyTooLarge { len, max } => Obs::KeyTooLarge { len, max },
        StorageError::ValueTooLarge { len, max } => Obs::ValueTooLarge { len, max },
        StorageError::TooManyKeys { len, max } => Obs::TooManyKeys { len, max },
        e => Obs::Failed {
            kind: kind_of(&format!("{e:?}")),
            message: e.to_string(),
        },
    }
}

/// A transaction's error: the storage's own, or the closure's (`App`).
fn from_error(e: BoxError) -> Obs {
    match e.downcast::<StorageError>() {
        Ok(e) => from_storage_error(*e),
        Err(e) => Obs::Failed {
            kind: "App".into(),
            message: e.to_string(),
        },
    }
}
