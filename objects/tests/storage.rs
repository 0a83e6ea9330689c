//! Storage conformance through objects and stubs on a real LMDB:
//! statements 1, 2 and 5 to 9 of `do-api.md` §7 (coalescing, the output
//! gate, read-your-writes, `list`, limits, `delete` results, transactions),
//! plus `sync`, restarts, the catalog behind `stored_ids`, typed and raw
//! values, a full store, backups and the data-dir lock.
//!
//! Every test drives a `Kv` object with a batch of [`Op`]s per call: one
//! call is one event, so the ops of a call share one overlay and commit
//! together when the event ends. The ops, their observations ([`Obs`]) and
//! the interpreter that runs them are `objects::testing::storage_model`,
//! the same the model test and the fuzz targets use.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use objects::BoxError;
use objects::testing::storage_model::{Exported, Interpreter, Obs, Op, Pause, Point};
use objects::{
    Context, Error, ListOptions, MAX_KEYS_PER_CALL, MAX_VALUE_BYTES, Namespace, Object, Result,
    Runtime, RuntimeOptions, StorageError, StoreOptions,
};

fn pt(x: i64) -> Point {
    Point::new(x)
}

#[derive(Default)]
struct Probe {
    constructed: AtomicUsize,
    /// Where `Op::Block` waits.
    pause: Arc<Pause>,
    /// Every observation of every event, including events whose reply is
    /// lost.
    trace: Mutex<Vec<Obs>>,
}

impl Probe {
    fn constructed(&self) -> usize {
        self.constructed.load(Ordering::SeqCst)
    }

    fn take_trace(&self) -> Vec<Obs> {
        std::mem::take(&mut *self.trace.lock().expect("trace lock"))
    }
}

/// Runs the ops of a call, one event, with the shared interpreter.
struct Kv {
    interpreter: Interpreter,
    env: Arc<Probe>,
}

impl Object for Kv {
    type Env = Probe;
    type Call = Vec<Op>;
    type Reply = Vec<Obs>;

    async fn new(_ctx: &mut Context, env: Arc<Probe>) -> Result<Self, BoxError> {
        env.constructed.fetch_add(1, Ordering::SeqCst);
        Ok(Kv {
            interpreter: Interpreter::new(env.pause.clone()),
            env,
        })
    }

    async fn call(&mut self, ctx: &mut Context, ops: Vec<Op>) -> Result<Vec<Obs>, BoxError> {
        let mut outs = Vec::new();
        for op in &ops {
            let o = self.interpreter.run(ctx.storage(), op).await?;
            self.env.trace.lock().expect("trace lock").push(o.clone());
            outs.push(o);
        }
        Ok(outs)
    }
}

/// A runtime with one namespace, `kv`, of `Kv` objects.
struct Fixture {
    rt: Runtime,
    kv: Namespace<Kv>,
}

impl Fixture {
    fn open(dir: &Path) -> Fixture {
        Fixture::with(dir, RuntimeOptions::default())
    }

    fn with(dir: &Path, options: RuntimeOptions) -> Fixture {
        let rt = Runtime::builder()
            .data_dir(dir)
            .options(options)
            .open()
            .expect("open runtime");
        let kv = rt
            .namespace::<Kv>("kv", Probe::default())
            .expect("namespace");
        Fixture { rt, kv }
    }

    fn probe(&self) -> &Probe {
        self.kv.env()
    }

    async fn try_run(&self, name: &str, ops: Vec<Op>) -> Result<Vec<Obs>> {
        self.kv.get_by_name(name).call(ops).await
    }

    async fn run(&self, name: &str, ops: Vec<Op>) -> Vec<Obs> {
        self.try_run(name, ops)
            .await
            .unwrap_or_else(|e| panic!("call to {name} failed: {e}"))
    }

    /// Shuts down and drops every handle, so the dir can be opened again.
    async fn close(self) {
        self.rt.shutdown().await;
    }

    async fn reopen(self, dir: &Path) -> Fixture {
        let options = self.rt.options().clone();
        self.close().await;
        Fixture::with(dir, options)
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn put(k: &str, x: i64) -> Op {
    Op::Put(k.into(), pt(x))
}
fn put_bytes(k: &str, v: &[u8]) -> Op {
    Op::PutBytes(k.into(), v.to_vec())
}
fn get(k: &str) -> Op {
    Op::Get(k.into())
}
fn get_bytes(k: &str) -> Op {
    Op::GetBytes(k.into())
}
fn del(k: &str) -> Op {
    Op::Delete(k.into())
}
fn list(o: &ListOptions) -> Op {
    Op::List(o.into())
}
fn list_bytes(o: &ListOptions) -> Op {
    Op::ListBytes(o.into())
}
fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_string()).collect()
}
fn point(x: i64) -> Obs {
    Obs::Point(Some(pt(x)))
}
const NONE: Obs = Obs::Point(None);

fn is_failed(o: &Obs, want: &str) -> bool {
    matches!(o, Obs::Failed { kind, .. } if kind == want)
}

// Statement 5: a get right after a put in the same event sees it; deletes
// and delete_all hide; list merges the overlay with committed data.
#[tokio::test]
async fn an_event_reads_its_own_writes() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    f.run("o", vec![put("a", 1), put("b", 2), put("x", 9)])
        .await;
    let all = ListOptions::new();
    let outs = f
        .run(
            "o",
            vec![
                get("a"),
                put("a", 10),
                get("a"),
                get("c"),
                put("c", 3),
                get("c"),
                del("b"),
                get("b"),
                list(&all),
                put("b", 20),
                get("b"),
                put_bytes("raw", b"r1"),
                get_bytes("raw"),
                list(&ListOptions::new().end("r")),
                Op::GetMany(strings(&["a", "b", "c", "x", "nope"])),
                Op::DeleteAll,
                get("a"),
                get("x"),
                get_bytes("raw"),
                list_bytes(&all),
                put("d", 4),
                get("d"),
                list(&all),
                Op::GetMany(strings(&["a", "d"])),
            ],
        )
        .await;
    let e = |pairs: &[(&str, i64)]| {
        Obs::Entries(
            pairs
                .iter()
                .map(|(k, x)| ((*k).to_string(), pt(*x)))
                .collect(),
        )
    };
    assert_eq!(
        outs,
        vec![
            point(1),
            Obs::Done,
            point(10),
            NONE,
            Obs::Done,
            point(3),
            Obs::Existed(true),
            NONE,
            e(&[("a", 10), ("c", 3), ("x", 9)]),
            Obs::Done,
            point(20),
            Obs::Done,
            Obs::Bytes(Some(b"r1".to_vec())),
            e(&[("a", 10), ("b", 20), ("c", 3)]),
            Obs::Points(
                [("a", 10), ("b", 20), ("c", 3), ("x", 9)]
                    .into_iter()
                    .map(|(k, x)| (k.to_string(), pt(x)))
                    .collect()
            ),
            Obs::Done,
            NONE,
            NONE,
            Obs::Bytes(None),
            Obs::ByteEntries(vec![]),
            Obs::Done,
            point(4),
            e(&[("d", 4)]),
            Obs::Points([("d".to_string(), pt(4))].into()),
        ]
    );
    // What committed is what the event saw last.
    let check = vec![get("a"), get("b"), get("c"), get("x"), list(&all)];
    let want = vec![NONE, NONE, NONE, NONE, e(&[("d", 4)])];
    assert_eq!(f.run("o", check.clone()).await, want);
    let f = f.reopen(dir.path()).await;
    assert_eq!(f.run("o", check).await, want);
    f.close().await;
}

/// Keys in ascending UTF-8 byte order: "z" (0x7a) sorts before "é" (0xc3
/// 0xa9), which sorts before "😀" (0xf0 ...).
const KEYS: [&str; 11] = ["a", "aa", "ab", "b", "ba", "bb", "c", "z", "é", "éa", "😀"];
/// Keys that sit between the ones above; they exist committed or in the
/// overlay but are deleted, so they must never show.
const GHOSTS: [&str; 6] = ["a0", "b0", "c0", "z0", "é0", "😀0"];

/// Every list case with the keys it must return, written out by hand from
/// the rules of do-api.md §2.
fn list_cases() -> Vec<(ListOptions, Vec<&'static str>)> {
    let n = ListOptions::new;
    let all = KEYS.to_vec();
    let mut rev = all.clone();
    rev.reverse();
    vec![
        (n(), all.clone()),
        (n().prefix(""), all.clone()),
        (n().reverse(true), rev),
        (
            n().start("b"),
            vec!["b", "ba", "bb", "c", "z", "é", "éa", "😀"],
        ),
        (
            n().start_after("b"),
            vec!["ba", "bb", "c", "z", "é", "éa", "😀"],
        ),
        (n().start("b0"), vec!["ba", "bb", "c", "z", "é", "éa", "😀"]),
        (n().end("b"), vec!["a", "aa", "ab"]),
        (
            n().end("é"),
            vec!["a", "aa", "ab", "b", "ba", "bb", "c", "z"],
        ),
        (n().start("z"), vec!["z", "é", "éa", "😀"]),
        (n().start("é"), vec!["é", "éa", "😀"]),
        (n().start("aa").end("ba"), vec!["aa", "ab", "b"]),
        (n().start_after("aa").end("ba"), vec!["ab", "b"]),
        (n().start_after("b").end("ba"), vec![]),
        (n().start("c").end("c"), vec![]),
        (n().start("c").end("b"), vec![]),
        (n().start_after("c").end("c"), vec![]),
        (n().prefix("a"), vec!["a", "aa", "ab"]),
        (n().prefix("b").reverse(true), vec!["bb", "ba", "b"]),
        (n().prefix("é"), vec!["é", "éa"]),
        (n().prefix("\u{e9}a"), vec!["éa"]),
        (n().prefix("q"), vec![]),
        (n().prefix("a").start("ab"), vec!["ab"]),
        (n().prefix("a").end("aa"), vec!["a"]),
        (n().prefix("b").start("a"), vec!["b", "ba", "bb"]),
        (n().prefix("b").start_after("b"), vec!["ba", "bb"]),
        (n().prefix("b").end("z"), vec!["b", "ba", "bb"]),
        (n().prefix("b").end("a"), vec![]),
        (n().limit(1), vec!["a"]),
        (n().limit(2), vec!["a", "aa"]),
        (n().limit(100), all.clone()),
        (n().reverse(true).limit(2), vec!["😀", "éa"]),
        (n().start("b").reverse(true).limit(3), vec!["😀", "éa", "é"]),
        (n().end("b").reverse(true).limit(2), vec!["ab", "aa"]),
        (
            n().start("b").end("é").reverse(true),
            vec!["z", "c", "bb", "ba", "b"],
        ),
        (n().prefix("é").reverse(true).limit(1), vec!["éa"]),
        (n().start_after("a").limit(3), vec!["aa", "ab", "b"]),
        (n().prefix("a").limit(2), vec!["a", "aa"]),
    ]
}

/// Options that must be refused, whatever the data.
fn bad_list_options() -> Vec<ListOptions> {
    let n = ListOptions::new;
    vec![
        n().limit(0),
        n().prefix("a").limit(0),
        n().start("c").end("b").limit(0),
        n().start("a").start_after("b"),
        n().start("a").start_after("a").end("z"),
    ]
}

fn list_ops() -> Vec<Op> {
    let mut ops: Vec<Op> = list_cases().iter().map(|(o, _)| list_bytes(o)).collect();
    ops.extend(bad_list_options().iter().map(list_bytes));
    ops
}

fn check_lists(mode: &str, outs: &[Obs]) {
    let cases = list_cases();
    assert_eq!(outs.len(), cases.len() + bad_list_options().len(), "{mode}");
    for ((opts, want), got) in cases.iter().zip(outs) {
        let want = Obs::ByteEntries(
            want.iter()
                .map(|k| ((*k).to_string(), k.as_bytes().to_vec()))
                .collect(),
        );
        assert_eq!(got, &want, "{mode}: {opts:?}");
    }
    for (opts, got) in bad_list_options().iter().zip(&outs[cases.len()..]) {
        assert!(
            is_failed(got, "InvalidList"),
            "{mode}: {opts:?} gave {got:?}"
        );
    }
}

// Statement 6: list over committed data, over the overlay, over both mixed
// (with overwrites and tombstones), and after delete_all in the same event.
#[tokio::test]
async fn list_follows_the_cloudflare_rules() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    let value = |k: &str| put_bytes(k, k.as_bytes());
    let old = |k: &str| put_bytes(k, b"old");

    // Committed only.
    let mut setup: Vec<Op> = KEYS.iter().map(|k| value(k)).collect();
    f.run("committed", setup.clone()).await;
    check_lists("committed", &f.run("committed", list_ops()).await);

    // Overlay only: the puts and the lists in one event, ghosts put then
    // deleted in it too.
    setup.extend(GHOSTS.iter().map(|k| value(k)));
    setup.extend(GHOSTS.iter().map(|k| del(k)));
    let n = setup.len();
    setup.extend(list_ops());
    let outs = f.run("overlay", setup).await;
    check_lists("overlay", &outs[n..]);
    check_lists("overlay, committed", &f.run("overlay", list_ops()).await);

    // Mixed: even keys committed, odd keys in the overlay (half of them
    // overwriting a committed "old" value), ghosts committed and deleted in
    // the overlay, so tombstones fall inside every limit window.
    let mut first = Vec::new();
    let mut second = Vec::new();
    for (i, k) in KEYS.iter().enumerate() {
        if i % 2 == 0 {
            first.push(value(k));
        } else {
            if i % 4 == 1 {
                first.push(old(k));
            }
            second.push(value(k));
        }
    }
    first.extend(GHOSTS.iter().map(|k| value(k)));
    second.extend(GHOSTS.iter().map(|k| del(k)));
    f.run("mixed", first).await;
    let n = second.len();
    second.extend(list_ops());
    let outs = f.run("mixed", second).await;
    check_lists("mixed", &outs[n..]);
    check_lists("mixed, committed", &f.run("mixed", list_ops()).await);

    // delete_all hides committed data; later puts in the event show.
    let mut first: Vec<Op> = KEYS.iter().map(|k| old(k)).collect();
    first.extend(GHOSTS.iter().map(|k| value(k)));
    first.push(put_bytes("zzz-junk", b"junk"));
    f.run("cleared", first).await;
    let mut second = vec![Op::DeleteAll];
    second.extend(KEYS.iter().map(|k| value(k)));
    let n = second.len();
    second.extend(list_ops());
    let outs = f.run("cleared", second).await;
    check_lists("cleared", &outs[n..]);
    check_lists("cleared, committed", &f.run("cleared", list_ops()).await);

    // And all of it from disk after a restart.
    let f = f.reopen(dir.path()).await;
    for name in ["committed", "overlay", "mixed", "cleared"] {
        check_lists(&format!("{name}, reopened"), &f.run(name, list_ops()).await);
    }
    f.close().await;
}

// Statement 7: key, value and key-count limits.
#[tokio::test]
async fn keys_values_and_key_counts_have_limits() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());

    let long = "k".repeat(2049);
    let outs = f
        .run(
            "o",
            vec![
                put_bytes(&long, b"v"),
                get_bytes(&long),
                put(&long, 1),
                get(&long),
                del(&long),
                Op::GetMany(vec![long.clone()]),
                Op::DeleteMany(vec!["a".into(), long.clone()]),
                Op::PutMany(vec![("a".into(), pt(1)), (long.clone(), pt(2))]),
                get("a"),
            ],
        )
        .await;
    let Obs::KeyTooLarge { len: 2049, max } = outs[0] else {
        panic!("a 2,049-byte key must be refused: {:?}", outs[0]);
    };
    // 2,048 is promised where LMDB allows; LMDB's own limit minus the
    // 32-byte id prefix otherwise (1,950 with 4 KiB pages).
    assert!((1900..=2048).contains(&max), "key limit {max}");
    let too_large = Obs::KeyTooLarge { len: 2049, max };
    assert_eq!(
        outs[1..],
        [
            too_large.clone(),
            too_large.clone(),
            too_large.clone(),
            too_large.clone(),
            too_large.clone(),
            too_large.clone(),
            too_large,
            NONE,
        ]
    );

    // Lengths are bytes, not characters; the limit itself is accepted and
    // commits (LMDB takes the key with its id prefix).
    let wide = "é".repeat(1025);
    let at_max = "m".repeat(max);
    let over_max = "n".repeat(max + 1);
    let k1900 = "x".repeat(1900);
    let outs = f
        .run(
            "o",
            vec![
                put_bytes(&wide, b"w"),
                put_bytes(&at_max, b"edge"),
                put_bytes(&over_max, b"over"),
                put_bytes(&k1900, b"1900"),
            ],
        )
        .await;
    assert_eq!(
        outs,
        vec![
            Obs::KeyTooLarge { len: 2050, max },
            Obs::Done,
            Obs::KeyTooLarge { len: max + 1, max },
            Obs::Done,
        ]
    );

    // Values: 128 KiB is accepted, one byte more is not (raw and typed).
    assert_eq!(MAX_VALUE_BYTES, 128 * 1024);
    let exact = vec![7u8; MAX_VALUE_BYTES];
    let over = vec![7u8; MAX_VALUE_BYTES + 1];
    let json_overhead = serde_json::to_vec(&Point {
        x: 0,
        label: String::new(),
    })
    .expect("json")
    .len();
    let sized = |n: usize| Point {
        x: 0,
        label: "L".repeat(n - json_overhead),
    };
    let outs = f
        .run(
            "o",
            vec![
                Op::PutBytes("big".into(), exact.clone()),
                Op::PutBytes("bigger".into(), over),
                Op::Put("typed".into(), sized(MAX_VALUE_BYTES)),
                Op::Put("typed+1".into(), sized(MAX_VALUE_BYTES + 1)),
                Op::PutMany(vec![
                    ("pm-a".into(), pt(1)),
                    ("pm-b".into(), sized(MAX_VALUE_BYTES + 1)),
                ]),
                get("pm-a"),
            ],
        )
        .await;
    let value_too_large = Obs::ValueTooLarge {
        len: MAX_VALUE_BYTES + 1,
        max: MAX_VALUE_BYTES,
    };
    assert_eq!(
        outs,
        vec![
            Obs::Done,
            value_too_large.clone(),
            Obs::Done,
            value_too_large.clone(),
            value_too_large,
            NONE,
        ]
    );

    // Key counts: 128 per call, 129 refused (and nothing done).
    assert_eq!(MAX_KEYS_PER_CALL, 128);
    let keys: Vec<String> = (0..129).map(|i| format!("n{i:03}")).collect();
    let entries = |n: usize| -> Vec<(String, Point)> {
        keys[..n]
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), pt(i as i64)))
            .collect()
    };
    let many = TooMany { len: 129, max: 128 };
    let outs = f
        .run(
            "o",
            vec![
                Op::PutMany(entries(129)),
                get("n000"),
                Op::PutMany(entries(128)),
                Op::GetMany(keys[..128].to_vec()),
                Op::GetMany(keys.clone()),
                Op::DeleteMany(keys.clone()),
                get("n000"),
            ],
        )
        .await;
    assert_eq!(outs[0], many.out());
    assert_eq!(outs[1], NONE);
    assert_eq!(outs[2], Obs::Done);
    assert_eq!(
        outs[3],
        Obs::Points(entries(128).into_iter().collect()),
        "get_many of 128 keys"
    );
    assert_eq!(outs[4..], [many.out(), many.out(), point(0)]);

    // What was accepted is on disk; what was refused is not.
    let f = f.reopen(dir.path()).await;
    let outs = f
        .run(
            "o",
            vec![
                get_bytes(&at_max),
                get_bytes(&k1900),
                get_bytes("big"),
                get_bytes("bigger"),
                get("typed"),
                get("typed+1"),
                get("pm-a"),
                Op::GetMany(keys[..128].to_vec()),
            ],
        )
        .await;
    assert_eq!(outs[0], Obs::Bytes(Some(b"edge".to_vec())));
    assert_eq!(outs[1], Obs::Bytes(Some(b"1900".to_vec())));
    assert!(
        outs[2] == Obs::Bytes(Some(exact)),
        "128 KiB value read back"
    );
    assert_eq!(outs[3], Obs::Bytes(None));
    assert!(
        outs[4] == Obs::Point(Some(sized(MAX_VALUE_BYTES))),
        "typed 128 KiB value"
    );
    assert_eq!(outs[5..7], [NONE, NONE]);
    assert_eq!(outs[7], Obs::Points(entries(128).into_iter().collect()));
    f.close().await;
}

struct TooMany {
    len: usize,
    max: usize,
}

impl TooMany {
    fn out(&self) -> Obs {
        Obs::TooManyKeys {
            len: self.len,
            max: self.max,
        }
    }
}

// Statement 8: delete says whether the key existed, committed or in the
// overlay; delete_many counts.
#[tokio::test]
async fn delete_reports_what_existed() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    f.run("o", vec![put("a", 1), put("c", 3), put("e", 5)])
        .await;
    let outs = f
        .run(
            "o",
            vec![
                del("a"),
                del("a"),
                del("missing"),
                put("b", 2),
                del("b"),
                del("b"),
                put("d", 4),
                Op::DeleteMany(strings(&["c", "d", "x", "c", "a"])),
                Op::DeleteMany(vec![]),
                Op::DeleteMany(strings(&["e", "e"])),
                put("a", 10),
                Op::DeleteAll,
                del("a"),
                put("f", 6),
                Op::DeleteMany(strings(&["f", "e"])),
            ],
        )
        .await;
    assert_eq!(
        outs,
        vec![
            Obs::Existed(true),
            Obs::Existed(false),
            Obs::Existed(false),
            Obs::Done,
            Obs::Existed(true),
            Obs::Existed(false),
            Obs::Done,
            Obs::Deleted(2),
            Obs::Deleted(0),
            Obs::Deleted(1),
            Obs::Done,
            Obs::Done,
            Obs::Existed(false),
            Obs::Done,
            Obs::Deleted(1),
        ]
    );
    let f = f.reopen(dir.path()).await;
    assert_eq!(
        f.run("o", vec![list(&ListOptions::new())]).await,
        vec![Obs::Entries(vec![])]
    );
    f.close().await;
}

// Statement 9: a closure error rolls back the transaction's writes, is
// returned, and does not reset the object.
#[tokio::test]
async fn a_failed_transaction_rolls_back_without_resetting_the_object() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    assert_eq!(
        f.run("o", vec![put("a", 1), Op::Bump]).await,
        vec![Obs::Done, Obs::Bumped(1)]
    );
    let outs = f
        .run(
            "o",
            vec![
                put("before", 2),
                Op::Txn {
                    ops: vec![
                        put("a", 10),
                        put("in", 3),
                        del("before"),
                        get("a"),
                        list(&ListOptions::new()),
                    ],
                    fail: true,
                },
                get("a"),
                get("in"),
                get("before"),
                Op::Bump,
                put("after", 4),
            ],
        )
        .await;
    let Obs::Txn(inner, result) = &outs[1] else {
        panic!("{:?}", outs[1]);
    };
    assert_eq!(
        inner,
        &vec![
            Obs::Done,
            Obs::Done,
            Obs::Existed(true),
            point(10),
            Obs::Entries(vec![("a".into(), pt(10)), ("in".into(), pt(3))]),
        ],
        "the transaction reads its own writes"
    );
    assert!(
        matches!(&**result, Obs::Failed { kind, message }
            if kind == "App" && message.contains("rolled back on purpose")),
        "the closure's error is returned: {result:?}"
    );
    assert_eq!(
        outs[2..],
        [point(1), NONE, point(2), Obs::Bumped(2), Obs::Done]
    );
    // Same instance: its counter went on, the constructor ran once.
    assert_eq!(
        f.run("o", vec![Op::Bump, get("in"), get("before"), get("after")])
            .await,
        vec![Obs::Bumped(3), NONE, point(2), point(4)]
    );
    assert_eq!(f.probe().constructed(), 1);
    let f = f.reopen(dir.path()).await;
    assert_eq!(
        f.run("o", vec![get("a"), get("in"), get("before"), get("after")])
            .await,
        vec![point(1), NONE, point(2), point(4)]
    );
    f.close().await;
}

// Statement 9: delete_all is refused inside a transaction.
#[tokio::test]
async fn delete_all_is_refused_inside_a_transaction() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    f.run("o", vec![put("a", 1)]).await;
    let outs = f
        .run(
            "o",
            vec![
                Op::TxnDeleteAll,
                Op::Txn {
                    ops: vec![put("b", 2), Op::DeleteAll, get("a")],
                    fail: false,
                },
                get("a"),
                get("b"),
            ],
        )
        .await;
    assert!(is_failed(&outs[0], "InTransaction"), "{:?}", outs[0]);
    let Obs::Txn(inner, result) = &outs[1] else {
        panic!("{:?}", outs[1]);
    };
    assert_eq!(inner[0], Obs::Done);
    assert!(is_failed(&inner[1], "InTransaction"), "{:?}", inner[1]);
    assert_eq!(inner[2], point(1), "the refused delete_all hid nothing");
    assert_eq!(**result, Obs::Done);
    assert_eq!(outs[2..], [point(1), point(2)]);
    let f = f.reopen(dir.path()).await;
    assert_eq!(
        f.run("o", vec![get("a"), get("b")]).await,
        vec![point(1), point(2)]
    );
    f.close().await;
}

/// Runs `ops` (which must contain one `Block`) on `name`, takes a backup
/// while the event is blocked, and returns the backup's dir.
async fn backup_while_blocked(f: &Fixture, name: &str, ops: Vec<Op>) -> tempfile::TempDir {
    let call = tokio::spawn(f.kv.get_by_name(name).call(ops));
    f.probe().pause.entered.notified().await;
    let copy = tempdir();
    f.rt.backup(&copy.path().join("store")).expect("backup");
    f.probe().pause.release.notify_one();
    call.await.expect("join").expect("blocked call");
    copy
}

// Statement 9 and §2: a successful transaction's writes (and the event's
// earlier writes) are durable when it returns.
#[tokio::test]
async fn a_successful_transaction_is_durable_when_it_returns() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    // The event fails after the transaction: what the transaction committed
    // stays, what came after it goes.
    let err = f
        .try_run(
            "o",
            vec![
                put("before", 1),
                Op::Txn {
                    ops: vec![put("in", 2)],
                    fail: false,
                },
                put("after", 3),
                Op::Fail,
            ],
        )
        .await
        .expect_err("the event fails");
    assert!(err.is_reset(), "{err}");
    assert_eq!(
        f.probe().take_trace()[1],
        Obs::Txn(vec![Obs::Done], Box::new(Obs::Done))
    );
    assert_eq!(
        f.run("o", vec![get("before"), get("in"), get("after")])
            .await,
        vec![point(1), point(2), NONE]
    );

    // While the event is still running after the transaction, a backup (a
    // consistent snapshot of what is committed) holds the transaction's
    // writes but not the later ones.
    let copy = backup_while_blocked(
        &f,
        "o",
        vec![
            Op::Txn {
                ops: vec![put("in2", 4)],
                fail: false,
            },
            put("after2", 5),
            Op::Block,
        ],
    )
    .await;
    let c = Fixture::open(&copy.path().join("store"));
    assert_eq!(
        c.run("o", vec![get("in"), get("in2"), get("after2")]).await,
        vec![point(2), point(4), NONE]
    );
    c.close().await;
    assert_eq!(f.run("o", vec![get("after2")]).await, vec![point(5)]);
    f.close().await;
}

// Statement 2: a failed commit never lets the reply out as a success; the
// caller gets a reset, the constructor runs again, the writes are gone.
#[tokio::test]
async fn a_failed_commit_withholds_the_reply_and_resets_the_object() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    assert_eq!(
        f.run("o", vec![put("kept", 1), Op::Bump]).await,
        vec![Obs::Done, Obs::Bumped(1)]
    );
    f.rt.inject_commit_failures(1);
    // An event without writes commits nothing, so the failure waits.
    assert_eq!(
        f.run("o", vec![get("kept"), Op::Bump]).await,
        vec![point(1), Obs::Bumped(2)]
    );
    f.probe().take_trace();
    let err = f
        .try_run("o", vec![put("lost", 2), put("kept", 3), Op::Bump])
        .await
        .expect_err("the reply must not arrive as a success");
    assert!(err.is_reset(), "{err}");
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(
        f.probe().take_trace(),
        vec![Obs::Done, Obs::Done, Obs::Bumped(3)],
        "the handler itself ran to its end"
    );
    // A fresh instance, without the failed event's writes.
    assert_eq!(
        f.run("o", vec![Op::Bump, get("lost"), get("kept")]).await,
        vec![Obs::Bumped(1), NONE, point(1)]
    );
    assert_eq!(f.probe().constructed(), 2);
    // Later events work and persist.
    f.run("o", vec![put("after", 4)]).await;
    let f = f.reopen(dir.path()).await;
    assert_eq!(
        f.run("o", vec![get("lost"), get("kept"), get("after")])
            .await,
        vec![NONE, point(1), point(4)]
    );
    f.close().await;
}

// Statement 1, in process: the writes of one event land together; an event
// that fails (error or panic) after writing leaves none of them.
#[tokio::test]
async fn an_events_writes_are_all_or_nothing_across_restarts() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    f.run("o", vec![put("gone", 0)]).await;
    let mut ops: Vec<Op> = (0..20).map(|i| put(&format!("k{i:02}"), i)).collect();
    ops.push(Op::PutMany(
        (20..30).map(|i| (format!("k{i:02}"), pt(i))).collect(),
    ));
    ops.push(put_bytes("raw", b"bytes"));
    ops.push(del("gone"));
    ops.push(put("k00", 100));
    f.run("o", ops).await;
    for failure in [Op::Fail, Op::Panic] {
        let err = f
            .try_run(
                "o",
                vec![
                    put("f1", 1),
                    put("k00", 999),
                    del("k01"),
                    Op::DeleteAll,
                    put("f2", 2),
                    failure,
                ],
            )
            .await
            .expect_err("the event fails");
        assert!(err.is_reset(), "{err}");
    }
    let want: Vec<(String, i64)> = std::iter::once(("k00".to_string(), 100))
        .chain((1..30).map(|i| (format!("k{i:02}"), i)))
        .collect();
    let check = || {
        vec![
            list(&ListOptions::new().prefix("k")),
            get_bytes("raw"),
            get("gone"),
            get("f1"),
            get("f2"),
        ]
    };
    let expected = vec![
        Obs::Entries(want.iter().map(|(k, x)| (k.clone(), pt(*x))).collect()),
        Obs::Bytes(Some(b"bytes".to_vec())),
        NONE,
        NONE,
        NONE,
    ];
    assert_eq!(f.run("o", check()).await, expected);
    let f = f.reopen(dir.path()).await;
    assert_eq!(f.run("o", check()).await, expected);
    f.close().await;
}

// sync(): returns once the writes so far are durable; nothing pending means
// nothing to do.
#[tokio::test]
async fn sync_returns_once_the_writes_are_durable() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    assert_eq!(f.run("o", vec![Op::Sync]).await, vec![Obs::Done]);
    let copy = backup_while_blocked(
        &f,
        "o",
        vec![
            put("a", 1),
            put("b", 2),
            Op::Sync,
            Op::Sync,
            put("c", 3),
            Op::Block,
        ],
    )
    .await;
    let c = Fixture::open(&copy.path().join("store"));
    assert_eq!(
        c.run("o", vec![get("a"), get("b"), get("c")]).await,
        vec![point(1), point(2), NONE]
    );
    c.close().await;
    assert_eq!(
        f.run("o", vec![get("a"), get("b"), get("c")]).await,
        vec![point(1), point(2), point(3)]
    );
    f.close().await;
}

// sync() with a failing commit: an error, and the object is reset when the
// event ends even though the handler swallowed the error.
#[tokio::test]
async fn a_failed_sync_resets_the_object_even_if_the_handler_ignores_it() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    f.run("o", vec![put("base", 1), Op::Bump]).await;
    f.rt.inject_commit_failures(1);
    // With nothing pending, sync commits nothing and cannot fail.
    assert_eq!(f.run("o", vec![Op::Sync]).await, vec![Obs::Done]);
    f.probe().take_trace();
    let err = f
        .try_run(
            "o",
            vec![
                put("a", 2),
                Op::Sync,
                put("b", 3),
                Op::Sync,
                Op::Txn {
                    ops: vec![put("t", 4)],
                    fail: false,
                },
                Op::Bump,
            ],
        )
        .await
        .expect_err("the event must not succeed");
    assert!(err.is_reset(), "{err}");
    let trace = f.probe().take_trace();
    assert_eq!(trace.len(), 6, "{trace:?}");
    assert!(is_failed(&trace[1], "CommitFailed"), "{:?}", trace[1]);
    assert!(
        is_failed(&trace[3], "CommitFailed"),
        "a later sync fails too: {:?}",
        trace[3]
    );
    let Obs::Txn(_, result) = &trace[4] else {
        panic!("{:?}", trace[4]);
    };
    assert!(is_failed(result, "CommitFailed"), "{result:?}");
    assert_eq!(trace[5], Obs::Bumped(2), "the handler carried on");
    // Reset: a new instance, none of the event's writes.
    assert_eq!(
        f.run(
            "o",
            vec![Op::Bump, get("base"), get("a"), get("b"), get("t")]
        )
        .await,
        vec![Obs::Bumped(1), point(1), NONE, NONE, NONE]
    );
    assert_eq!(f.probe().constructed(), 2);
    let f = f.reopen(dir.path()).await;
    assert_eq!(
        f.run("o", vec![get("base"), get("a"), get("b"), get("t")])
            .await,
        vec![point(1), NONE, NONE, NONE]
    );
    f.close().await;
}

/// (hex, name) of each id, sorted.
fn listing(ns: &Namespace<Kv>) -> BTreeSet<(String, Option<String>)> {
    ns.stored_ids()
        .expect("stored_ids")
        .into_iter()
        .map(|id| (id.to_hex(), id.name().map(str::to_string)))
        .collect()
}

// Data survives restarts; stored_ids lists the objects that stored data,
// with names, and forgets an object after delete_all.
#[tokio::test]
async fn stored_ids_lists_objects_with_data() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    f.run("alpha", vec![put("a", 1)]).await;
    f.run("beta", vec![put_bytes("b", b"2")]).await;
    let unique = f.kv.new_unique_id().expect("unique id");
    f.kv.get(&unique)
        .call(vec![put("u", 3)])
        .await
        .expect("unique");
    // No data: only reads, only deletes, a failed event, a rolled-back
    // transaction.
    f.run("reader", vec![get("a")]).await;
    f.run("deleter", vec![del("a")]).await;
    f.try_run("failed", vec![put("a", 1), Op::Fail])
        .await
        .expect_err("fails");
    f.run(
        "rolled-back",
        vec![Op::Txn {
            ops: vec![put("a", 1)],
            fail: true,
        }],
    )
    .await;
    let other = f.rt.namespace::<Kv>("other", Probe::default()).expect("ns");
    other
        .get_by_name("alpha")
        .call(vec![put("o", 1)])
        .await
        .expect("other");

    let alpha = f.kv.id_from_name("alpha").to_hex();
    let beta = f.kv.id_from_name("beta").to_hex();
    let all: BTreeSet<_> = [
        (alpha.clone(), Some("alpha".to_string())),
        (beta.clone(), Some("beta".to_string())),
        (unique.to_hex(), None),
    ]
    .into();
    assert_eq!(listing(&f.kv), all);
    let other_all: BTreeSet<_> =
        [(other.id_from_name("alpha").to_hex(), Some("alpha".into()))].into();
    assert_eq!(listing(&other), other_all);
    drop(other);

    let f = f.reopen(dir.path()).await;
    let other = f.rt.namespace::<Kv>("other", Probe::default()).expect("ns");
    assert_eq!(listing(&f.kv), all);
    assert_eq!(listing(&other), other_all);
    drop(other);
    // The name comes back from the catalog for a parsed id.
    assert_eq!(
        f.kv.id_from_string(&alpha).expect("parse").name(),
        Some("alpha")
    );
    assert_eq!(
        f.kv.id_from_string(&unique.to_hex()).expect("parse").name(),
        None
    );
    let u = f.kv.id_from_string(&unique.to_hex()).expect("parse");
    assert_eq!(
        f.kv.get(&u).call(vec![get("u")]).await.expect("unique"),
        vec![point(3)]
    );
    assert_eq!(f.run("alpha", vec![get("a")]).await, vec![point(1)]);

    // delete_all takes an object off the listing; data written after it in
    // the same event keeps it on; writing again brings it back.
    f.run("alpha", vec![Op::DeleteAll]).await;
    f.run("beta", vec![Op::DeleteAll, put("b2", 2)]).await;
    let without_alpha: BTreeSet<_> = all.iter().filter(|(h, _)| *h != alpha).cloned().collect();
    assert_eq!(listing(&f.kv), without_alpha);
    let f = f.reopen(dir.path()).await;
    assert_eq!(listing(&f.kv), without_alpha);
    assert_eq!(
        f.run("beta", vec![list(&ListOptions::new())]).await,
        vec![Obs::Entries(vec![("b2".into(), pt(2))])],
        "delete_all removed the raw value, the put after it stayed"
    );
    f.run("alpha", vec![put("a", 5)]).await;
    assert_eq!(listing(&f.kv), all);
    let f = f.reopen(dir.path()).await;
    assert_eq!(listing(&f.kv), all);
    assert_eq!(f.run("alpha", vec![get("a")]).await, vec![point(5)]);
    f.close().await;
}

// Typed values and raw bytes side by side; reading bytes (or another type)
// as `T` is a Codec error, not a panic.
#[tokio::test]
async fn typed_values_and_raw_bytes() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    let raw = vec![0u8, 159, 146, 150, 255];
    f.run(
        "o",
        vec![
            put("p", 1),
            Op::PutText("t".into(), "hello".into()),
            put_bytes("raw", &raw),
            put_bytes("empty", b""),
        ],
    )
    .await;
    check_typed(&f, "live", &raw).await;
    let f = f.reopen(dir.path()).await;
    check_typed(&f, "reopened", &raw).await;
    f.close().await;
}

async fn check_typed(f: &Fixture, pass: &str, raw: &[u8]) {
    let json_p = serde_json::to_vec(&pt(1)).expect("json");
    let outs = f
        .run(
            "o",
            vec![
                get("p"),
                Op::GetText("t".into()),
                get_bytes("raw"),
                get_bytes("empty"),
                get("raw"),
                get("empty"),
                get("t"),
                Op::GetText("p".into()),
                Op::GetMany(strings(&["p", "raw"])),
                list(&ListOptions::new()),
                list(&ListOptions::new().prefix("p")),
                get_bytes("p"),
                get_bytes("t"),
                list_bytes(&ListOptions::new().start("p")),
                Op::Export,
                Op::Bump,
            ],
        )
        .await;
    assert_eq!(outs[0], point(1), "{pass}");
    assert_eq!(outs[1], Obs::Text(Some("hello".into())), "{pass}");
    assert_eq!(outs[2], Obs::Bytes(Some(raw.to_vec())), "{pass}");
    assert_eq!(outs[3], Obs::Bytes(Some(vec![])), "{pass}");
    for (i, o) in outs[4..10].iter().enumerate() {
        assert!(is_failed(o, "Codec"), "{pass}: op {}: {o:?}", i + 4);
    }
    assert_eq!(outs[10], Obs::Entries(vec![("p".into(), pt(1))]), "{pass}");
    assert_eq!(
        outs[11],
        Obs::Bytes(Some(json_p.clone())),
        "{pass}: JSON text"
    );
    assert_eq!(outs[12], Obs::Bytes(Some(b"\"hello\"".to_vec())), "{pass}");
    assert_eq!(
        outs[13],
        Obs::ByteEntries(vec![
            ("p".into(), json_p),
            ("raw".into(), raw.to_vec()),
            ("t".into(), b"\"hello\"".to_vec()),
        ]),
        "{pass}"
    );
    assert_eq!(
        outs[14],
        Obs::Exported(vec![
            ("empty".into(), Exported::Bytes(vec![])),
            (
                "p".into(),
                Exported::Json(serde_json::json!({"x": 1, "label": "p1"}))
            ),
            ("raw".into(), Exported::Bytes(raw.to_vec())),
            ("t".into(), Exported::Json(serde_json::json!("hello"))),
        ]),
        "{pass}"
    );
    // Codec errors are plain errors: the instance lives on.
    assert_eq!(outs[15], Obs::Bumped(1), "{pass}");
    assert_eq!(f.probe().constructed(), 1, "{pass}");
}

/// A runtime on a 1 MiB store filled with 100 KiB values until a commit
/// fails; returns it, how many values fit, and the value.
async fn full_store(dir: &Path) -> (Fixture, usize, Vec<u8>) {
    let options =
        RuntimeOptions::default().with_store(StoreOptions::default().with_max_size(1 << 20));
    let f = Fixture::with(dir, options);
    let value = vec![0xab_u8; 100 * 1024];
    let mut stored = 0;
    let err = loop {
        assert!(stored < 64, "a 1 MiB store took {stored} values of 100 KiB");
        let key = format!("v{stored:02}");
        match f
            .try_run("big", vec![Op::PutBytes(key, value.clone())])
            .await
        {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
    };
    assert!(stored >= 2, "only {stored} values fit");
    assert!(err.is_reset(), "{err}");
    assert!(err.to_string().contains("storage full"), "{err}");
    (f, stored, value)
}

// A store at its size limit: the commit fails (the object resets with a
// "storage full" error), earlier data stays readable, the store reopens,
// and deleting data makes room again.
#[tokio::test]
async fn a_full_store_fails_the_commit_and_recovers_after_deletes() {
    let dir = tempdir();
    let (f, stored, value) = full_store(dir.path()).await;
    let reads = |n: usize| -> Vec<Op> { (0..=n).map(|i| get_bytes(&format!("v{i:02}"))).collect() };
    let expect = |n: usize| -> Vec<Obs> {
        (0..n)
            .map(|_| Obs::Bytes(Some(value.clone())))
            .chain([Obs::Bytes(None)])
            .collect()
    };
    assert!(
        f.run("big", reads(stored)).await == expect(stored),
        "data before the failure reads back"
    );
    // A small write still fits in what the big one could not use.
    assert_eq!(f.run("small", vec![put("s", 1)]).await, vec![Obs::Done]);

    let f = f.reopen(dir.path()).await;
    assert!(
        f.run("big", reads(stored)).await == expect(stored),
        "and after reopening"
    );
    assert_eq!(
        f.run("big", vec![del("v00"), del("v01")]).await,
        vec![Obs::Existed(true), Obs::Existed(true)]
    );
    // LMDB reuses pages freed by commit N from commit N + 2 on: one more
    // commit first (see `a_write_right_after_deletes_on_a_full_store_fits`).
    assert_eq!(f.run("small", vec![put("s", 2)]).await, vec![Obs::Done]);
    assert_eq!(
        f.run("big", vec![Op::PutBytes("again".into(), value.clone())])
            .await,
        vec![Obs::Done],
        "freed space is reused"
    );
    let f = f.reopen(dir.path()).await;
    let outs = f
        .run(
            "big",
            vec![get_bytes("again"), get_bytes("v00"), get_bytes("v02")],
        )
        .await;
    assert!(outs[0] == Obs::Bytes(Some(value.clone())));
    assert_eq!(outs[1], Obs::Bytes(None));
    assert!(outs[2] == Obs::Bytes(Some(value)));
    f.close().await;
}

// `StorageError::Full` says "free space with deletes". After deleting two
// 100 KiB values, a 100 KiB write should fit; it fails until some other
// commit has happened, however often it is retried.
#[tokio::test]
async fn a_write_right_after_deletes_on_a_full_store_fits() {
    let dir = tempdir();
    let (f, _, value) = full_store(dir.path()).await;
    assert_eq!(
        f.run("big", vec![del("v00"), del("v01")]).await,
        vec![Obs::Existed(true), Obs::Existed(true)]
    );
    let r = f
        .try_run("big", vec![Op::PutBytes("again".into(), value)])
        .await;
    assert!(r.is_ok(), "{r:?}");
    f.close().await;
}

// backup() while objects write: the copy opens as a store and holds one
// whole event of every object, no older than what was acknowledged before
// the backup started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_during_writes_is_consistent() {
    const WRITERS: usize = 4;
    const KEYS_PER_EVENT: usize = 10;
    let dir = tempdir();
    let copy_root = tempdir();
    let copy = copy_root.path().join("copy");
    let f = Fixture::open(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::channel(WRITERS);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let kv = f.kv.clone();
        let tx = tx.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let stub = kv.get_by_name(&format!("w{w}"));
            let mut i: i64 = 0;
            // Bounded by a count in case the test fails before `stop`.
            while i < 20_000 && (i < 20 || !stop.load(Ordering::SeqCst)) {
                let ops = (0..KEYS_PER_EVENT)
                    .map(|j| put(&format!("k{j}"), i))
                    .collect();
                stub.call(ops).await.expect("write");
                if i == 9 {
                    tx.send(()).await.expect("signal");
                }
                i += 1;
            }
            i - 1
        }));
    }
    drop(tx);
    for _ in 0..WRITERS {
        rx.recv()
            .await
            .expect("every writer acknowledged 10 events");
    }
    let rt = f.rt.clone();
    let dest = copy.clone();
    tokio::task::spawn_blocking(move || rt.backup(&dest))
        .await
        .expect("join")
        .expect("backup");
    stop.store(true, Ordering::SeqCst);
    let mut last = Vec::new();
    for w in writers {
        last.push(w.await.expect("writer"));
    }
    let err =
        f.rt.backup(&copy)
            .expect_err("a second backup into the same place");
    assert!(
        matches!(err, Error::Storage(StorageError::BackupTargetExists(_))),
        "{err}"
    );

    let keys: Vec<String> = (0..KEYS_PER_EVENT).map(|j| format!("k{j}")).collect();
    let one_event = |outs: Vec<Obs>| -> i64 {
        let [Obs::Points(m)] = &outs[..] else {
            panic!("{outs:?}");
        };
        assert_eq!(m.len(), KEYS_PER_EVENT, "{m:?}");
        let xs: BTreeSet<i64> = m.values().map(|p| p.x).collect();
        assert_eq!(xs.len(), 1, "keys from different events: {xs:?}");
        xs.into_iter().next().expect("one value")
    };
    let c = Fixture::open(&copy);
    for (w, last) in last.iter().enumerate() {
        let name = format!("w{w}");
        let live = one_event(f.run(&name, vec![Op::GetMany(keys.clone())]).await);
        assert_eq!(live, *last);
        let backed_up = one_event(c.run(&name, vec![Op::GetMany(keys.clone())]).await);
        assert!(
            (9..=*last).contains(&backed_up),
            "{name}: backup holds event {backed_up}, acknowledged 9 before it, last {last}"
        );
    }
    c.close().await;
    f.close().await;
}

// A data dir can be open in one runtime at a time.
#[tokio::test]
async fn a_data_dir_in_use_is_refused() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    f.run("o", vec![put("a", 1)]).await;
    let err = Runtime::builder()
        .data_dir(dir.path())
        .open()
        .expect_err("a second runtime on the same dir");
    assert!(
        matches!(&err, Error::Storage(StorageError::DataDirInUse(p)) if p == dir.path()),
        "{err:?}"
    );
    assert!(err.to_string().contains("in use"), "{err}");
    assert_eq!(
        f.run("o", vec![get("a")]).await,
        vec![point(1)],
        "the first runtime is unharmed"
    );
    let f = f.reopen(dir.path()).await;
    assert_eq!(f.run("o", vec![get("a")]).await, vec![point(1)]);
    f.close().await;
}

// Statement 2 within a commit group: events queued together run back to
// back and commit together. When a later event of the group fails, an
// earlier one must not be told "success" unless its writes are durable.
#[tokio::test]
async fn a_failing_event_does_not_lose_acknowledged_writes_of_its_commit_group() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    let stub = f.kv.get_by_name("o");
    // Both calls are queued before the object runs, so they share a group.
    let first = stub.call(vec![put("first", 1)]);
    let second = stub.call(vec![put("second", 2), Op::Fail]);
    let (first, second) = (first.await, second.await);
    assert!(second.expect_err("the second event fails").is_reset());
    let stored = f.run("o", vec![get("first"), get("second")]).await;
    assert_eq!(stored[1], NONE);
    match first {
        Ok(_) => assert_eq!(stored[0], point(1), "acknowledged, so it must be stored"),
        Err(e) => assert!(e.is_reset(), "{e}"),
    }
    drop(stub);
    f.close().await;
}

// The same, when the failing event's sync() failed first: that commit
// carried the earlier event's writes too.
#[tokio::test]
async fn a_failed_sync_in_a_failing_event_fails_its_whole_commit_group() {
    let dir = tempdir();
    let f = Fixture::open(dir.path());
    let stub = f.kv.get_by_name("o");
    f.rt.inject_commit_failures(1);
    let first = stub.call(vec![put("first", 1)]);
    let second = stub.call(vec![put("second", 2), Op::Sync, Op::Fail]);
    let (first, second) = (first.await, second.await);
    assert!(second.expect_err("the second event fails").is_reset());
    let stored = f.run("o", vec![get("first"), get("second")]).await;
    assert_eq!(stored[1], NONE);
    match first {
        Ok(_) => assert_eq!(stored[0], point(1), "acknowledged, so it must be stored"),
        Err(e) => assert!(e.is_reset(), "{e}"),
    }
    drop(stub);
    f.close().await;
}
