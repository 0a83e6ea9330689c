//! Alarms: conformance statements 12 to 17 on paused time, restart, and
//! 100,000 alarms due at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use objects::BoxError;
use objects::{AlarmInfo, Context, Object, Result, Runtime, TokioClock};
use serde::{Deserialize, Serialize};

/// Milliseconds since the epoch as a time, and back: the tests count in ms.
fn time(ms: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(ms)
}

fn millis(t: std::time::SystemTime) -> u64 {
    u64::try_from(
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis(),
    )
    .expect("fits")
}

const T0: u64 = 1_700_000_000_000;

/// One alarm run: (object name, info, alarm() read inside, clock at run).
type Run = (String, AlarmInfo, Option<u64>, u64);

#[derive(Default)]
struct Env {
    /// (object name, info, alarm() read inside the handler, clock at run)
    runs: Mutex<Vec<Run>>,
    constructed: AtomicUsize,
    running: AtomicUsize,
    overlapped: AtomicUsize,
}

struct Job {
    env: Arc<Env>,
}

#[derive(Serialize, Deserialize, Debug)]
enum Call {
    Set(u64),
    Get,
    Delete,
    DeleteAll,
    Put(String),
    Keys,
    /// Make the handler fail this many times.
    FailTimes(u32),
    /// Make the handler set the alarm again (to now) this many times.
    Rearm(u32),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Reply {
    Alarm(Option<u64>),
    Keys(Vec<String>),
    Unit,
}

impl Object for Job {
    type Env = Env;
    type Call = Call;
    type Reply = Reply;

    async fn new(_ctx: &mut Context, env: Arc<Env>) -> Result<Self, BoxError> {
        env.constructed.fetch_add(1, Ordering::SeqCst);
        Ok(Job { env })
    }

    async fn call(&mut self, ctx: &mut Context, call: Call) -> Result<Reply, BoxError> {
        let s = ctx.storage();
        Ok(match call {
            Call::Set(t) => {
                s.set_alarm(time(t))?;
                Reply::Unit
            }
            Call::Get => Reply::Alarm(s.alarm()?.map(millis)),
            Call::Delete => {
                s.delete_alarm();
                Reply::Unit
            }
            Call::DeleteAll => {
                s.delete_all()?;
                Reply::Unit
            }
            Call::Put(k) => {
                s.put(&k, &1)?;
                Reply::Unit
            }
            Call::Keys => Reply::Keys(
                s.list_bytes(&objects::ListOptions::new())?
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect(),
            ),
            Call::FailTimes(n) => {
                s.put("fail", &n)?;
                Reply::Unit
            }
            Call::Rearm(n) => {
                s.put("rearm", &n)?;
                Reply::Unit
            }
        })
    }

    async fn alarm(&mut self, ctx: &mut Context, info: AlarmInfo) -> Result<(), BoxError> {
        if self.env.running.fetch_add(1, Ordering::SeqCst) > 0 {
            self.env.overlapped.fetch_add(1, Ordering::SeqCst);
        }
        let inside = ctx.storage().alarm()?.map(millis);
        let now = millis(ctx.now());
        self.env.runs.lock().expect("lock").push((
            ctx.name().unwrap_or_default().to_string(),
            info,
            inside,
            now,
        ));
        // Yield inside the handler so an overlapping run would show.
        tokio::task::yield_now().await;
        self.env.running.fetch_sub(1, Ordering::SeqCst);
        let fail: u32 = ctx.storage().get("fail")?.unwrap_or(0);
        if fail > 0 {
            // This write is rolled back with the failed run, so the count
            // stays: use a separate always-failing marker instead.
            return Err(BoxError::from(format!("alarm fails ({fail} left)")));
        }
        let rearm: u32 = ctx.storage().get("rearm")?.unwrap_or(0);
        if rearm > 0 {
            ctx.storage().put("rearm", &(rearm - 1))?;
            let now = ctx.now();
            ctx.storage().set_alarm(now)?;
        }
        ctx.storage().put("ran", &true)?;
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

async fn advance(rt: &Runtime, d: Duration) {
    tokio::time::advance(d).await;
    rt.alarms_settled().await;
}

fn runs(env: &Env) -> Vec<Run> {
    env.runs.lock().expect("lock").clone()
}

// 12
#[tokio::test(start_paused = true)]
async fn set_get_replace_and_past_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path(), T0);
    let jobs = rt.namespace::<Job>("jobs", Env::default()).expect("ns");
    let a = jobs.get_by_name("a");
    a.call(Call::Set(T0 + 60_000)).await.expect("set");
    assert_eq!(
        a.call(Call::Get).await.expect("get"),
        Reply::Alarm(Some(T0 + 60_000))
    );
    a.call(Call::Set(T0 + 30_000)).await.expect("replace");
    assert_eq!(
        a.call(Call::Get).await.expect("get"),
        Reply::Alarm(Some(T0 + 30_000))
    );
    assert!(a.call(Call::Set(0)).await.expect_err("zero").is_reset());
    advance(&rt, Duration::from_secs(29)).await;
    assert!(runs(jobs.env()).is_empty(), "not due yet");
    advance(&rt, Duration::from_secs(1)).await;
    let r = runs(jobs.env());
    assert_eq!(r.len(), 1, "the replaced alarm fired once: {r:?}");
    assert_eq!(millis(r[0].1.scheduled), T0 + 30_000);
    // A time in the past fires promptly.
    let b = jobs.get_by_name("b");
    b.call(Call::Set(T0 - 5_000)).await.expect("set past");
    advance(&rt, Duration::ZERO).await;
    assert_eq!(runs(jobs.env()).len(), 2);
    assert_eq!(rt.pending_alarms(), 0);
    rt.shutdown().await;
}

// 13
#[tokio::test(start_paused = true)]
async fn inside_the_handler_the_alarm_reads_as_unset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path(), T0);
    let jobs = rt.namespace::<Job>("jobs", Env::default()).expect("ns");
    let a = jobs.get_by_name("a");
    a.call(Call::Set(T0 + 1_000)).await.expect("set");
    advance(&rt, Duration::from_secs(1)).await;
    let r = runs(jobs.env());
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].2, None, "alarm() inside the handler");
    assert_eq!(r[0].1.retry_count, 0);
    assert!(!r[0].1.is_retry());
    assert_eq!(a.call(Call::Get).await.expect("get"), Reply::Alarm(None));
    assert_eq!(
        a.call(Call::Keys).await.expect("keys"),
        Reply::Keys(vec!["ran".into()]),
        "the handler's writes committed"
    );
    rt.shutdown().await;
}

// 14
#[tokio::test(start_paused = true)]
async fn a_failing_alarm_is_retried_with_backoff_then_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path(), T0);
    let jobs = rt.namespace::<Job>("jobs", Env::default()).expect("ns");
    let a = jobs.get_by_name("a");
    a.call(Call::FailTimes(1000)).await.expect("fail");
    a.call(Call::Set(T0 + 1_000)).await.expect("set");
    advance(&rt, Duration::from_secs(1)).await;
    // Step a second at a time for 3 minutes, recording when each run came.
    for _ in 0..180 {
        advance(&rt, Duration::from_secs(1)).await;
    }
    let r = runs(jobs.env());
    let counts: Vec<u32> = r.iter().map(|x| x.1.retry_count).collect();
    assert_eq!(counts, vec![0, 1, 2, 3, 4, 5, 6], "{r:?}");
    assert!(r.iter().all(|x| millis(x.1.scheduled) == T0 + 1_000));
    for (i, pair) in r.windows(2).enumerate() {
        let gap = pair[1].3 - pair[0].3;
        let base = 2_000u64 << i;
        // Backoff plus up to 25% jitter, to the next whole second we step.
        assert!(
            gap >= base && gap <= base + base / 4 + 1_000,
            "retry {} came after {gap} ms",
            i + 1
        );
    }
    assert_eq!(
        a.call(Call::Get).await.expect("get"),
        Reply::Alarm(None),
        "dropped"
    );
    assert_eq!(rt.pending_alarms(), 0);
    rt.shutdown().await;
}

// 15
#[tokio::test(start_paused = true)]
async fn set_alarm_inside_the_handler_runs_after_it_never_during() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path(), T0);
    let jobs = rt.namespace::<Job>("jobs", Env::default()).expect("ns");
    let a = jobs.get_by_name("a");
    a.call(Call::Rearm(3)).await.expect("rearm");
    a.call(Call::Set(T0 + 1_000)).await.expect("set");
    advance(&rt, Duration::from_secs(1)).await;
    let r = runs(jobs.env());
    assert_eq!(r.len(), 4, "the first run and three re-armed runs: {r:?}");
    assert!(r.iter().all(|x| x.1.retry_count == 0));
    assert_eq!(jobs.env().overlapped.load(Ordering::SeqCst), 0);
    assert_eq!(a.call(Call::Get).await.expect("get"), Reply::Alarm(None));
    rt.shutdown().await;
}

// 16
#[tokio::test(start_paused = true)]
async fn delete_all_removes_keys_and_the_alarm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path(), T0);
    let jobs = rt.namespace::<Job>("jobs", Env::default()).expect("ns");
    let a = jobs.get_by_name("a");
    a.call(Call::Put("k".into())).await.expect("put");
    a.call(Call::Set(T0 + 1_000)).await.expect("set");
    a.call(Call::DeleteAll).await.expect("delete all");
    assert_eq!(a.call(Call::Get).await.expect("get"), Reply::Alarm(None));
    assert_eq!(a.call(Call::Keys).await.expect("keys"), Reply::Keys(vec![]));
    assert_eq!(rt.pending_alarms(), 0);
    advance(&rt, Duration::from_secs(5)).await;
    assert!(runs(jobs.env()).is_empty());
    // delete_alarm alone also cancels.
    a.call(Call::Set(T0 + 10_000)).await.expect("set");
    a.call(Call::Delete).await.expect("delete");
    advance(&rt, Duration::from_secs(10)).await;
    assert!(runs(jobs.env()).is_empty());
    rt.shutdown().await;
}

// 17
#[tokio::test(start_paused = true)]
async fn alarms_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let rt = open(dir.path(), T0);
        let jobs = rt.namespace::<Job>("jobs", Env::default()).expect("ns");
        for i in 0..10 {
            jobs.get_by_name(&format!("j{i}"))
                .call(Call::Set(T0 + 60_000 + i))
                .await
                .expect("set");
        }
        assert_eq!(rt.pending_alarms(), 10);
        rt.shutdown().await;
    }
    let rt = open(dir.path(), T0 + 1_000);
    let jobs = rt.namespace::<Job>("jobs", Env::default()).expect("ns");
    assert_eq!(rt.pending_alarms(), 10, "reloaded from storage");
    advance(&rt, Duration::from_secs(60)).await;
    let r = runs(jobs.env());
    assert_eq!(r.len(), 10);
    assert_eq!(
        jobs.env().constructed.load(Ordering::SeqCst),
        10,
        "constructor ran first"
    );
    let mut names: Vec<_> = r.iter().map(|x| x.0.clone()).collect();
    names.sort();
    assert_eq!(names, (0..10).map(|i| format!("j{i}")).collect::<Vec<_>>());
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_alarms_due_at_once_each_fire_once_in_time_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path(), T0);
    let jobs = rt.namespace::<Job>("jobs", Env::default()).expect("ns");
    let n: u64 = 100_000;
    for chunk in 0..(n / 1000) {
        let calls: Vec<_> = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| {
                // Times run opposite to the name order, so firing in time
                // order is not an accident of activation order.
                jobs.get_by_name(&format!("j{i:06}"))
                    .call(Call::Set(T0 + 200_000 + (n - i)))
            })
            .collect();
        for c in calls {
            c.await.expect("set");
        }
    }
    assert_eq!(rt.pending_alarms(), usize::try_from(n).expect("n"));
    // Let the objects go idle and be evicted first, so the alarms wake
    // them (one new task each, started in delivery order).
    advance(&rt, Duration::from_secs(80)).await;
    // Bounded, not timed: each yield lets every ready task run once.
    for _ in 0..1_000_000 {
        if jobs.live_count() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(jobs.live_count(), 0);
    advance(&rt, Duration::from_secs(120 + n / 1000 + 1)).await;
    let r = runs(jobs.env());
    assert_eq!(r.len(), usize::try_from(n).expect("n"), "each fired once");
    let times: Vec<u64> = r.iter().map(|x| millis(x.1.scheduled)).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "in time order");
    assert_eq!(rt.pending_alarms(), 0);
    rt.shutdown().await;
}
