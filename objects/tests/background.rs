//! Background work (`Context::spawn`): futures that run outside the input
//! gate and whose results come back as events, in the order they finish,
//! never overlapping a handler, dropped on reset, bounded per object.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use objects::{
    BoxError, Context, NamespaceOptions, Object, Result, Runtime, RuntimeOptions, SpawnError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Default)]
struct Env {
    /// A handler is between its start and its end.
    busy: AtomicBool,
    /// Continuations that ran while a handler was busy.
    overlaps: AtomicUsize,
    /// Continuations run, by the value their future produced.
    finished: Mutex<Vec<u64>>,
    ran: Notify,
    /// Background futures dropped before they finished.
    cancelled: AtomicUsize,
    /// `Hold` has started / may finish.
    entered: Notify,
    release: Notify,
    /// The ready future of `SpawnReadyThenAbort` has run.
    ready_ran: AtomicBool,
}

struct Worker {
    env: Arc<Env>,
}

#[derive(Serialize, Deserialize, Debug)]
enum Call {
    /// Spawns one future per delay (seconds), each yielding its delay.
    Spawn(Vec<u64>),
    /// Waits inside the handler (holding the input gate) until released.
    Hold,
    /// Spawns a future that never finishes, then returns.
    SpawnForever,
    /// Spawns a future that is ready at once, waits (so its result is
    /// queued behind this event), then aborts.
    SpawnReadyThenAbort,
    /// Spawns `n` futures that never finish; answers how many were taken
    /// and the first refusal.
    Flood(usize),
    /// The finished values the object stored.
    Stored,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Reply {
    Unit,
    Stored(Vec<u64>),
    Flood(usize, Option<String>),
}

/// Counts a background future dropped before it finished.
struct OnDrop(Arc<Env>, bool);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn record(w: &mut Worker, ctx: &mut Context, v: u64) -> Result<(), BoxError> {
    if w.env.busy.load(Ordering::SeqCst) {
        w.env.overlaps.fetch_add(1, Ordering::SeqCst);
    }
    let mut stored: Vec<u64> = ctx.storage().get("done")?.unwrap_or_default();
    stored.push(v);
    ctx.storage().put("done", &stored)?;
    w.env.finished.lock().expect("lock").push(v);
    w.env.ran.notify_waiters();
    Ok(())
}

impl Object for Worker {
    type Env = Env;
    type Call = Call;
    type Reply = Reply;

    async fn new(_ctx: &mut Context, env: Arc<Env>) -> Result<Self, BoxError> {
        Ok(Worker { env })
    }

    async fn call(&mut self, ctx: &mut Context, call: Call) -> Result<Reply, BoxError> {
        self.env.busy.store(true, Ordering::SeqCst);
        let r = self.run(ctx, call).await;
        self.env.busy.store(false, Ordering::SeqCst);
        r
    }
}

impl Worker {
    async fn run(&mut self, ctx: &mut Context, call: Call) -> Result<Reply, BoxError> {
        match call {
            Call::Spawn(delays) => {
                for d in delays {
                    ctx.spawn(
                        async move {
                            tokio::time::sleep(Duration::from_secs(d)).await;
                            d
                        },
                        record,
                    )?;
                }
                Ok(Reply::Unit)
            }
            Call::Hold => {
                self.env.entered.notify_one();
                self.env.release.notified().await;
                Ok(Reply::Unit)
            }
            Call::SpawnForever => {
                let guard = OnDrop(self.env.clone(), false);
                ctx.spawn(
                    async move {
                        let mut guard = guard;
                        std::future::pending::<()>().await;
                        guard.1 = true;
                        0
                    },
                    record,
                )?;
                Ok(Reply::Unit)
            }
            Call::SpawnReadyThenAbort => {
                let env = self.env.clone();
                ctx.spawn(
                    async move {
                        env.ready_ran.store(true, Ordering::SeqCst);
                        99
                    },
                    record,
                )?;
                // Let the future finish and its result reach the mailbox.
                while !self.env.ready_ran.load(Ordering::SeqCst) {
                    tokio::task::yield_now().await;
                }
                for _ in 0..100 {
                    tokio::task::yield_now().await;
                }
                Err(ctx.abort("dropping the queued result"))
            }
            Call::Flood(n) => {
                let mut taken = 0;
                for _ in 0..n {
                    match ctx.spawn(std::future::pending::<u64>(), record) {
                        Ok(()) => taken += 1,
                        Err(e) => {
                            assert!(matches!(e, SpawnError::Full { .. }), "{e:?}");
                            return Ok(Reply::Flood(taken, Some(e.to_string())));
                        }
                    }
                }
                Ok(Reply::Flood(taken, None))
            }
            Call::Stored => Ok(Reply::Stored(
                ctx.storage().get("done")?.unwrap_or_default(),
            )),
        }
    }
}

/// Waits (on a notification) until `n` continuations have run.
async fn wait_finished(env: &Env, n: usize) -> Vec<u64> {
    loop {
        let notified = env.ran.notified();
        let done = env.finished.lock().expect("lock").clone();
        if done.len() >= n {
            return done;
        }
        notified.await;
    }
}

fn open(dir: &std::path::Path) -> Runtime {
    Runtime::builder()
        .data_dir(dir)
        .options(RuntimeOptions::default().with_call_timeout(Duration::from_secs(600)))
        .open()
        .expect("open")
}

#[tokio::test(start_paused = true)]
async fn results_arrive_as_events_in_finishing_order_without_blocking_the_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let ns = rt.namespace::<Worker>("w", Env::default()).expect("ns");
    let w = ns.get_by_name("a");
    w.call(Call::Spawn(vec![3, 1, 5])).await.expect("spawn");
    // The object is not blocked: a call runs while the futures wait, and
    // nothing has come back yet.
    assert_eq!(
        w.call(Call::Stored).await.expect("stored"),
        Reply::Stored(vec![])
    );
    // (The store's writer runs on a blocking thread, which stops paused
    // time from advancing by itself: the test advances it.) A handler
    // holds the object while the 1 s and 3 s futures finish: their
    // results wait in the mailbox until it is done.
    let hold = tokio::spawn(w.call(Call::Hold));
    ns.env().entered.notified().await;
    tokio::time::advance(Duration::from_secs(3)).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(ns.env().finished.lock().expect("lock").is_empty());
    ns.env().release.notify_one();
    hold.await.expect("join").expect("hold");
    assert_eq!(wait_finished(ns.env(), 2).await, vec![1, 3]);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(wait_finished(ns.env(), 3).await, vec![1, 3, 5]);
    assert_eq!(
        ns.env().overlaps.load(Ordering::SeqCst),
        0,
        "a continuation overlapped a handler"
    );
    // Their writes committed like any event's.
    assert_eq!(
        w.call(Call::Stored).await.expect("stored"),
        Reply::Stored(vec![1, 3, 5])
    );
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reset_cancels_running_work_and_drops_queued_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let ns = rt.namespace::<Worker>("w", Env::default()).expect("ns");
    let w = ns.get_by_name("a");
    w.call(Call::SpawnForever).await.expect("spawn");
    assert_eq!(ns.env().cancelled.load(Ordering::SeqCst), 0);
    let err = w
        .call(Call::SpawnReadyThenAbort)
        .await
        .expect_err("aborted");
    assert!(err.is_reset(), "{err:?}");
    // The pending future was cancelled with the instance...
    for _ in 0..1000 {
        if ns.env().cancelled.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(ns.env().cancelled.load(Ordering::SeqCst), 1);
    // ...and the ready one's queued result never ran on the new instance.
    w.call(Call::Spawn(vec![1])).await.expect("spawn");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(wait_finished(ns.env(), 1).await, vec![1]);
    assert_eq!(
        w.call(Call::Stored).await.expect("stored"),
        Reply::Stored(vec![1])
    );
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_background_work_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let ns = rt
        .namespace_with::<Worker>(
            "w",
            Env::default(),
            &NamespaceOptions::default().with_max_background(4),
        )
        .expect("ns");
    let w = ns.get_by_name("a");
    let Reply::Flood(taken, Some(err)) = w.call(Call::Flood(10)).await.expect("flood") else {
        panic!("the flood was not refused")
    };
    assert_eq!(taken, 4);
    assert!(err.contains("4 futures already running"), "{err}");
    assert!(err.contains("at once is 4"), "{err}");
    // Still serving; another object has its own bound.
    assert_eq!(
        w.call(Call::Stored).await.expect("stored"),
        Reply::Stored(vec![])
    );
    let Reply::Flood(taken, _) = ns.get_by_name("b").call(Call::Flood(2)).await.expect("b") else {
        panic!("unexpected reply")
    };
    assert_eq!(taken, 2);
    rt.shutdown().await;
}
