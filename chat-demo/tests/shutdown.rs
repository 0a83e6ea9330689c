//! The binary's shutdown sequence on SIGTERM (docs/operations.md,
//! "Stopping"): stop accepting, close WebSockets with 1001, drain in-flight
//! HTTP requests, stop the runtime; each step bounded by its flag.

#![cfg(unix)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Safety net for every wait; a passing test never reaches it.
const PATIENCE: Duration = Duration::from_secs(30);

/// The server as a child process, with its stderr lines to wait on.
struct Server {
    child: Child,
    addr: String,
    log: mpsc::UnboundedReceiver<String>,
    /// Every stderr line read so far.
    seen: Vec<String>,
}

impl Server {
    async fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-demo"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chat-demo");
        let stdout = child.stdout.take().expect("stdout");
        let first = tokio::time::timeout(PATIENCE, BufReader::new(stdout).lines().next_line())
            .await
            .expect("starts in time")
            .expect("read stdout")
            .expect("a line");
        let addr = first
            .strip_prefix("chat-demo listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();
        let (tx, log) = mpsc::unbounded_channel();
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let _ = tx.send(line);
            }
        });
        Server {
            child,
            addr,
            log,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `text`.
    async fn logged(&mut self, text: &str) {
        if self.seen.iter().any(|l| l.contains(text)) {
            return;
        }
        let found = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = self.log.recv().await {
                let hit = line.contains(text);
                self.seen.push(line);
                if hit {
                    return true;
                }
            }
            false
        })
        .await
        .expect("logged in time");
        assert!(found, "never logged {text:?}; log: {:#?}", self.seen);
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("pid").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to end; its exit status and whole log.
    async fn exit(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("exits in time")
            .expect("wait");
        while let Ok(Some(line)) = tokio::time::timeout(PATIENCE, self.log.recv()).await {
            self.seen.push(line);
        }
        (status, self.seen)
    }
}

/// Reads what `stream` sends until it closes.
async fn read_to_end(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out))
        .await
        .expect("closed in time")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_drains_a_request_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), &[]).await;

    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/api/room/general/websocket",
        server.addr
    ))
    .await
    .expect("connect");
    ws.send(Message::text(r#"{"name":"alice"}"#))
        .await
        .expect("hello");

    // A request in flight: an upgrade whose body is still on its way. The
    // 100 Continue says the handler is reading it.
    let mut slow = TcpStream::connect(&server.addr).await.expect("connect");
    slow.write_all(
        b"GET /room/slow/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Expect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .await
    .expect("head");
    let mut continued = [0u8; 25];
    tokio::time::timeout(PATIENCE, slow.read_exact(&mut continued))
        .await
        .expect("100 in time")
        .expect("read");
    assert_eq!(&continued, b"HTTP/1.1 100 Continue\r\n\r\n");

    server.terminate();
    match tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("expected a Close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time")
    {
        Some(frame) => assert_eq!(u16::from(frame.code), 1001),
        None => panic!("a Close frame without a code"),
    }
    server.logged("every WebSocket closed with 1001").await;

    // The drain waits for the request: its body arrives now, and it gets a
    // whole answer (the runtime takes no new sockets any more).
    slow.write_all(b"abcd").await.expect("body");
    let answer = read_to_end(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.ends_with("The server is shutting down."), "{answer}");

    let (status, log) = server.exit().await;
    assert!(status.success(), "{status}; log: {log:#?}");
    let order = [
        "no new connections",
        "every WebSocket closed with 1001",
        "in-flight HTTP requests done",
        "stopped",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|text| {
            log.iter()
                .position(|l| l.contains(text))
                .unwrap_or_else(|| panic!("{text:?} not logged: {log:#?}"))
        })
        .collect();
    assert!(positions.is_sorted(), "steps out of order: {log:#?}");
}

#[tokio::test]
async fn a_runtime_stuck_on_storage_is_left_after_its_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), &["--shutdown-runtime-timeout-secs", "1"]).await;

    // Another process takes LMDB's write lock and keeps it, as a hung disk
    // would: every commit of the server waits from now on.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (locked, is_locked) = tokio::sync::oneshot::channel();
    let path = dir.path().to_path_buf();
    let holder = std::thread::spawn(move || {
        // SAFETY: the test only takes the write lock; it writes nothing.
        #[allow(unsafe_code)]
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .map_size(objects::StoreOptions::default().max_size)
                .max_dbs(8)
                .open(&path)
        }
        .expect("open the store");
        let txn = env.write_txn().expect("write lock");
        let _ = locked.send(());
        let _ = released.recv();
        drop(txn);
    });
    is_locked.await.expect("locked");

    // /readyz writes through an object: its commit waits on the lock, so
    // the probe gives up (after its own 5 s) while the object's event is
    // still waiting.
    let mut probe = TcpStream::connect(&server.addr).await.expect("connect");
    probe
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let answer = read_to_end(&mut probe).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("did not commit"), "{answer}");

    server.terminate();
    server.logged("in-flight HTTP requests done").await;
    let (status, log) = server.exit().await;
    assert_eq!(status.code(), Some(1), "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("the runtime did not finish within 1s")),
        "{log:#?}"
    );
    let _ = release.send(());
    holder.join().expect("lock holder");
}
