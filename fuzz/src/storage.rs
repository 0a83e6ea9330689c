//! Fuzz bodies for the object runtime: id parsing, list options and
//! storage operation sequences, each checked against a model.
//!
//! `objects` has no pure entry point for these (id parsing needs the
//! namespace's key, lists need a store), so they run through a real
//! runtime on a temporary data dir, opened once per [`Harness`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use objects::{Context, Error, ListOptions, Namespace, Object, Result, Runtime, Storage};
use serde::{Deserialize, Serialize};

/// A runtime on a temporary data dir with one namespace of [`Subject`]s.
pub struct Harness {
    // Fields drop in order: the runtime's handles before the tokio runtime,
    // whose drop waits for the storage writer (a blocking task that ends
    // when the last handle is gone), and the data dir last.
    subjects: Namespace<Subject>,
    rt: Runtime,
    tokio: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Opens a fresh runtime.
    ///
    /// # Panics
    ///
    /// When the temp dir or the runtime cannot be set up.
    pub fn new() -> Harness {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let (rt, subjects) = {
            let _entered = tokio.enter();
            let rt = Runtime::builder()
                .data_dir(dir.path())
                .open()
                .expect("open runtime");
            let subjects = rt.namespace::<Subject>("subjects", ()).expect("namespace");
            (rt, subjects)
        };
        Harness {
            subjects,
            rt,
            tokio,
            _dir: dir,
        }
    }

    /// One harness for the life of a fuzzing process (never shut down).
    pub fn shared() -> &'static Harness {
        static SHARED: OnceLock<Harness> = OnceLock::new();
        SHARED.get_or_init(Harness::new)
    }

    /// Shuts the runtime down (flushing storage) and removes the data dir.
    pub fn shutdown(self) {
        self.tokio.block_on(self.rt.shutdown());
        drop(self);
    }

    /// Runs events on the one subject object; each call is one event.
    fn run(&self, event: Vec<Op>) -> Vec<Obs> {
        // Inside the runtime: a stub may start the object's task.
        self.tokio
            .block_on(async { self.subjects.get_by_name("subject").call(event).await })
            .expect("the subject's events never fail")
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

/// One storage operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Op {
    Put(String, Vec<u8>),
    Delete(String),
    Get(String),
    List(ListOptionsSpec),
    DeleteAll,
    Sync,
    /// Runs `ops` (puts, deletes, gets, lists) in a transaction whose
    /// closure then fails or succeeds.
    Txn(Vec<Op>, bool),
}

/// [`ListOptions`] in a serialisable form (calls cross a serde boundary).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ListOptionsSpec {
    start: Option<String>,
    start_after: Option<String>,
    end: Option<String>,
    prefix: Option<String>,
    reverse: bool,
    limit: Option<usize>,
}

impl ListOptionsSpec {
    fn options(&self) -> ListOptions {
        ListOptions {
            start: self.start.clone(),
            start_after: self.start_after.clone(),
            end: self.end.clone(),
            prefix: self.prefix.clone(),
            reverse: self.reverse,
            limit: self.limit,
        }
    }
}

/// What one operation observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Obs {
    Done,
    Existed(bool),
    Value(Option<Vec<u8>>),
    Listed(Vec<(String, Vec<u8>)>),
    Txn(Vec<Obs>, bool),
    Err,
}

/// The object under test: runs the operations of a call as one event.
#[derive(Debug)]
struct Subject;

impl Object for Subject {
    type Env = ();
    type Call = Vec<Op>;
    type Reply = Vec<Obs>;

    async fn new(_ctx: &mut Context, _env: Arc<()>) -> Result<Self> {
        Ok(Subject)
    }

    async fn call(&mut self, ctx: &mut Context, ops: Vec<Op>) -> Result<Vec<Obs>> {
        let mut out = Vec::with_capacity(ops.len());
        for op in &ops {
            let obs = match op {
                Op::Sync => match ctx.storage().sync().await {
                    Ok(()) => Obs::Done,
                    Err(_) => Obs::Err,
                },
                Op::Txn(inner_ops, fail) => {
                    let mut inner = Vec::new();
                    let result = ctx
                        .storage()
                        .transaction(|s| {
                            inner.extend(inner_ops.iter().map(|op| apply(s, op)));
                            if *fail {
                                Err(Error::app("rolled back"))
                            } else {
                                Ok(())
                            }
                        })
                        .await;
                    Obs::Txn(inner, result.is_ok())
                }
                op => apply(ctx.storage(), op),
            };
            out.push(obs);
        }
        Ok(out)
    }
}

fn apply(s: &mut Storage, op: &Op) -> Obs {
    let result = match op {
        Op::Put(k, v) => s.put_bytes(k, v).map(|()| Obs::Done),
        Op::Delete(k) => s.delete(k).map(Obs::Existed),
        Op::Get(k) => s.get_bytes(k).map(|v| Obs::Value(v.map(|b| b.to_vec()))),
        Op::List(spec) => s
            .list_bytes(&spec.options())
            .map(|v| Obs::Listed(v.into_iter().map(|(k, b)| (k, b.to_vec())).collect())),
        Op::DeleteAll => s.delete_all().map(|()| Obs::Done),
        Op::Sync | Op::Txn(..) => return Obs::Err,
    };
    result.unwrap_or(Obs::Err)
}

// ---------------------------------------------------------------- model --

type Map = BTreeMap<String, Vec<u8>>;

/// `list` by its documented rules, on the model.
fn model_list(map: &Map, spec: &ListOptionsSpec) -> Obs {
    if spec.limit == Some(0) || (spec.start.is_some() && spec.start_after.is_some()) {
        return Obs::Err;
    }
    let keep = |k: &String| {
        spec.start.as_ref().is_none_or(|s| k >= s)
            && spec.start_after.as_ref().is_none_or(|s| k > s)
            && spec.end.as_ref().is_none_or(|e| k < e)
            && spec
                .prefix
                .as_ref()
                .is_none_or(|p| k.starts_with(p.as_str()))
    };
    let mut listed: Vec<(String, Vec<u8>)> = map
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if spec.reverse {
        listed.reverse();
    }
    if let Some(limit) = spec.limit {
        listed.truncate(limit);
    }
    Obs::Listed(listed)
}

fn model_apply(map: &mut Map, op: &Op) -> Obs {
    match op {
        Op::Put(k, v) => {
            map.insert(k.clone(), v.clone());
            Obs::Done
        }
        Op::Delete(k) => Obs::Existed(map.remove(k).is_some()),
        Op::Get(k) => Obs::Value(map.get(k).cloned()),
        Op::List(spec) => model_list(map, spec),
        Op::DeleteAll => {
            map.clear();
            Obs::Done
        }
        Op::Sync => Obs::Done,
        Op::Txn(ops, fail) => {
            let mut scratch = map.clone();
            let inner = ops.iter().map(|op| model_apply(&mut scratch, op)).collect();
            if !fail {
                *map = scratch;
            }
            Obs::Txn(inner, !fail)
        }
    }
}

// ---------------------------------------------------------- input bytes --

/// Reads fuzz bytes as small choices; past the end everything is zero.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((first, rest)) => {
                self.0 = rest;
                *first
            }
            None => 0,
        }
    }

    /// A key of 0 to 2 characters from a small alphabet (so operations
    /// collide), multi-byte and boundary characters included.
    fn key(&mut self) -> String {
        const ALPHABET: [char; 5] = ['a', 'b', 'z', 'é', '\u{10ffff}'];
        let len = usize::from(self.byte() % 3);
        (0..len)
            .map(|_| ALPHABET[usize::from(self.byte()) % ALPHABET.len()])
            .collect()
    }

    fn value(&mut self) -> Vec<u8> {
        let len = usize::from(self.byte() % 8);
        (0..len).map(|_| self.byte()).collect()
    }

    fn list(&mut self) -> ListOptionsSpec {
        let flags = self.byte();
        let opt = |bit: u8, this: &mut Self| (flags & bit != 0).then(|| this.key());
        ListOptionsSpec {
            start: opt(1, self),
            start_after: opt(2, self),
            end: opt(4, self),
            prefix: opt(8, self),
            reverse: flags & 16 != 0,
            limit: (flags & 32 != 0).then(|| usize::from(self.byte() % 5)),
        }
    }

    /// An operation that may run inside a transaction.
    fn simple_op(&mut self) -> Op {
        match self.byte() % 5 {
            0 | 1 => Op::Put(self.key(), self.value()),
            2 => Op::Delete(self.key()),
            3 => Op::Get(self.key()),
            _ => Op::List(self.list()),
        }
    }
}

/// Most events per input, and operations per event: enough to reach
/// interesting states, few enough to keep each run fast.
const MAX_EVENTS: usize = 16;
const MAX_OPS: usize = 16;

/// Storage operation sequences, one event per chunk, on a real store and
/// on a `BTreeMap`: every observation must match.
pub fn storage_ops(h: &Harness, data: &[u8]) {
    let mut input = Bytes(data);
    // Start from an empty object whatever the previous input left.
    assert_eq!(h.run(vec![Op::DeleteAll]), vec![Obs::Done]);
    let mut model = Map::new();
    for _ in 0..MAX_EVENTS {
        if input.is_empty() {
            break;
        }
        let mut event = Vec::new();
        while event.len() < MAX_OPS && !input.is_empty() {
            let op = match input.byte() % 10 {
                0..=4 => input.simple_op(),
                5 => Op::DeleteAll,
                6 => Op::Sync,
                7 => {
                    let n = usize::from(input.byte() % 4);
                    let ops = (0..n).map(|_| input.simple_op()).collect();
                    Op::Txn(ops, input.byte() % 2 == 1)
                }
                8 => Op::List(input.list()),
                _ => break, // end of this event
            };
            event.push(op);
        }
        let expected: Vec<Obs> = event.iter().map(|op| model_apply(&mut model, op)).collect();
        let got = h.run(event.clone());
        assert_eq!(got, expected, "event {event:?}");
    }
    // What survived the events is what a fresh read sees.
    let everything = Op::List(ListOptionsSpec::default());
    assert_eq!(
        h.run(vec![everything.clone()]),
        vec![model_apply(&mut model, &everything)]
    );
}

/// `list` with arbitrary keys and bounds (any Unicode, any length up to a
/// small cap) against the model.
///
/// Input: NUL-separated UTF-8 (lossy): the first field's first byte holds
/// flags (which bounds are present, reverse, limit), the next fields the
/// present bounds in order (start, start_after, end, prefix), the rest the
/// keys to store.
pub fn list_options(h: &Harness, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let flags = fields.next().and_then(|f| f.bytes().next()).unwrap_or(0);
    let mut field =
        |bit: u8| (flags & bit != 0).then(|| truncate(fields.next().unwrap_or_default(), 64));
    let spec = ListOptionsSpec {
        start: field(1),
        start_after: field(2),
        end: field(4),
        prefix: field(8),
        reverse: flags & 16 != 0,
        limit: (flags & 32 != 0).then_some(usize::from(flags >> 6)),
    };
    let mut event = vec![Op::DeleteAll];
    event.extend(
        fields
            .take(32)
            .enumerate()
            .map(|(n, key)| Op::Put(truncate(key, 64), vec![n as u8])),
    );
    event.push(Op::List(spec.clone()));
    // The same list again after the commit, read from the store.
    let mut model = Map::new();
    let expected: Vec<Obs> = event.iter().map(|op| model_apply(&mut model, op)).collect();
    assert_eq!(h.run(event), expected, "{spec:?}");
    assert_eq!(
        h.run(vec![Op::List(spec.clone())]),
        vec![model_list(&model, &spec)],
        "{spec:?} after the commit"
    );
}

/// The first `max` bytes of `s`, cut back to a character boundary.
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Object ids: `id_from_string` accepts exactly the ids the namespace
/// minted (either case), and nothing else.
pub fn object_id(h: &Harness, data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let is_hex64 = text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
    match h.subjects.id_from_string(text) {
        Ok(id) => {
            assert!(is_hex64, "only 64 hex digits parse: {text:?}");
            assert_eq!(id.to_hex(), text.to_ascii_lowercase());
        }
        Err(error) => assert!(
            matches!(error, Error::Id(_)),
            "a bad id is an id error: {error:?}"
        ),
    }
    // An id minted from the input as a name parses back, in either case,
    // and changing any one digit of it is refused.
    let minted = h.subjects.id_from_name(text);
    let hex = minted.to_hex();
    for shown in [hex.clone(), hex.to_ascii_uppercase()] {
        let parsed = h.subjects.id_from_string(&shown).expect("minted ids parse");
        assert_eq!(parsed.as_bytes(), minted.as_bytes());
    }
    let at = data.len() % hex.len();
    let mut forged = hex.into_bytes();
    forged[at] = if forged[at] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).expect("still ASCII");
    assert!(
        h.subjects.id_from_string(&forged).is_err(),
        "a changed digit is refused: {forged}"
    );
}
