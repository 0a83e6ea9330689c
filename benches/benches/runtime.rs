//! Stub round trip to a live object beside a bare tokio mpsc + oneshot round
//! trip (the floor), and activation of cold objects; on criterion, so each
//! figure comes with its spread and a comparison with the last run.
//!
//! `cargo bench -p benches --bench runtime`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use objects::BoxError;
use objects::{Context, Namespace, Object, Result, Runtime};
use tokio::sync::{mpsc, oneshot};

struct Echo;

impl Object for Echo {
    type Env = ();
    type Call = u64;
    type Reply = u64;
    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
        Ok(Echo)
    }
    async fn call(&mut self, _: &mut Context, x: u64) -> Result<u64, BoxError> {
        Ok(x + 1)
    }
}

/// A two-worker tokio runtime (the machine has two cores) with an objects
/// runtime on a fresh data dir.
struct Setup {
    tokio: tokio::runtime::Runtime,
    runtime: Runtime,
    ns: Namespace<Echo>,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let tokio = benches::bench_tokio();
        let dir = tempfile::tempdir().expect("temp dir");
        let (runtime, ns) = tokio.block_on(async {
            let runtime = Runtime::builder()
                .data_dir(dir.path())
                .open()
                .expect("open runtime");
            let ns = runtime.namespace::<Echo>("echo", ()).expect("namespace");
            (runtime, ns)
        });
        Setup {
            tokio,
            runtime,
            ns,
            _dir: dir,
        }
    }
}

fn round_trips(c: &mut Criterion) {
    let setup = Setup::new();
    let mut g = c.benchmark_group("round_trip");

    // The floor: a task answering on mpsc + oneshot, as a stub's call does
    // at least.
    let (tx, mut rx) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(1024);
    setup.tokio.spawn(async move {
        while let Some((x, r)) = rx.recv().await {
            let _ = r.send(x + 1);
        }
    });
    g.bench_function("bare_mpsc_oneshot", |b| {
        b.iter_custom(|iters| {
            setup.tokio.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let (r, w) = oneshot::channel();
                    tx.send((i, r)).await.expect("floor task");
                    w.await.expect("floor reply");
                }
                start.elapsed()
            })
        })
    });

    let stub = setup.ns.get_by_name("hot");
    setup
        .tokio
        .block_on(async { stub.call(0).await })
        .expect("activate");
    g.bench_function("stub_call_live_object", |b| {
        b.iter_custom(|iters| {
            setup.tokio.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    stub.call(i).await.expect("call");
                }
                start.elapsed()
            })
        })
    });

    // Each iteration wakes an object never seen before: activation (an
    // LMDB read of its catalog entry, the task, the instance) plus the call.
    let next = AtomicU64::new(0);
    g.bench_function("activate_cold_object_and_call", |b| {
        b.iter_custom(|iters| {
            setup.tokio.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    setup
                        .ns
                        .get_by_name(&format!("cold-{n}"))
                        .call(0)
                        .await
                        .expect("call");
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    setup.tokio.block_on(setup.runtime.shutdown());
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = round_trips
}
criterion_main!(benches);
