//! Durable small writes per second from 1 to 1,000 concurrent objects
//! (group commit) beside one fsync per write, one object's commit latency
//! beside one `fdatasync`, and read throughput.
//!
//! `cargo bench -p benches --bench storage`

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{header, report};
use objects::{Context, ListOptions, Object, Result, Runtime};
use serde::{Deserialize, Serialize};

struct Kv {
    n: u64,
}

#[derive(Serialize, Deserialize)]
enum Call {
    /// Put one 100-byte value.
    Write,
    /// Fill `n` keys.
    Fill(u32),
    /// `n` point reads; returns ns spent.
    Gets(u32),
    /// `n` lists of 100 entries; returns ns spent.
    Lists(u32),
}

impl Object for Kv {
    type Env = ();
    type Call = Call;
    type Reply = u64;
    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self> {
        Ok(Kv { n: 0 })
    }
    async fn call(&mut self, ctx: &mut Context, call: Call) -> Result<u64> {
        let s = ctx.storage();
        match call {
            Call::Write => {
                self.n += 1;
                s.put_bytes(&format!("k{}", self.n % 64), &[7u8; 100])?;
                Ok(0)
            }
            Call::Fill(n) => {
                for i in 0..n {
                    s.put_bytes(&format!("key{i:06}"), &[1u8; 100])?;
                }
                Ok(0)
            }
            Call::Gets(n) => {
                let t = Instant::now();
                for i in 0..n {
                    std::hint::black_box(s.get_bytes(&format!("key{:06}", i % 1000))?);
                }
                Ok(t.elapsed().as_nanos() as u64)
            }
            Call::Lists(n) => {
                let t = Instant::now();
                for i in 0..n {
                    let start = format!("key{:06}", (i * 7) % 900);
                    std::hint::black_box(
                        s.list_bytes(&ListOptions::new().start(start).limit(100))?,
                    );
                }
                Ok(t.elapsed().as_nanos() as u64)
            }
        }
    }
}

type R<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Writes of `size` bytes, each followed by its own fdatasync.
fn fsync_per_write(dir: &std::path::Path, size: usize, n: u32) -> R<Duration> {
    let mut f = std::fs::File::create(dir.join("fsync.bin"))?;
    let buf = vec![7u8; size];
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(&buf)?;
        f.sync_data()?;
    }
    Ok(start.elapsed() / n)
}

fn main() -> R<()> {
    header("storage");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let runtime = Runtime::builder().data_dir(dir.path().join("db")).open()?;
        let ns = runtime.namespace::<Kv>("kv", ())?;

        let fsync = fsync_per_write(dir.path(), 100, 500)?;
        let fsync_rate = 1.0 / fsync.as_secs_f64();
        report("one fdatasync per 100-byte write", fsync_rate, "writes/s");

        for objects in [1u32, 10, 100, 1000] {
            let per_object = (4000 / objects).max(4);
            let start = Instant::now();
            let mut tasks = Vec::new();
            for o in 0..objects {
                let stub = ns.get_by_name(&format!("w{objects}-{o}"));
                tasks.push(tokio::spawn(async move {
                    for _ in 0..per_object {
                        stub.call(Call::Write).await?;
                    }
                    Ok::<_, objects::Error>(())
                }));
            }
            for t in tasks {
                t.await??;
            }
            let total = f64::from(objects * per_object);
            let rate = total / start.elapsed().as_secs_f64();
            report(
                &format!("durable writes, {objects} concurrent objects"),
                rate,
                "writes/s",
            );
            if objects == 1000 {
                report(
                    "  group commit vs one fsync per write (goal >= 50)",
                    rate / fsync_rate,
                    "x",
                );
            }
        }

        // Latency of one object's commit beside one fdatasync of a page.
        let page = fsync_per_write(dir.path(), 4096, 300)?;
        let stub = ns.get_by_name("latency");
        stub.call(Call::Write).await?;
        let n = 300;
        let start = Instant::now();
        for _ in 0..n {
            stub.call(Call::Write).await?;
        }
        let commit = start.elapsed() / n;
        report("fdatasync of a 4 KiB write", page.as_micros() as f64, "us");
        report(
            "one object's write, call to durable reply",
            commit.as_micros() as f64,
            "us",
        );
        report(
            "  ratio (goal <= 2)",
            commit.as_secs_f64() / page.as_secs_f64(),
            "x",
        );

        let reader = ns.get_by_name("reader");
        reader.call(Call::Fill(1000)).await?;
        let n = 200_000;
        let ns_spent = reader.call(Call::Gets(n)).await?;
        report(
            "get (committed, 1,000 keys)",
            f64::from(n) / (ns_spent as f64 / 1e9),
            "gets/s",
        );
        let n = 5_000;
        let ns_spent = reader.call(Call::Lists(n)).await?;
        report(
            "list of 100 entries",
            f64::from(n) / (ns_spent as f64 / 1e9),
            "lists/s",
        );
        runtime.shutdown().await;
        Ok(())
    })
}
