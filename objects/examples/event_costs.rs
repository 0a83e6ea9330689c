//! What one event costs, by kind: a plain `call`, a typed method (`ask`),
//! a background result (`Context::spawn` until its continuation ran), an
//! alarm delivery (`set_alarm(now)` until the handler ran) and a timer
//! delivery (`timers().schedule_at(now)` until the handler ran). Prints the
//! mean over many runs, one after another on one object.
//!
//! ```text
//! cargo run --release -p objects --example event_costs
//! ```
//!
//! The call, method and background events write nothing, so no commit
//! (and no fsync) is in their figure: they measure the runtime's own path.
//! An alarm or a timer needs two commits (setting it, and clearing it with
//! the handler's run), each synced to disk, so their figures are mostly
//! fsync; a timer also reads and writes its records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use objects::{AlarmInfo, BoxError, Context, Handler, Method, Object, Runtime, Timer};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

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
        self.fired().await
    }

    async fn timer(&mut self, _ctx: &mut Context, _timer: Timer) -> Result<(), BoxError> {
        self.fired().await
    }
}

impl Probe {
    async fn fired(&mut self) -> Result<(), BoxError> {
        self.env.notify_one();
        Ok(())
    }
}

impl Handler<Ping> for Probe {
    async fn handle(&mut self, _ctx: &mut Context, _: Ping) -> Result<u8, BoxError> {
        Ok(1)
    }
}

fn report(what: &str, n: u32, took: Duration) {
    println!(
        "{what:<20} {n:>6} runs  {:>9.1} µs each",
        took.as_secs_f64() * 1e6 / f64::from(n)
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let rt = Runtime::builder().data_dir(dir.path()).open()?;
    let ns = rt.namespace::<Probe>("probes", Notify::new())?;
    let stub = ns.get_by_name("p");
    stub.call(Call::Ping).await?; // activate

    const N: u32 = 20_000;
    let t = Instant::now();
    for _ in 0..N {
        stub.call(Call::Ping).await?;
    }
    report("call", N, t.elapsed());

    let t = Instant::now();
    for _ in 0..N {
        stub.ask(Ping).await?;
    }
    report("method (ask)", N, t.elapsed());

    let t = Instant::now();
    for _ in 0..N {
        stub.call(Call::Spawn).await?;
        ns.env().notified().await;
    }
    report("call + background", N, t.elapsed());

    const A: u32 = 200;
    let t = Instant::now();
    for _ in 0..A {
        stub.call(Call::AlarmNow).await?;
        ns.env().notified().await;
    }
    report("call + alarm", A, t.elapsed());

    let t = Instant::now();
    for _ in 0..A {
        stub.call(Call::TimerNow).await?;
        ns.env().notified().await;
    }
    report("call + timer", A, t.elapsed());
    rt.shutdown().await;
    Ok(())
}
