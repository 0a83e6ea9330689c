//! Runs [`Op`]s on a real [`Storage`] and records what they observed.

use std::sync::Arc;

use tokio::sync::Notify;

use super::{Exported, Obs, Op};
use crate::{Error, ListOptions, Result, Storage, StorageError, StoredValue};

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
    pub async fn run(&mut self, storage: &mut Storage, op: &Op) -> Result<Obs> {
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
                            Err(Error::app("rolled back on purpose"))
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
            Op::Fail => return Err(Error::app("failed on purpose")),
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
        Op::Export => observe(s.export(), |v| {
            Obs::Exported(
                v.into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            StoredValue::Json(j) => Exported::Json(j),
                            StoredValue::Bytes(b) => Exported::Bytes(b.to_vec()),
                        };
                        (k, v)
                    })
                    .collect(),
            )
        }),
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

fn from_error(e: Error) -> Obs {
    match e {
        Error::Storage(e) => from_storage_error(e),
        e => Obs::Failed {
            kind: kind_of(&format!("{e:?}")),
            message: e.to_string(),
        },
    }
}
