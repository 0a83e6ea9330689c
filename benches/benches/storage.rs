//! Durable writes: one `fdatasync` per write (the floor a naive store
//! pays), one object's write from call to durable reply, and small writes
//! from 1 to 1,000 concurrent objects (group commit: many objects' writes
//! share one fsync). On criterion, so each figure comes with its spread and
//! a comparison with the last run. Reads are in the `micro` bench.
//!
//! `cargo bench -p benches --bench storage`

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use objects::BoxError;
use objects::{Context, Namespace, Object, Result, Runtime};

/// Puts one 100-byte value per call (one of 64 keys, so the store does not
/// grow with the iteration count).
struct Writer {
    n: u64,
}

impl Object for Writer {
    type Env = ();
    type Call = ();
    type Reply = ();
    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
        Ok(Writer { n: 0 })
    }
    async fn call(&mut self, ctx: &mut Context, (): ()) -> Result<(), BoxError> {
        self.n += 1;
        ctx.storage()
            .put_bytes(&format!("k{}", self.n % 64), &[7u8; 100])?;
        Ok(())
    }
}

/// A two-worker tokio runtime (the machine has two cores) with an objects
/// runtime on a fresh data dir, and a directory for the fsync floor.
struct Setup {
    tokio: tokio::runtime::Runtime,
    runtime: Runtime,
    ns: Namespace<Writer>,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let tokio = benches::bench_tokio();
        let dir = tempfile::tempdir().expect("temp dir");
        let (runtime, ns) = tokio.block_on(async {
            let runtime = Runtime::builder()
                .data_dir(dir.path().join("db"))
                .open()
                .expect("open runtime");
            let ns = runtime.namespace::<Writer>("kv", ()).expect("namespace");
            (runtime, ns)
        });
        Setup {
            tokio,
            runtime,
            ns,
            dir,
        }
    }
}

fn fsync_floor(c: &mut Criterion, setup: &Setup) {
    let mut g = c.benchmark_group("fdatasync_per_write");
    for size in [100usize, 4096] {
        let mut f = std::fs::File::create(setup.dir.path().join(format!("fsync-{size}.bin")))
            .expect("floor file");
        let buf = vec![7u8; size];
        g.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                f.write_all(&buf).expect("write");
                f.sync_data().expect("fdatasync");
            })
        });
    }
    g.finish();
}

fn one_object(c: &mut Criterion, setup: &Setup) {
    let stub = setup.ns.get_by_name("latency");
    setup
        .tokio
        .block_on(async { stub.call(()).await })
        .expect("activate");
    c.bench_function("one_object_write_to_durable_reply", |b| {
        b.iter_custom(|iters| {
            setup.tokio.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    stub.call(()).await.expect("write");
                }
                start.elapsed()
            })
        })
    });
}

fn group_commit(c: &mut Criterion, setup: &Setup) {
    let mut g = c.benchmark_group("durable_writes_concurrent_objects");
    for objects in [1u64, 10, 100, 1000] {
        let stubs: Vec<_> = (0..objects)
            .map(|o| setup.ns.get_by_name(&format!("w{objects}-{o}")))
            .collect();
        // One iteration is one write by every object at once; the
        // throughput is in writes.
        g.throughput(Throughput::Elements(objects));
        g.bench_function(BenchmarkId::from_parameter(objects), |b| {
            b.iter_custom(|iters| {
                setup.tokio.block_on(async {
                    let start = Instant::now();
                    let tasks: Vec<_> = stubs
                        .iter()
                        .map(|stub| {
                            let stub = stub.clone();
                            tokio::spawn(async move {
                                for _ in 0..iters {
                                    stub.call(()).await.expect("write");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("writer task");
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn storage(c: &mut Criterion) {
    let setup = Setup::new();
    fsync_floor(c, &setup);
    one_object(c, &setup);
    group_commit(c, &setup);
    setup.tokio.block_on(setup.runtime.shutdown());
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
    targets = storage
}
criterion_main!(benches);
