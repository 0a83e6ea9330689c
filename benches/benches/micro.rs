//! Criterion microbenchmarks of the pure, hot logic: the chat demo's wire
//! codecs (dialects A, B and C), room-name parsing and the per-IP rate
//! limit rule; object ids (derive from a name, parse, print); and storage
//! `get`, `list` and uncommitted `put` + `get` through a real [`Runtime`]
//! on LMDB in a temporary directory.
//!
//! Storage figures are timed inside one event (one call to an object), so
//! they exclude the call round trip and the commit.
//!
//! `cargo bench -p benches --bench micro`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_demo::protocol::limit::{RateLimit, RateLimitOptions};
use chat_demo::protocol::{ChatMessage, a, b, c, parse_room};
use criterion::{Criterion, criterion_group, criterion_main};
use objects::BoxError;
use objects::{Context, ListOptions, Namespace, Object, Result, Runtime};
use serde::{Deserialize, Serialize};

/// Keys filled before the read benchmarks.
const FILLED_KEYS: u32 = 1_000;

/// Uncommitted puts between two commits in [`Call::PutGet`], far below
/// what one event may buffer (`objects::MAX_EVENT_BYTES`).
const PUTS_PER_COMMIT: u64 = 10_000;

/// A key-value object whose calls time storage operations from inside one
/// event and return the nanoseconds spent.
struct Kv;

#[derive(Serialize, Deserialize)]
enum Call {
    /// Commit [`FILLED_KEYS`] keys of 100 bytes each.
    Fill,
    /// `n` reads of committed keys.
    Gets(u64),
    /// `n` lists of 100 committed entries.
    Lists(u64),
    /// `n` times: put a key, then read it back from the overlay.
    PutGet(u64),
}

fn key(i: u64) -> String {
    format!("key{:06}", i % u64::from(FILLED_KEYS))
}

impl Object for Kv {
    type Env = ();
    type Call = Call;
    type Reply = u64;

    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
        Ok(Kv)
    }

    async fn call(&mut self, ctx: &mut Context, call: Call) -> Result<u64, BoxError> {
        let storage = ctx.storage();
        let mut spent = Duration::ZERO;
        match call {
            Call::Fill => {
                for i in 0..FILLED_KEYS {
                    storage.put_bytes(&key(u64::from(i)), &[1u8; 100])?;
                }
            }
            Call::Gets(n) => {
                let keys: Vec<String> = (0..1024).map(|i| key(i * 7)).collect();
                let start = Instant::now();
                for i in 0..n {
                    let k = &keys[(i % 1024) as usize];
                    black_box(storage.get_bytes(black_box(k))?);
                }
                spent = start.elapsed();
            }
            Call::Lists(n) => {
                let options: Vec<ListOptions> = (0..16u64)
                    .map(|i| ListOptions::new().start(key(i * 53)).limit(100))
                    .collect();
                let start = Instant::now();
                for i in 0..n {
                    let opts = &options[(i % 16) as usize];
                    black_box(storage.list_bytes(black_box(opts))?);
                }
                spent = start.elapsed();
            }
            Call::PutGet(n) => {
                let keys: Vec<String> = (0..16).map(|i| format!("tmp{i:02}")).collect();
                let value = [2u8; 100];
                let mut done = 0;
                while done < n {
                    let chunk = (n - done).min(PUTS_PER_COMMIT);
                    let start = Instant::now();
                    for i in 0..chunk {
                        let k = &keys[(i % 16) as usize];
                        storage.put_bytes(black_box(k), black_box(&value))?;
                        black_box(storage.get_bytes(black_box(k))?);
                    }
                    spent += start.elapsed();
                    done += chunk;
                    // Keep the event's buffer small; not timed.
                    storage.sync().await?;
                }
            }
        }
        Ok(u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX))
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

fn chat(n: u64, plain: bool) -> ChatMessage {
    ChatMessage {
        name: "alice".to_owned(),
        message: format!("hello, world! this is message number {n}"),
        timestamp: 1_700_000_000_000 + n,
        plain,
        ..ChatMessage::default()
    }
}

fn protocol(c: &mut Criterion) {
    let mut g = c.benchmark_group("protocol");

    // Dialect A.
    let hello = r#"{"name":"alice","ext":["presence","history"]}"#;
    g.bench_function("a/decode_hello", |bench| {
        bench.iter(|| a::decode(black_box(hello), false))
    });
    let message = r#"{"message":"hello, world! this is a chat message of average length"}"#;
    g.bench_function("a/decode_message", |bench| {
        bench.iter(|| a::decode(black_box(message), true))
    });
    let history = r#"{"history":{"before":1700000000000,"limit":50}}"#;
    g.bench_function("a/decode_history_request", |bench| {
        bench.iter(|| a::decode(black_box(history), true))
    });
    let one = chat(1, false);
    g.bench_function("a/encode_chat", |bench| {
        bench.iter(|| a::encode_chat(black_box(&one)))
    });
    g.bench_function("a/encode_joined", |bench| {
        bench.iter(|| a::encode_joined(black_box("alice")))
    });
    let users: Vec<String> = (0..10).map(|i| format!("user{i}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    g.bench_function("a/encode_presence_10_users", |bench| {
        bench.iter(|| a::encode_presence(black_box(12), black_box(&users)))
    });
    let page: Vec<ChatMessage> = (0..50).map(|n| chat(n, false)).collect();
    g.bench_function("a/encode_history_page_50", |bench| {
        bench.iter(|| a::encode_history_page(black_box(&page), true, a::Extensions::default()))
    });

    // Dialect B.
    let text = "hello, world! this is a chat message of average length";
    g.bench_function("b/decode", |bench| {
        bench.iter(|| b::decode(black_box(text)))
    });
    g.bench_function("b/encode_chat", |bench| {
        bench.iter(|| b::encode_chat(black_box(&one)))
    });

    // Dialect C.
    let framed = r#"{"message":"  hello, world! this is a chat message of average length  "}"#;
    g.bench_function("c/decode", |bench| {
        bench.iter(|| c::decode(black_box(framed)))
    });
    g.bench_function("c/encode_chat", |bench| {
        bench.iter(|| c::encode_chat(black_box(&one)))
    });
    g.bench_function("c/encode_joined", |bench| {
        bench.iter(|| c::encode_joined(black_box("alice")))
    });

    // Room names.
    g.bench_function("parse_room/named", |bench| {
        bench.iter(|| parse_room(black_box("general")))
    });
    let private = "0123456789abcdef".repeat(4);
    g.bench_function("parse_room/private_id", |bench| {
        bench.iter(|| parse_room(black_box(&private)))
    });
    let too_long = "x".repeat(40);
    g.bench_function("parse_room/too_long", |bench| {
        bench.iter(|| parse_room(black_box(&too_long)))
    });

    // The rate limit rule.
    let options = RateLimitOptions::default();
    g.bench_function("limit/check_allowed", |bench| {
        let mut limit = RateLimit::new();
        let mut now = 0u64;
        bench.iter(|| {
            now += options.per_message_ms;
            limit.check(black_box(now), &options)
        })
    });
    g.bench_function("limit/check_refused", |bench| {
        let mut limit = RateLimit::new();
        while limit.check(0, &options).is_ok() {}
        bench.iter(|| limit.check(black_box(0), &options))
    });
    g.finish();
}

/// A runtime on a fresh LMDB store with [`FILLED_KEYS`] committed keys in
/// one object.
struct Store {
    rt: tokio::runtime::Runtime,
    runtime: Runtime,
    ns: Namespace<Kv>,
    _dir: tempfile::TempDir,
}

impl Store {
    fn open() -> Self {
        let rt = benches::bench_tokio();
        let dir = tempfile::tempdir().expect("temp dir");
        let (runtime, ns) = rt.block_on(async {
            let runtime = Runtime::builder()
                .data_dir(dir.path().join("db"))
                .open()
                .expect("open runtime");
            let ns = runtime.namespace::<Kv>("kv", ()).expect("namespace");
            ns.get_by_name("bench")
                .call(Call::Fill)
                .await
                .expect("fill");
            (runtime, ns)
        });
        Store {
            rt,
            runtime,
            ns,
            _dir: dir,
        }
    }

    /// Runs `call` on the filled object; the time it measured inside.
    fn timed(&self, call: Call) -> Duration {
        let stub = self.ns.get_by_name("bench");
        let ns = self.rt.block_on(stub.call(call)).expect("timed call");
        Duration::from_nanos(ns)
    }

    fn close(self) {
        let Store { rt, runtime, .. } = self;
        rt.block_on(runtime.shutdown());
    }
}

fn ids_and_storage(c: &mut Criterion) {
    let store = Store::open();

    let mut g = c.benchmark_group("object_id");
    g.bench_function("id_from_name", |bench| {
        bench.iter(|| store.ns.id_from_name(black_box("room-general")))
    });
    let id = store.ns.id_from_name("never-stored");
    let hex = id.to_hex();
    g.bench_function("id_from_string", |bench| {
        bench.iter(|| store.ns.id_from_string(black_box(&hex)))
    });
    g.bench_function("to_hex", |bench| bench.iter(|| black_box(&id).to_hex()));
    g.bench_function("to_string", |bench| {
        bench.iter(|| black_box(&id).to_string())
    });
    g.finish();

    let mut g = c.benchmark_group("storage");
    g.bench_function("get_committed", |bench| {
        bench.iter_custom(|iters| store.timed(Call::Gets(iters)))
    });
    g.bench_function("list_100", |bench| {
        bench.iter_custom(|iters| store.timed(Call::Lists(iters)))
    });
    g.bench_function("put_get_uncommitted", |bench| {
        bench.iter_custom(|iters| store.timed(Call::PutGet(iters)))
    });
    g.finish();

    store.close();
}

criterion_group! {
    name = benches;
    config = config();
    targets = protocol, ids_and_storage
}
criterion_main!(benches);
