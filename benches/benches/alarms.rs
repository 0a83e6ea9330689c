//! Alarms fired per second with 100,000 due at once, and memory per pending
//! alarm. A plain program, not criterion: the figures are one burst of
//! 100,000 alarms loaded from disk and the process's memory, neither of
//! which criterion's repeated small iterations can measure; run it a few
//! times for the spread.
//!
//! `cargo bench -p benches --bench alarms`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use benches::{header, report, rss_bytes};
use objects::BoxError;
use objects::{AlarmInfo, Context, Object, Result, Runtime};
use tokio::sync::Notify;

#[derive(Default)]
struct Env {
    fired: AtomicU64,
    target: AtomicU64,
    done: Notify,
}

struct Job {
    env: Arc<Env>,
}

impl Object for Job {
    type Env = Env;
    type Call = u64;
    type Reply = ();
    async fn new(_: &mut Context, env: Arc<Env>) -> Result<Self, BoxError> {
        Ok(Job { env })
    }
    async fn call(&mut self, ctx: &mut Context, at: u64) -> Result<(), BoxError> {
        ctx.storage()
            .set_alarm(std::time::UNIX_EPOCH + std::time::Duration::from_millis(at))?;
        Ok(())
    }
    async fn alarm(&mut self, _: &mut Context, _: AlarmInfo) -> Result<(), BoxError> {
        let n = self.env.fired.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.env.target.load(Ordering::SeqCst) {
            self.env.done.notify_one();
        }
        Ok(())
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    header("alarms");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let runtime = Runtime::builder()
            .data_dir(dir.path())
            .idle_timeout(std::time::Duration::from_secs(1))
            .open()?;
        let ns = runtime.namespace::<Job>("jobs", Env::default())?;
        let n: u64 = 100_000;
        ns.env().target.store(n, Ordering::SeqCst);
        let far = 4_000_000_000_000u64;
        let before = rss_bytes().unwrap_or(0);
        for chunk in 0..n / 1000 {
            let calls: Vec<_> = (chunk * 1000..(chunk + 1) * 1000)
                .map(|i| ns.get_by_name(&format!("j{i}")).call(far + i))
                .collect();
            for c in calls {
                c.await?;
            }
        }
        // Let the objects be evicted so only the schedule holds the alarms.
        while ns.live_count() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let after = rss_bytes().unwrap_or(0);
        report(
            "RSS growth per pending alarm (objects evicted)",
            after.saturating_sub(before) as f64 / n as f64,
            "bytes",
        );
        drop(ns);
        runtime.shutdown().await;
        drop(runtime);

        // Reopen with a clock past every alarm: they load and all fire.
        let clock = Arc::new(objects::TokioClock::starting_at(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(far + n + 1),
        ));
        let runtime = Runtime::builder()
            .data_dir(dir.path())
            .clock(clock)
            .open()?;
        let env = Env::default();
        env.target.store(n, Ordering::SeqCst);
        let start = Instant::now();
        let ns = runtime.namespace::<Job>("jobs", env)?;
        let done = ns.env().done.notified();
        if ns.env().fired.load(Ordering::SeqCst) < n {
            done.await;
        }
        let secs = start.elapsed().as_secs_f64();
        report(
            "alarms fired, 100,000 due at once",
            n as f64 / secs,
            "alarms/s",
        );
        runtime.shutdown().await;
        Ok(())
    })
}
