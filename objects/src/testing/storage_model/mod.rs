//! Storage operations as data, run two ways: on a real
//! [`Storage`](crate::Storage) by an
//! [`Interpreter`], and on a pure `BTreeMap` [`Model`]. A test sends the
//! same [`Op`]s to an object whose handler runs the interpreter and to the
//! model, and compares the [`Obs`]ervations.
//!
//! The storage conformance tests use the interpreter with hand-written
//! expectations, the model test and the `storage_ops` fuzz target compare
//! it with the model: one definition of what each operation means.
//!
//! ```
//! use objects::testing::storage_model::{Model, Obs, Op, Point};
//!
//! let mut model = Model::new(1);
//! let event = vec![
//!     Op::Put("a".into(), Point::new(1)),
//!     Op::Get("a".into()),
//!     Op::Delete("b".into()),
//! ];
//! let got = model.run(&[event]);
//! assert!(got[0].ok);
//! assert_eq!(
//!     got[0].obs,
//!     [Obs::Done, Obs::Point(Some(Point::new(1))), Obs::Existed(false)]
//! );
//! ```
//!
//! # What the model leaves out
//!
//! The model knows the documented rules of reads, writes, `list`,
//! transactions, `sync`, commit groups and resets, and the value-size and
//! key-count limits. It does not know the key-length limit (it depends on
//! LMDB's page size) nor the per-event byte limit: keep keys under
//! [`MAX_MODELLED_KEY_BYTES`] and events small. It predicts an error's kind,
//! not its wording: compare observations with [`Obs::without_messages`].

mod interpret;
mod model;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ListOptions;

pub use interpret::{Interpreter, Pause, apply};
pub use model::{Expected, MAX_MODELLED_KEY_BYTES, Model};

/// A typed value for the typed operations (`put`, `get` and `list` as
/// `T`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// A number.
    pub x: i64,
    /// A string, so sizes can be made up.
    pub label: String,
}

impl Point {
    /// `Point { x, label: "p{x}" }`.
    pub fn new(x: i64) -> Point {
        Point {
            x,
            label: format!("p{x}"),
        }
    }
}

/// [`ListOptions`] in a form that travels in a call (serialisable).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSpec {
    /// As [`ListOptions::start`].
    pub start: Option<String>,
    /// As [`ListOptions::start_after`].
    pub start_after: Option<String>,
    /// As [`ListOptions::end`].
    pub end: Option<String>,
    /// As [`ListOptions::prefix`].
    pub prefix: Option<String>,
    /// As [`ListOptions::reverse`].
    pub reverse: bool,
    /// As [`ListOptions::limit`].
    pub limit: Option<usize>,
}

impl From<&ListOptions> for ListSpec {
    fn from(o: &ListOptions) -> Self {
        ListSpec {
            start: o.start.clone(),
            start_after: o.start_after.clone(),
            end: o.end.clone(),
            prefix: o.prefix.clone(),
            reverse: o.reverse,
            limit: o.limit,
        }
    }
}

impl From<&ListSpec> for ListOptions {
    fn from(s: &ListSpec) -> Self {
        ListOptions {
            start: s.start.clone(),
            start_after: s.start_after.clone(),
            end: s.end.clone(),
            prefix: s.prefix.clone(),
            reverse: s.reverse,
            limit: s.limit,
        }
    }
}

/// One step of an event handler. Typed operations use [`Point`] (or
/// `String` for the `*Text` ones); `*Bytes` ones use raw bytes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `put(key, &point)`.
    Put(String, Point),
    /// `put(key, &string)`: a typed `String` value.
    PutText(String, String),
    /// `put_bytes(key, bytes)`.
    PutBytes(String, Vec<u8>),
    /// `put_many(entries)`.
    PutMany(Vec<(String, Point)>),
    /// `get::<Point>(key)`.
    Get(String),
    /// `get::<String>(key)`.
    GetText(String),
    /// `get_bytes(key)`.
    GetBytes(String),
    /// `get_many::<Point>(keys)`.
    GetMany(Vec<String>),
    /// `delete(key)`.
    Delete(String),
    /// `delete_many(keys)`.
    DeleteMany(Vec<String>),
    /// `list::<Point>(options)`.
    List(ListSpec),
    /// `list_bytes(options)`.
    ListBytes(ListSpec),
    /// `export()`.
    Export,
    /// `delete_all()`.
    DeleteAll,
    /// `sync().await`. Not inside a transaction.
    Sync,
    /// A transaction running `ops` (only the synchronous storage calls
    /// above); `fail` makes the closure return an application error after
    /// them. Not inside a transaction.
    Txn {
        /// What the closure runs.
        ops: Vec<Op>,
        /// The closure fails after them.
        fail: bool,
    },
    /// `transaction(|s| s.delete_all())`, the closure's error returned.
    TxnDeleteAll,
    /// Increments the instance's in-memory counter (shows whether the
    /// instance is the same one as before). Not inside a transaction.
    Bump,
    /// Signals [`Pause::entered`], then waits for [`Pause::release`]. The
    /// model sees nothing. Not inside a transaction.
    Block,
    /// The handler returns an application error here.
    Fail,
    /// The handler panics here.
    Panic,
}

/// What an op observed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Obs {
    /// It succeeded with nothing to return.
    Done,
    /// `delete`: whether the key existed.
    Existed(bool),
    /// `delete_many`: how many keys existed.
    Deleted(usize),
    /// `get::<Point>`.
    Point(Option<Point>),
    /// `get::<String>`.
    Text(Option<String>),
    /// `get_bytes`.
    Bytes(Option<Vec<u8>>),
    /// `get_many::<Point>`.
    Points(BTreeMap<String, Point>),
    /// `list::<Point>`.
    Entries(Vec<(String, Point)>),
    /// `list_bytes`.
    ByteEntries(Vec<(String, Vec<u8>)>),
    /// `export`.
    Exported(Vec<(String, Exported)>),
    /// A transaction: the inner ops' observations, then `Done` or the
    /// transaction's error.
    Txn(Vec<Obs>, Box<Obs>),
    /// `Bump`: the counter after it (1 on a fresh instance).
    Bumped(u64),
    /// [`StorageError::KeyTooLarge`](crate::StorageError::KeyTooLarge).
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// [`StorageError::ValueTooLarge`](crate::StorageError::ValueTooLarge).
    ValueTooLarge {
        /// The encoded value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// [`StorageError::TooManyKeys`](crate::StorageError::TooManyKeys).
    TooManyKeys {
        /// Keys given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Any other error: its variant name (`InvalidList`, `Codec`,
    /// `InTransaction`, `CommitFailed`, `App`, ...; `Unsupported` for an op
    /// that cannot run where it stands) and its message (empty from the
    /// model).
    Failed {
        /// The error's variant name.
        kind: String,
        /// The error's message.
        message: String,
    },
}

impl Obs {
    /// The same observation with every error message emptied, for
    /// comparison with the model.
    pub fn without_messages(&self) -> Obs {
        match self {
            Obs::Failed { kind, .. } => failed(kind),
            Obs::Txn(inner, result) => Obs::Txn(
                inner.iter().map(Obs::without_messages).collect(),
                Box::new(result.without_messages()),
            ),
            o => o.clone(),
        }
    }
}

/// An `Obs::Failed` of this kind with no message.
fn failed(kind: &str) -> Obs {
    Obs::Failed {
        kind: kind.to_owned(),
        message: String::new(),
    }
}

/// One exported value ([`StoredValue`](crate::StoredValue) in comparable
/// form).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Exported {
    /// Stored typed: the JSON.
    Json(serde_json::Value),
    /// Stored as bytes.
    Bytes(Vec<u8>),
}
