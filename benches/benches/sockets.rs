//! Server memory per idle hibernated WebSocket at 10,000 sockets, and the
//! cost of broadcasting one message to 1,000 sockets (time until every
//! client has it, as p50, p90, p99 and max over 200 rounds; allocations on
//! the server side). Clients run in a child process (this binary again), so
//! their memory is not counted. A plain program, not criterion: criterion
//! cannot measure memory or a child process's sockets.
//!
//! `cargo bench -p benches --bench sockets`

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::{header, report, rss_bytes};
use objects::BoxError;
use objects::{Context, Error, Message, Object, Request, Response, Result, Runtime, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts allocations, to report allocations per broadcast.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CHILD: &str = "BENCH_SOCKETS_CHILD";

struct Hub;

impl Object for Hub {
    type Env = ();
    type Call = String;
    type Reply = usize;
    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
        Ok(Hub)
    }
    async fn fetch(&mut self, ctx: &mut Context, mut req: Request) -> Result<Response, BoxError> {
        let (_ws, resp) = ctx.accept_websocket(&mut req, &[]).map_err(Error::from)?;
        Ok(resp)
    }
    async fn call(&mut self, ctx: &mut Context, msg: String) -> Result<usize, BoxError> {
        let all = ctx.websockets(None);
        let n = all.len();
        if !msg.is_empty() {
            ctx.broadcast(all, msg);
        }
        Ok(n)
    }
    async fn websocket_message(
        &mut self,
        _: &mut Context,
        _: WebSocket,
        _: Message,
    ) -> Result<(), BoxError> {
        Ok(())
    }
}

type R<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Child: `addr room count`; connects, prints "ready", then reads one frame
/// per socket and prints "got".
fn child(spec: &str) -> R<()> {
    let mut parts = spec.split(' ');
    let addr = parts.next().unwrap_or_default().to_string();
    let room = parts.next().unwrap_or_default().to_string();
    let n: usize = parts.next().unwrap_or("0").parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut socks = Vec::with_capacity(n);
        for _ in 0..n {
            let mut s = tokio::net::TcpStream::connect(&addr).await?;
            let req = format!(
                "GET /{room} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await?;
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await?;
                head.push(b[0]);
            }
            socks.push(s);
        }
        println!("ready");
        loop {
            for s in &mut socks {
                let mut h = [0u8; 2];
                s.read_exact(&mut h).await?;
                let mut payload = vec![0u8; usize::from(h[1] & 0x7f)];
                s.read_exact(&mut payload).await?;
            }
            println!("got");
        }
    })
}

struct Clients {
    lines: std::sync::mpsc::Receiver<String>,
    child: std::process::Child,
}

impl Clients {
    fn spawn(addr: std::net::SocketAddr, room: &str, n: usize) -> R<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .env(CHILD, format!("{addr} {room} {n}"))
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Ok(Clients { lines, child })
    }

    async fn wait(&self, what: &str) -> R<()> {
        loop {
            match self.lines.try_recv() {
                Ok(l) if l == what => return Ok(()),
                Ok(_) => {}
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() -> R<()> {
    if let Ok(spec) = std::env::var(CHILD) {
        // The parent kills the child when done; a broken read is the end.
        let _ = child(&spec);
        return Ok(());
    }
    header("sockets");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let runtime = Runtime::builder()
            .data_dir(dir.path())
            .hibernation_timeout(Duration::from_secs(1))
            .open()?;
        let hubs = runtime.namespace::<Hub>("hubs", ())?;
        let ns = hubs.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let ns = ns.clone();
            async move {
                let room = req.uri().path().trim_start_matches('/').to_string();
                let req = match objects::buffer_request(req, 1024).await {
                    Ok(req) => req,
                    Err(e) => {
                        return axum::response::Response::new(axum::body::Body::from(
                            e.to_string(),
                        ));
                    }
                };
                match ns.get_by_name(&room).fetch(req).await {
                    Ok(r) => r.map(axum::body::Body::from),
                    Err(e) => axum::response::Response::new(axum::body::Body::from(e.to_string())),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });

        // Broadcast to 1,000 sockets.
        let small = Clients::spawn(addr, "small", 1000)?;
        small.wait("ready").await?;
        let hub = hubs.get_by_name("small");
        let rounds = 200u32;
        let mut times = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut allocs = 0u64;
        for i in 0..rounds {
            let msg = format!("message {i:04}");
            let a0 = ALLOCS.load(Ordering::Relaxed);
            let t = Instant::now();
            hub.call(msg).await?;
            small.wait("got").await?;
            times.saturating_record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
            allocs += ALLOCS.load(Ordering::Relaxed) - a0;
        }
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            report(
                &format!("broadcast to 1,000 sockets, until all received, {name}"),
                times.value_at_quantile(q) as f64,
                "us",
            );
        }
        report(
            "broadcast to 1,000 sockets, until all received, max",
            times.max() as f64,
            "us",
        );
        report(
            "  server allocations per broadcast",
            allocs as f64 / f64::from(rounds),
            "allocs",
        );
        drop(small);

        // Idle hibernated sockets.
        let before = rss_bytes().unwrap_or(0);
        let n = 10_000usize;
        let big = Clients::spawn(addr, "big", n)?;
        big.wait("ready").await?;
        while hubs.live_count() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = rss_bytes().unwrap_or(0);
        report(
            "server RSS per idle hibernated socket (10,000, goal <= 8 KiB)",
            after.saturating_sub(before) as f64 / n as f64,
            "bytes",
        );
        drop(big);
        runtime.shutdown().await;
        Ok(())
    })
}
