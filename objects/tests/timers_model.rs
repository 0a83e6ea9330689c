//! Timers against a model: random schedules, replacements, cancels and
//! clock moves on a real runtime (paused time, real LMDB) fire exactly the
//! timers a `BTreeMap` model says, once each, in (time, name) order, and
//! `list()` always shows the model's pending set.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use objects::{BoxError, Context, Object, Result, Runtime, Timer, TokioClock};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

const T0: u64 = 1_700_000_000_000;

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn millis(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).expect("after").as_millis()).expect("fits")
}

#[derive(Default)]
struct Env {
    fired: Mutex<Vec<(String, u64)>>,
}

struct Clockwork {
    env: Arc<Env>,
}

#[derive(Serialize, Deserialize, Debug)]
enum Call {
    After(String, u64),
    Cancel(String),
    List,
}

impl Object for Clockwork {
    type Env = Env;
    type Call = Call;
    type Reply = Vec<(String, u64)>;

    async fn new(_ctx: &mut Context, env: Arc<Env>) -> Result<Self, BoxError> {
        Ok(Clockwork { env })
    }

    async fn call(&mut self, ctx: &mut Context, call: Call) -> Result<Self::Reply, BoxError> {
        Ok(match call {
            Call::After(name, ms) => {
                ctx.timers()
                    .schedule_after(&name, Duration::from_millis(ms), &())?;
                Vec::new()
            }
            Call::Cancel(name) => {
                ctx.timers().cancel(&name)?;
                Vec::new()
            }
            Call::List => ctx
                .timers()
                .list()?
                .into_iter()
                .map(|t| (t.name, millis(t.next)))
                .collect(),
        })
    }

    async fn timer(&mut self, _ctx: &mut Context, timer: Timer) -> Result<(), BoxError> {
        self.env
            .fired
            .lock()
            .expect("lock")
            .push((timer.name, millis(timer.scheduled)));
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Timer `name`, due this many ms from now (at least 1, so nothing is
    /// due before the clock moves).
    After(u8, u64),
    Cancel(u8),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, 1u64..4_000).prop_map(|(n, ms)| Op::After(n, ms)),
        1 => (0u8..6).prop_map(Op::Cancel),
        3 => (0u64..3_000).prop_map(Op::Advance),
    ]
}

/// The model: pending timers by name, and what fired so far.
#[derive(Default)]
struct Model {
    now: u64,
    pending: BTreeMap<String, u64>,
    fired: Vec<(String, u64)>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::After(n, ms) => {
                self.pending.insert(format!("t{n}"), self.now + ms);
            }
            Op::Cancel(n) => {
                self.pending.remove(&format!("t{n}"));
            }
            Op::Advance(ms) => {
                self.now += ms;
                let mut due: Vec<(u64, String)> = self
                    .pending
                    .iter()
                    .filter(|(_, at)| **at <= self.now)
                    .map(|(n, at)| (*at, n.clone()))
                    .collect();
                due.sort();
                for (at, n) in due {
                    self.pending.remove(&n);
                    self.fired.push((n, at));
                }
            }
        }
    }
}

fn check(ops: &[Op]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = Runtime::builder()
            .data_dir(dir.path())
            .clock(Arc::new(TokioClock::starting_at(time(T0))))
            .open()
            .expect("open");
        let ns = objects
            .namespace::<Clockwork>("clocks", Env::default())
            .expect("ns");
        let stub = ns.get_by_name("c");
        let mut model = Model {
            now: T0,
            ..Model::default()
        };
        for op in ops {
            model.apply(op);
            match op {
                Op::After(n, ms) => {
                    stub.call(Call::After(format!("t{n}"), *ms))
                        .await
                        .expect("after");
                }
                Op::Cancel(n) => {
                    stub.call(Call::Cancel(format!("t{n}")))
                        .await
                        .expect("cancel");
                }
                Op::Advance(ms) => {
                    tokio::time::advance(Duration::from_millis(*ms)).await;
                    objects.alarms_settled().await;
                }
            }
            let fired = ns.env().fired.lock().expect("lock").clone();
            assert_eq!(fired, model.fired, "after {op:?}");
            let listed = stub.call(Call::List).await.expect("list");
            let expected: Vec<(String, u64)> = model
                .pending
                .iter()
                .map(|(n, at)| (n.clone(), *at))
                .collect();
            assert_eq!(listed, expected, "pending after {op:?}");
        }
        drop((stub, ns));
        objects.shutdown().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn timers_fire_as_the_model_says(ops in proptest::collection::vec(op(), 1..30)) {
        check(&ops);
    }
}
