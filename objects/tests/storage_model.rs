//! Model test: random sequences of storage operations (raw and typed,
//! single and many-key, lists, exports, transactions, `sync`) run against one
//! object on a real LMDB and against a `BTreeMap` model; every observation
//! must match.
//!
//! A step is one event (a batch of operations that ends with its commit or
//! a handler error), a pipeline of events queued before any runs (so they
//! share commit groups), an injected commit failure, or a restart (shut
//! the runtime down and reopen the dir). The object runs each event's ops
//! with `objects::testing::storage_model`'s interpreter; that module's
//! `Model` follows the documented rules: an event's writes commit when it ends, or earlier at `sync` and a
//! successful `transaction`; a failed transaction undoes only its own
//! writes; a handler error drops the event's uncommitted writes and resets
//! the instance; a failed commit resets the instance and fails every event
//! whose writes it carried.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use objects::BoxError;
use objects::testing::storage_model::{Interpreter, ListSpec, Model, Obs, Op, Point};
use objects::{Context, Namespace, Object, Result, Runtime, RuntimeOptions};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Events run back to back before one commit (kept small so pipelines
/// cross group boundaries).
const MAX_EVENTS_PER_COMMIT: usize = 3;

/// One event: its ops, ending with `Op::Fail` when the handler fails.
type Event = Vec<Op>;

#[derive(Debug, Clone)]
enum Step {
    /// Events queued together, then awaited in order.
    Events(Vec<Event>),
    /// Make the next `n` commits fail.
    Inject(u32),
    /// Shut down and reopen the data dir.
    Reopen,
}

/// What one event observed: whether it ran on a fresh instance, and each
/// op's observation up to the op that failed the handler.
type Observed = (bool, Vec<Obs>);

/// Each event's observations, in the order the events ran (also for
/// events whose reply is an error).
#[derive(Default)]
struct Trace(Mutex<Vec<Observed>>);

struct Subject {
    fresh: bool,
    interpreter: Interpreter,
    trace: Arc<Trace>,
}

impl Object for Subject {
    type Env = Trace;
    type Call = Event;
    type Reply = ();

    async fn new(_ctx: &mut Context, trace: Arc<Trace>) -> Result<Self, BoxError> {
        Ok(Subject {
            fresh: true,
            interpreter: Interpreter::default(),
            trace,
        })
    }

    async fn call(&mut self, ctx: &mut Context, ops: Event) -> Result<(), BoxError> {
        let fresh = std::mem::replace(&mut self.fresh, false);
        let mut obs = Vec::new();
        let mut result = Ok(());
        for op in &ops {
            match self.interpreter.run(ctx.storage(), op).await {
                Ok(o) => obs.push(o),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.trace.0.lock().expect("trace lock").push((fresh, obs));
        result
    }
}

// ------------------------------------------------------------- subject --

struct Live {
    rt: Runtime,
    ns: Namespace<Subject>,
}

impl Live {
    fn open(dir: &std::path::Path) -> Live {
        // Nothing here may be evicted or time out on a slow machine.
        let options = RuntimeOptions::default()
            .with_max_events_per_commit(MAX_EVENTS_PER_COMMIT)
            .with_idle_timeout(Duration::from_secs(3600))
            .with_call_timeout(Duration::from_secs(3600));
        let rt = Runtime::builder()
            .data_dir(dir)
            .options(options)
            .open()
            .expect("open runtime");
        let ns = rt
            .namespace::<Subject>("model", Trace::default())
            .expect("namespace");
        Live { rt, ns }
    }

    /// Queues every event before awaiting any, so they run back to back.
    async fn run(&self, events: &[Event]) -> (Vec<Observed>, Vec<Result<()>>) {
        let stub = self.ns.get_by_name("subject");
        let calls: Vec<_> = events.iter().map(|e| stub.call(e.clone())).collect();
        let mut replies = Vec::new();
        for c in calls {
            replies.push(c.await);
        }
        let trace = std::mem::take(&mut *self.ns.env().0.lock().expect("trace lock"));
        (trace, replies)
    }

    async fn close(self) {
        self.rt.shutdown().await;
    }
}

async fn check(steps: Vec<Step>) -> std::result::Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut live = Live::open(dir.path());
    let mut model = Model::new(MAX_EVENTS_PER_COMMIT);
    let everything: Event = vec![Op::ListBytes(ListSpec::default())];
    for (n, step) in steps.iter().chain([&Step::Reopen]).enumerate() {
        let events = match step {
            Step::Events(events) => events.clone(),
            Step::Inject(k) => {
                live.rt.inject_commit_failures(*k);
                model.inject_commit_failures(*k);
                continue;
            }
            Step::Reopen => {
                live.close().await;
                live = Live::open(dir.path());
                model.reopen();
                // Read everything back from disk.
                vec![everything.clone()]
            }
        };
        let (trace, replies) = live.run(&events).await;
        let expected = model.run(&events);
        prop_assert_eq!(trace.len(), events.len(), "step {}: every event ran", n);
        for (i, (want, ((fresh, got_obs), reply))) in
            expected.iter().zip(trace.iter().zip(&replies)).enumerate()
        {
            prop_assert_eq!(*fresh, want.fresh, "step {} event {}: fresh", n, i);
            let got_obs: Vec<Obs> = got_obs.iter().map(Obs::without_messages).collect();
            prop_assert_eq!(&got_obs, &want.obs, "step {} event {}", n, i);
            match reply {
                Ok(()) => prop_assert!(want.ok, "step {} event {}: succeeded", n, i),
                Err(e) => {
                    prop_assert!(!want.ok, "step {} event {}: {}", n, i, e);
                    prop_assert!(e.is_reset(), "step {} event {}: {}", n, i, e);
                }
            }
        }
    }
    live.close().await;
    Ok(())
}

fn run_case(steps: Vec<Step>) -> std::result::Result<(), TestCaseError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(check(steps))
}

// ----------------------------------------------------------- strategies --

/// Keys from a small alphabet, up to two characters, so keys collide and
/// ranges and prefixes cover interesting sets; "é" puts a two-byte UTF-8
/// character after "z" in byte order.
fn key() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop::sample::select(vec!['a', 'b', 'z', 'é']), 0..=2)
        .prop_map(String::from_iter)
}

fn keys() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(key(), 0..4)
}

/// Raw values: a few random bytes, or now and then the JSON text of a
/// typed value, which must still not read back as a typed value.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 0..4),
        1 => prop::sample::select(vec![&b"\"\""[..], b"\"hello\"", br#"{"x":1,"label":"p"}"#])
            .prop_map(<[u8]>::to_vec),
    ]
}

/// Typed values, from a small set so typed reads find them.
fn point() -> impl Strategy<Value = Point> {
    (-2i64..3, prop::sample::select(vec!["", "p", "é"])).prop_map(|(x, label)| Point {
        x,
        label: label.to_owned(),
    })
}

fn text() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "hello", "é"]).prop_map(str::to_owned)
}

fn list_spec() -> impl Strategy<Value = ListSpec> {
    let lower = prop_oneof![
        4 => Just((None, None)),
        3 => key().prop_map(|k| (Some(k), None)),
        3 => key().prop_map(|k| (None, Some(k))),
        1 => (key(), key()).prop_map(|(a, b)| (Some(a), Some(b))),
    ];
    let limit = prop_oneof![3 => Just(None), 2 => (0usize..5).prop_map(Some)];
    (
        lower,
        proptest::option::of(key()),
        proptest::option::weighted(0.3, key()),
        any::<bool>(),
        limit,
    )
        .prop_map(
            |((start, start_after), end, prefix, reverse, limit)| ListSpec {
                start,
                start_after,
                end,
                prefix,
                reverse,
                limit,
            },
        )
}

/// Operations allowed inside a transaction: the raw ones most often, the
/// typed and many-key ones now and then (they meet raw values, so reads
/// that must fail to decode come up too).
fn simple_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), value()).prop_map(|(k, v)| Op::PutBytes(k, v)),
        3 => key().prop_map(Op::Delete),
        3 => key().prop_map(Op::GetBytes),
        3 => list_spec().prop_map(Op::ListBytes),
        1 => Just(Op::DeleteAll),
        2 => (key(), point()).prop_map(|(k, v)| Op::Put(k, v)),
        1 => (key(), text()).prop_map(|(k, v)| Op::PutText(k, v)),
        1 => proptest::collection::vec((key(), point()), 0..3).prop_map(Op::PutMany),
        2 => key().prop_map(Op::Get),
        1 => key().prop_map(Op::GetText),
        1 => keys().prop_map(Op::GetMany),
        1 => keys().prop_map(Op::DeleteMany),
        1 => list_spec().prop_map(Op::List),
        1 => Just(Op::Export),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        22 => simple_op(),
        2 => Just(Op::Sync),
        3 => (proptest::collection::vec(simple_op(), 0..5), any::<bool>())
            .prop_map(|(ops, fail)| Op::Txn { ops, fail }),
        1 => Just(Op::TxnDeleteAll),
        1 => Just(Op::Bump),
    ]
}

/// An event; `may_fail`: its handler may return an error after its ops.
fn event(may_fail: bool) -> impl Strategy<Value = Event> {
    let fail = if may_fail {
        proptest::bool::weighted(0.2).boxed()
    } else {
        Just(false).boxed()
    };
    (proptest::collection::vec(op(), 0..8), fail).prop_map(|(mut ops, fail)| {
        if fail {
            ops.push(Op::Fail);
        }
        ops
    })
}

/// `pipeline_failures`: whether events queued behind others may fail (the
/// second test below); the first event of a pipeline may always fail.
fn step(pipeline_failures: bool) -> impl Strategy<Value = Step> {
    let pipeline = (
        event(true),
        proptest::collection::vec(event(pipeline_failures), 1..5),
    )
        .prop_map(|(first, rest)| Step::Events(std::iter::once(first).chain(rest).collect()));
    prop_oneof![
        12 => event(true).prop_map(|e| Step::Events(vec![e])),
        4 => pipeline,
        1 => (1u32..=2).prop_map(Step::Inject),
        1 => Just(Step::Reopen),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        // Keep failures out of the source tree; a failure prints its case.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn storage_matches_the_model(steps in proptest::collection::vec(step(false), 1..24)) {
        run_case(steps)?;
    }

    // The same with handler errors inside pipelines: a failing event in a
    // commit group must not cost the earlier events of the group their
    // acknowledged writes (see `a_failing_event_does_not_lose_acknowledged_
    // writes_of_its_commit_group` in storage.rs).
    #[test]
    fn storage_matches_the_model_with_failures_in_pipelines(
        steps in proptest::collection::vec(step(true), 1..24)
    ) {
        run_case(steps)?;
    }
}
