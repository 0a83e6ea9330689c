//! Fuzz bodies for the object runtime: id parsing, list options and
//! storage operation sequences, each checked against a model.
//!
//! `objects` has no pure entry point for these (id parsing needs the
//! namespace's key, lists need a store), so they run through a real
//! runtime on a temporary data dir, opened once per [`Harness`]. The
//! operations, the interpreter the object runs and the `BTreeMap` model
//! are `objects::testing::storage_model`, shared with the storage tests.

use std::sync::{Arc, OnceLock};

use objects::BoxError;
use objects::testing::storage_model::{Interpreter, ListSpec, Model, Obs, Op};
use objects::{Context, Error, Namespace, Object, Result, Runtime};

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
    /// Error messages are dropped (the model predicts kinds only).
    fn run(&self, event: Vec<Op>) -> Vec<Obs> {
        // Inside the runtime: a stub may start the object's task.
        let obs = self
            .tokio
            .block_on(async { self.subjects.get_by_name("subject").call(event).await })
            .expect("the subject's events never fail");
        kinds(obs)
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

/// The object under test: runs the operations of a call as one event.
#[derive(Debug)]
struct Subject {
    interpreter: Interpreter,
}

impl Object for Subject {
    type Env = ();
    type Call = Vec<Op>;
    type Reply = Vec<Obs>;

    async fn new(_ctx: &mut Context, _env: Arc<()>) -> Result<Self, BoxError> {
        Ok(Subject {
            interpreter: Interpreter::default(),
        })
    }

    async fn call(&mut self, ctx: &mut Context, ops: Vec<Op>) -> Result<Vec<Obs>, BoxError> {
        let mut out = Vec::with_capacity(ops.len());
        for op in &ops {
            out.push(self.interpreter.run(ctx.storage(), op).await?);
        }
        Ok(out)
    }
}

/// Runs one event on the model (each event commits alone, as the harness
/// awaits each call before the next) and returns what it should observe.
fn expect(model: &mut Model, event: &[Op]) -> Vec<Obs> {
    let mut expected = model.run(&[event.to_vec()]);
    let expected = expected.pop().expect("one event, one result");
    assert!(expected.ok, "the fuzz events never fail: {event:?}");
    expected.obs
}

/// Observations as the model gives them (error kinds without messages).
fn kinds(obs: Vec<Obs>) -> Vec<Obs> {
    obs.iter().map(Obs::without_messages).collect()
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

    fn list(&mut self) -> ListSpec {
        let flags = self.byte();
        let opt = |bit: u8, this: &mut Self| (flags & bit != 0).then(|| this.key());
        ListSpec {
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
            0 | 1 => Op::PutBytes(self.key(), self.value()),
            2 => Op::Delete(self.key()),
            3 => Op::GetBytes(self.key()),
            _ => Op::ListBytes(self.list()),
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
    let mut model = Model::new(1);
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
                    Op::Txn {
                        ops,
                        fail: input.byte() % 2 == 1,
                    }
                }
                8 => Op::ListBytes(input.list()),
                _ => break, // end of this event
            };
            event.push(op);
        }
        let expected = expect(&mut model, &event);
        let got = h.run(event.clone());
        assert_eq!(got, expected, "event {event:?}");
    }
    // What survived the events is what a fresh read sees.
    let everything = vec![Op::ListBytes(ListSpec::default())];
    assert_eq!(h.run(everything.clone()), expect(&mut model, &everything));
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
    let spec = ListSpec {
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
            .map(|(n, key)| Op::PutBytes(truncate(key, 64), vec![n as u8])),
    );
    event.push(Op::ListBytes(spec.clone()));
    let mut model = Model::new(1);
    let expected = expect(&mut model, &event);
    assert_eq!(h.run(event), expected, "{spec:?}");
    // The same list again after the commit, read from the store.
    let again = vec![Op::ListBytes(spec.clone())];
    assert_eq!(
        h.run(again.clone()),
        expect(&mut model, &again),
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
