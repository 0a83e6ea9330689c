//! Named durable timers (`Context::timers`), multiplexed over the one
//! alarm: many due at once fire once each in order, they survive a
//! restart, a failing timer's retry count survives a restart, they repeat
//! and cancel, and the plain alarm keeps its own meaning beside them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use objects::{AlarmInfo, BoxError, Context, Object, Result, Runtime, Timer, TokioClock};
use serde::{Deserialize, Serialize};

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn millis(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).expect("after").as_millis()).expect("fits")
}

const T0: u64 = 1_700_000_000_000;

/// What ran: ("timer:<name>" or "alarm", scheduled ms, retry count,
/// payload).
type Run = (String, u64, u32, String);

#[derive(Default)]
struct Env {
    runs: Mutex<Vec<Run>>,
}

struct Jobs {
    env: Arc<Env>,
}

#[derive(Serialize, Deserialize, Debug)]
enum Call {
    /// (name, at ms, payload)
    At(Vec<(String, u64, String)>),
    Every(String, u64),
    Cancel(String),
    SetAlarm(u64),
    Alarm,
    List,
    Get(String),
    /// The keys a plain listing shows.
    Keys,
    /// Makes the plain alarm's handler fail (or not).
    FailAlarm(bool),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Reply {
    Unit,
    Alarm(Option<u64>),
    /// (name, next ms, retry count)
    Timers(Vec<(String, u64, u32)>),
    Value(Option<String>),
    Bool(bool),
    Keys(Vec<String>),
}

impl Object for Jobs {
    type Env = Env;
    type Call = Call;
    type Reply = Reply;

    async fn new(_ctx: &mut Context, env: Arc<Env>) -> Result<Self, BoxError> {
        Ok(Jobs { env })
    }

    async fn call(&mut self, ctx: &mut Context, call: Call) -> Result<Reply, BoxError> {
        Ok(match call {
            Call::At(list) => {
                for (name, at, payload) in list {
                    ctx.timers().schedule_at(&name, time(at), &payload)?;
                }
                Reply::Unit
            }
            Call::Every(name, ms) => {
                ctx.timers()
                    .schedule_every(&name, Duration::from_millis(ms), "tick")?;
                Reply::Unit
            }
            Call::Cancel(name) => Reply::Bool(ctx.timers().cancel(&name)?),
            Call::SetAlarm(at) => {
                ctx.storage().set_alarm(time(at))?;
                Reply::Unit
            }
            Call::Alarm => Reply::Alarm(ctx.storage().alarm()?.map(millis)),
            Call::List => Reply::Timers(
                ctx.timers()
                    .list()?
                    .into_iter()
                    .map(|t| (t.name, millis(t.next), t.retry_count))
                    .collect(),
            ),
            Call::Get(k) => Reply::Value(ctx.storage().get(&k)?),
            Call::FailAlarm(on) => {
                ctx.storage().put("fail-alarm", &on)?;
                Reply::Unit
            }
            Call::Keys => Reply::Keys(
                ctx.storage()
                    .list::<String>(&objects::ListOptions::new())?
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect(),
            ),
        })
    }

    async fn timer(&mut self, ctx: &mut Context, timer: Timer) -> Result<(), BoxError> {
        let payload: String = timer.payload()?;
        self.env.runs.lock().expect("lock").push((
            format!("timer:{}", timer.name),
            millis(timer.scheduled),
            timer.retry_count,
            payload.clone(),
        ));
        // A failing run's write must be undone.
        ctx.storage()
            .put(&format!("ran:{}", timer.name), &payload)?;
        if payload == "fail" {
            return Err("this job always fails".into());
        }
        Ok(())
    }

    async fn alarm(&mut self, ctx: &mut Context, info: AlarmInfo) -> Result<(), BoxError> {
        let inside = ctx.storage().alarm()?;
        assert_eq!(inside, None, "the plain alarm reads unset in its handler");
        self.env.runs.lock().expect("lock").push((
            "alarm".into(),
            millis(info.scheduled),
            info.retry_count,
            String::new(),
        ));
        if ctx.storage().get::<bool>("fail-alarm")? == Some(true) {
            return Err("the alarm fails".into());
        }
        Ok(())
    }
}

fn open(dir: &std::path::Path, at: u64) -> Runtime {
    Runtime::builder()
        .data_dir(dir)
        .clock(Arc::new(TokioClock::starting_at(time(at))))
        .open()
        .expect("open")
}

/// Advances paused time and waits for due alarms to settle. (The store's
/// writer runs on a blocking thread, so paused time does not advance by
/// itself.)
async fn advance(rt: &Runtime, d: Duration) {
    tokio::time::advance(d).await;
    rt.alarms_settled().await;
}

fn runs(env: &Env) -> Vec<Run> {
    env.runs.lock().expect("lock").clone()
}

#[tokio::test(start_paused = true)]
async fn many_timers_due_at_once_each_fire_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path(), T0);
    let ns = rt.namespace::<Jobs>("jobs", Env::default()).expect("ns");
    let job = ns.get_by_name("j");
    // 200 timers over 5 distinct times, set in scrambled order.
    let mut list: Vec<(String, u64, String)> = (0..200u64)
        .map(|i| {
            (
                format!("t{:03}", (i * 37) % 200),
                T0 + 1_000 + (i % 5) * 10,
                format!("p{i}"),
            )
        })
        .collect();
    list.reverse();
    for chunk in list.chunks(50) {
        job.call(Call::At(chunk.to_vec())).await.expect("schedule");
    }
    let Reply::Timers(pending) = job.call(Call::List).await.expect("list") else {
        panic!("unexpected reply")
    };
    assert_eq!(pending.len(), 200);
    // The records are the runtime's: a plain listing does not show them
    // (nor trips over decoding them).
    assert_eq!(
        job.call(Call::Keys).await.expect("keys"),
        Reply::Keys(vec![])
    );
    assert_eq!(rt.pending_alarms(), 1, "one stored alarm for all of them");
    advance(&rt, Duration::from_secs(2)).await;
    let r = runs(ns.env());
    assert_eq!(r.len(), 200, "each fired once");
    let mut expected: Vec<(u64, String)> = list
        .iter()
        .map(|(n, at, _)| (*at, format!("timer:{n}")))
        .collect();
    expected.sort();
    let got: Vec<(u64, String)> = r.iter().map(|x| (x.1, x.0.clone())).collect();
    assert_eq!(got, expected, "in (time, name) order");
    assert_eq!(
        job.call(Call::List).await.expect("list"),
        Reply::Timers(vec![])
    );
    assert_eq!(rt.pending_alarms(), 0);
    // Nothing fires twice.
    advance(&rt, Duration::from_secs(60)).await;
    assert_eq!(runs(ns.env()).len(), 200);
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn timers_and_a_failing_timers_retry_count_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let rt = open(dir.path(), T0);
        let ns = rt.namespace::<Jobs>("jobs", Env::default()).expect("ns");
        let job = ns.get_by_name("j");
        job.call(Call::At(vec![
            ("flaky".into(), T0 + 1_000, "fail".into()),
            ("later".into(), T0 + 3_600_000, "hello".into()),
        ]))
        .await
        .expect("schedule");
        advance(&rt, Duration::from_secs(1)).await;
        let r = runs(ns.env());
        assert_eq!(
            r,
            vec![("timer:flaky".into(), T0 + 1_000, 0, "fail".into())]
        );
        // The failed run's write was undone; its retry is recorded.
        assert_eq!(
            job.call(Call::Get("ran:flaky".into())).await.expect("get"),
            Reply::Value(None)
        );
        let Reply::Timers(t) = job.call(Call::List).await.expect("list") else {
            panic!("unexpected reply")
        };
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].0.as_str(), t[0].2), ("flaky", 1), "{t:?}");
        assert!(t[0].1 > T0 + 1_000, "retried later: {t:?}");
        rt.shutdown().await;
    }
    // A new process, an hour later: both are still there, the retry count
    // with them.
    let rt = open(dir.path(), T0 + 3_600_000);
    let ns = rt.namespace::<Jobs>("jobs", Env::default()).expect("ns");
    advance(&rt, Duration::from_millis(1)).await;
    let r = runs(ns.env());
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0], ("timer:flaky".into(), T0 + 1_000, 1, "fail".into()));
    assert_eq!(
        r[1],
        ("timer:later".into(), T0 + 3_600_000, 0, "hello".into())
    );
    let Reply::Timers(t) = ns.get_by_name("j").call(Call::List).await.expect("list") else {
        panic!("unexpected reply")
    };
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].0.as_str(), t[0].2), ("flaky", 2));
    // Out of retries at last: dropped. (Backoff is 2 s doubling, capped
    // at 1024 s; ten minutes a step is enough for each retry.)
    for _ in 0..12 {
        advance(&rt, Duration::from_secs(600)).await;
    }
    // Here: retries 1 to 6 (run 0 was in the first process), then no more.
    let counts: Vec<u32> = runs(ns.env())
        .iter()
        .filter(|r| r.0 == "timer:flaky")
        .map(|r| r.2)
        .collect();
    assert_eq!(counts, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(
        ns.get_by_name("j").call(Call::List).await.expect("list"),
        Reply::Timers(vec![])
    );
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_plain_alarm_keeps_its_meaning_beside_timers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path(), T0);
    let ns = rt.namespace::<Jobs>("jobs", Env::default()).expect("ns");
    let job = ns.get_by_name("j");
    job.call(Call::SetAlarm(T0 + 5_000)).await.expect("alarm");
    job.call(Call::At(vec![("a".into(), T0 + 2_000, "x".into())]))
        .await
        .expect("timer");
    // alarm() still reads the plain alarm, not the earlier timer.
    assert_eq!(
        job.call(Call::Alarm).await.expect("get"),
        Reply::Alarm(Some(T0 + 5_000))
    );
    advance(&rt, Duration::from_secs(2)).await;
    assert_eq!(runs(ns.env()).len(), 1);
    assert_eq!(
        job.call(Call::Alarm).await.expect("get"),
        Reply::Alarm(Some(T0 + 5_000))
    );
    advance(&rt, Duration::from_secs(3)).await;
    let r = runs(ns.env());
    assert_eq!(r.len(), 2);
    assert_eq!(r[1], ("alarm".into(), T0 + 5_000, 0, String::new()));
    assert_eq!(
        job.call(Call::Alarm).await.expect("get"),
        Reply::Alarm(None)
    );
    // With the last timer gone, set_alarm is the plain alarm again.
    job.call(Call::SetAlarm(T0 + 9_000)).await.expect("alarm");
    advance(&rt, Duration::from_secs(4)).await;
    assert_eq!(runs(ns.env()).len(), 3);
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_repeating_timer_repeats_until_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path(), T0);
    let ns = rt.namespace::<Jobs>("jobs", Env::default()).expect("ns");
    let job = ns.get_by_name("j");
    job.call(Call::Every("tick".into(), 1_000))
        .await
        .expect("every");
    for _ in 0..3 {
        advance(&rt, Duration::from_secs(1)).await;
    }
    let scheduled: Vec<u64> = runs(ns.env()).iter().map(|r| r.1).collect();
    assert_eq!(scheduled, vec![T0 + 1_000, T0 + 2_000, T0 + 3_000]);
    assert_eq!(
        job.call(Call::Cancel("tick".into())).await.expect("cancel"),
        Reply::Bool(true)
    );
    advance(&rt, Duration::from_secs(5)).await;
    assert_eq!(runs(ns.env()).len(), 3);
    assert_eq!(rt.pending_alarms(), 0);
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn beside_timers_a_failing_plain_alarm_keeps_its_retry_count_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let rt = open(dir.path(), T0);
        let ns = rt.namespace::<Jobs>("jobs", Env::default()).expect("ns");
        let job = ns.get_by_name("j");
        job.call(Call::At(vec![("far".into(), T0 + 86_400_000, "x".into())]))
            .await
            .expect("timer");
        job.call(Call::FailAlarm(true)).await.expect("flag");
        job.call(Call::SetAlarm(T0 + 1_000)).await.expect("alarm");
        advance(&rt, Duration::from_secs(1)).await;
        assert_eq!(
            runs(ns.env()),
            vec![("alarm".into(), T0 + 1_000, 0, String::new())]
        );
        // Still set (for a retry), as a plain alarm would be.
        assert_eq!(
            job.call(Call::Alarm).await.expect("get"),
            Reply::Alarm(Some(T0 + 1_000))
        );
        job.call(Call::FailAlarm(false)).await.expect("flag");
        rt.shutdown().await;
    }
    let rt = open(dir.path(), T0 + 60_000);
    let ns = rt.namespace::<Jobs>("jobs", Env::default()).expect("ns");
    advance(&rt, Duration::from_millis(1)).await;
    assert_eq!(
        runs(ns.env()),
        vec![("alarm".into(), T0 + 1_000, 1, String::new())],
        "the retry count came back from storage"
    );
    assert_eq!(
        ns.get_by_name("j").call(Call::Alarm).await.expect("get"),
        Reply::Alarm(None)
    );
    rt.shutdown().await;
}
