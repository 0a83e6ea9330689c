//! Stub round trip to a live object beside a bare tokio mpsc + oneshot round
//! trip (the floor), and activation of cold objects.
//!
//! `cargo bench -p benches --bench runtime`

use std::sync::Arc;
use std::time::Instant;

use benches::{header, report};
use objects::{Context, Object, Result, Runtime};
use tokio::sync::{mpsc, oneshot};

struct Echo;

impl Object for Echo {
    type Env = ();
    type Call = u64;
    type Reply = u64;
    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self> {
        Ok(Echo)
    }
    async fn call(&mut self, _: &mut Context, x: u64) -> Result<u64> {
        Ok(x + 1)
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    header("runtime");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let runtime = Runtime::builder().data_dir(dir.path()).open()?;
        let ns = runtime.namespace::<Echo>("echo", ())?;
        let n: u32 = 200_000;

        // Bare floor: a task answering on mpsc + oneshot.
        let (tx, mut rx) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(1024);
        tokio::spawn(async move {
            while let Some((x, r)) = rx.recv().await {
                let _ = r.send(x + 1);
            }
        });
        let start = Instant::now();
        for i in 0..u64::from(n) {
            let (r, w) = oneshot::channel();
            tx.send((i, r)).await?;
            w.await?;
        }
        let bare = start.elapsed() / n;

        let stub = ns.get_by_name("hot");
        stub.call(0).await?;
        let start = Instant::now();
        for i in 0..u64::from(n) {
            stub.call(i).await?;
        }
        let ours = start.elapsed() / n;
        report("bare mpsc+oneshot round trip", bare.as_nanos() as f64, "ns");
        report(
            "stub round trip to a live object",
            ours.as_nanos() as f64,
            "ns",
        );
        report(
            "ratio (goal <= 2)",
            ours.as_secs_f64() / bare.as_secs_f64(),
            "x",
        );

        let cold: u32 = 20_000;
        let start = Instant::now();
        for i in 0..cold {
            ns.get_by_name(&format!("cold-{i}")).call(0).await?;
        }
        report(
            "activation of a cold object + first call",
            (start.elapsed() / cold).as_nanos() as f64,
            "ns",
        );
        runtime.shutdown().await;
        Ok(())
    })
}
