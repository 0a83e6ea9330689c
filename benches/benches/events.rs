//! What one event costs, by kind, on one live object: a plain `call`, a
//! typed method (`ask`), a background result (`Context::spawn`, until its
//! continuation ran), an alarm delivery (`set_alarm(now)`, until the alarm
//! handler ran) and a timer delivery (`timers().schedule_at(now)`, until
//! the timer handler ran). On criterion, so each comes with its spread.
//!
//! `cargo bench -p benches --bench events`
//!
//! Then one busy object whose every event needs another object's answer
//! (as a chat room needs its rate limiter's), 64 events in flight: the
//! answer awaited inside the handler (the object waits), or asked with
//! `ctx.spawn` and used in the result event (the object takes other events
//! meanwhile, and pays one more event per request).
//!
//! The call, method and background events write nothing, so no commit
//! (and no fsync) is in their figure: they measure the runtime's own path.
//! An alarm or a timer needs two commits (setting it, and clearing it with
//! the handler's run), each synced to disk, so their figures are mostly
//! fsync; a timer also reads and writes its records.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::{FutureExt, StreamExt};
use objects::{AlarmInfo, BoxError, Context, Handler, Method, Object, Runtime, Stub, Timer};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Tells the bench (through its env) each time a delivery ran.
struct Probe {
    env: Arc<Notify>,
}

#[derive(Serialize, Deserialize)]
struct Ping;
impl Method for Ping {
    type Reply = u8;
}

#[derive(Serialize, Deserialize)]
enum Call {
    Ping,
    Spawn,
    AlarmNow,
    TimerNow,
}

impl Object for Probe {
    type Env = Notify;
    type Call = Call;
    type Reply = ();

    async fn new(_ctx: &mut Context, env: Arc<Notify>) -> Result<Self, BoxError> {
        Ok(Probe { env })
    }

    async fn call(&mut self, ctx: &mut Context, call: Call) -> Result<(), BoxError> {
        match call {
            Call::Ping => {}
            Call::Spawn => ctx.spawn(async {}, |p: &mut Probe, _ctx, ()| {
                p.env.notify_one();
                Ok(())
            })?,
            Call::AlarmNow => {
                let now = ctx.now();
                ctx.storage().set_alarm(now)?;
            }
            Call::TimerNow => {
                let now = ctx.now();
                ctx.timers().schedule_at("t", now, &())?;
            }
        }
        Ok(())
    }

    async fn alarm(&mut self, _ctx: &mut Context, _info: AlarmInfo) -> Result<(), BoxError> {
        self.env.notify_one();
        Ok(())
    }

    async fn timer(&mut self, _ctx: &mut Context, _timer: Timer) -> Result<(), BoxError> {
        self.env.notify_one();
        Ok(())
    }
}

impl Handler<Ping> for Probe {
    async fn handle(&mut self, _ctx: &mut Context, _: Ping) -> Result<u8, BoxError> {
        Ok(1)
    }
}

/// Times `iters` runs of `call` on the probe, each followed (when `fires`)
/// by waiting for the delivery it started.
fn run(
    tokio: &tokio::runtime::Runtime,
    stub: &Stub<Probe>,
    fired: &Notify,
    iters: u64,
    call: fn() -> Call,
    fires: bool,
) -> Duration {
    tokio.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            stub.call(call()).await.expect("call");
            if fires {
                fired.notified().await;
            }
        }
        start.elapsed()
    })
}

fn events(c: &mut Criterion) {
    let tokio = benches::bench_tokio();
    let dir = tempfile::tempdir().expect("temp dir");
    let (runtime, ns) = tokio.block_on(async {
        let runtime = Runtime::builder()
            .data_dir(dir.path())
            .open()
            .expect("open runtime");
        let ns = runtime
            .namespace::<Probe>("probes", Notify::new())
            .expect("namespace");
        (runtime, ns)
    });
    let stub = ns.get_by_name("p");
    tokio
        .block_on(async { stub.call(Call::Ping).await })
        .expect("activate");
    let fired = ns.env().clone();

    let mut g = c.benchmark_group("event");
    g.bench_function("call", |b| {
        b.iter_custom(|n| run(&tokio, &stub, &fired, n, || Call::Ping, false))
    });
    g.bench_function("method_ask", |b| {
        b.iter_custom(|n| {
            tokio.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    stub.ask(Ping).await.expect("ask");
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("call_then_background_result", |b| {
        b.iter_custom(|n| run(&tokio, &stub, &fired, n, || Call::Spawn, true))
    });
    g.bench_function("call_then_alarm_delivery", |b| {
        b.iter_custom(|n| run(&tokio, &stub, &fired, n, || Call::AlarmNow, true))
    });
    g.bench_function("call_then_timer_delivery", |b| {
        b.iter_custom(|n| run(&tokio, &stub, &fired, n, || Call::TimerNow, true))
    });
    g.finish();
    tokio.block_on(runtime.shutdown());
}

/// The busy object: each event asks the [`Probe`] named "limiter".
struct Busy {
    env: Arc<BusyEnv>,
}

/// What the bench and the busy object share.
struct BusyEnv {
    probes: objects::Namespace<Probe>,
    /// Requests whose answer is not used yet (the senders take one before
    /// each call; the object gives it back once the answer is used), so
    /// both variants have the same 64 requests in flight.
    in_flight: tokio::sync::Semaphore,
    /// Answers used so far in this run, and how many the run waits for.
    done: AtomicU64,
    target: AtomicU64,
    all_done: Notify,
}

impl BusyEnv {
    fn used(&self) {
        self.in_flight.add_permits(1);
        if self.done.fetch_add(1, SeqCst) + 1 == self.target.load(SeqCst) {
            self.all_done.notify_one();
        }
    }
}

#[derive(Serialize, Deserialize)]
enum BusyCall {
    Await,
    Spawn,
}

impl Object for Busy {
    type Env = BusyEnv;
    type Call = BusyCall;
    type Reply = ();

    async fn new(_ctx: &mut Context, env: Arc<BusyEnv>) -> Result<Self, BoxError> {
        Ok(Busy { env })
    }

    async fn call(&mut self, ctx: &mut Context, call: BusyCall) -> Result<(), BoxError> {
        let ask = self.env.probes.get_by_name("limiter").ask(Ping);
        match call {
            BusyCall::Await => {
                ask.await?;
                self.env.used();
            }
            BusyCall::Spawn => ctx.spawn(ask, |busy: &mut Busy, _ctx, answer| {
                answer?;
                busy.env.used();
                Ok(())
            })?,
        }
        Ok(())
    }
}

/// Sends `n` events to the busy object, 64 requests in flight, and waits
/// until each one's answer was used.
async fn busy_run(stub: &Stub<Busy>, env: &BusyEnv, n: u64, call: fn() -> BusyCall) -> Duration {
    env.done.store(0, SeqCst);
    env.target.store(n, SeqCst);
    let start = Instant::now();
    let mut calls = futures_util::stream::FuturesUnordered::new();
    for _ in 0..n {
        env.in_flight.acquire().await.expect("semaphore").forget();
        // Kept alive until answered (a dropped call is skipped as
        // abandoned); the answer itself is only `()`.
        calls.push(stub.call(call()));
        while let Some(Some(r)) = calls.next().now_or_never() {
            r.expect("busy call");
        }
    }
    while let Some(r) = calls.next().await {
        r.expect("busy call");
    }
    // The last answer used notifies once per run (a permit if no one
    // waits yet).
    env.all_done.notified().await;
    start.elapsed()
}

fn busy_object(c: &mut Criterion) {
    let tokio = benches::bench_tokio();
    let dir = tempfile::tempdir().expect("temp dir");
    let (runtime, ns) = tokio.block_on(async {
        let runtime = Runtime::builder()
            .data_dir(dir.path())
            .open()
            .expect("open runtime");
        let probes = runtime
            .namespace::<Probe>("probes", Notify::new())
            .expect("namespace");
        let env = BusyEnv {
            probes,
            in_flight: tokio::sync::Semaphore::new(64),
            done: 0.into(),
            target: 0.into(),
            all_done: Notify::new(),
        };
        let ns = runtime.namespace::<Busy>("busy", env).expect("namespace");
        (runtime, ns)
    });
    let stub = ns.get_by_name("room");
    let mut g = c.benchmark_group("busy_object_64_in_flight");
    g.bench_function("answer_awaited_in_handler", |b| {
        b.iter_custom(|n| tokio.block_on(busy_run(&stub, ns.env(), n, || BusyCall::Await)))
    });
    g.bench_function("answer_used_in_background_result", |b| {
        b.iter_custom(|n| tokio.block_on(busy_run(&stub, ns.env(), n, || BusyCall::Spawn)))
    });
    g.finish();
    tokio.block_on(runtime.shutdown());
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = events, busy_object
}
criterion_main!(benches);
