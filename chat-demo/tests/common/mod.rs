//! Shared test harness: a chat server on 127.0.0.1:0 over a real data dir,
//! a hand-driven clock, and WebSocket clients that await frames (with a
//! generous timeout only as a safety net).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use chat_demo::protocol::limit::RateLimitOptions;
use chat_demo::{AppState, ChatOptions, ClientIpHeader};
use futures_util::{SinkExt, StreamExt};
use objects::{Clock, Runtime};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Safety net for every wait: far above anything a passing test needs.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// The wall clock the runtime reads: moves only when a test moves it.
#[derive(Debug)]
pub(crate) struct ManualClock(AtomicU64);

impl ManualClock {
    pub(crate) fn at(ms: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicU64::new(ms)))
    }
    pub(crate) fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    pub(crate) fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// 2023-11-14T22:13:20Z, where every test clock starts.
pub(crate) const T0: u64 = 1_700_000_000_000;

/// How a test server is set up.
#[derive(Clone, Debug)]
pub(crate) struct Setup {
    pub(crate) hibernation: Duration,
    pub(crate) client_ip_header: ClientIpHeader,
    pub(crate) rate_limit: RateLimitOptions,
    pub(crate) max_message_bytes: usize,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) history_retention: Option<Duration>,
    pub(crate) http: chat_demo::HttpLimits,
    /// The store's size limit; `None`: the runtime's default.
    pub(crate) store_max_bytes: Option<usize>,
    pub(crate) history_max_messages: Option<u64>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            hibernation: Duration::from_secs(10),
            // Each client gets its own IP through the header, so only the
            // rate limit tests ever hit the limit.
            client_ip_header: ClientIpHeader::XForwardedFor,
            rate_limit: RateLimitOptions::default(),
            max_message_bytes: chat_demo::websocket_options().max_message_bytes,
            allowed_origins: Vec::new(),
            max_connections_per_ip: ChatOptions::default().max_connections_per_ip,
            history_retention: None,
            http: chat_demo::HttpLimits::default(),
            store_max_bytes: None,
            history_max_messages: ChatOptions::default().history_max_messages,
        }
    }
}

/// A running chat server.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) rt: Runtime,
    pub(crate) state: AppState,
    pub(crate) clock: Arc<ManualClock>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub(crate) async fn start(dir: &Path, setup: Setup) -> Server {
        Self::start_with_clock(dir, setup, ManualClock::at(T0)).await
    }

    pub(crate) async fn start_with_clock(
        dir: &Path,
        setup: Setup,
        clock: Arc<ManualClock>,
    ) -> Server {
        let rt = open_runtime(dir, &setup, clock.clone());
        let options = ChatOptions {
            client_ip_header: setup.client_ip_header,
            rate_limit: setup.rate_limit,
            allowed_origins: setup.allowed_origins.clone(),
            max_connections_per_ip: setup.max_connections_per_ip,
            history_retention: setup.history_retention,
            http: setup.http.clone(),
            history_max_messages: setup.history_max_messages,
            ..ChatOptions::default()
        };
        let state = AppState::new(&rt, options).expect("namespaces");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(chat_demo::serve(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            rt,
            state,
            clock,
            stop: Some(stop),
            task,
        }
    }

    /// Stops like the binary does: stop accepting, shut the runtime down
    /// (sockets get 1001), wait for the server task.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.rt.shutdown().await;
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("server drains")
            .expect("server task")
            .expect("server ran");
    }

    /// Waits (on yields, not a timer) until no room is in memory.
    pub(crate) async fn hibernated(&self) {
        let rooms = self.state.rooms().clone();
        let wait = async move {
            while rooms.live_count() > 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .expect("rooms hibernate");
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// A dialect-A socket into `room` (not yet named).
    pub(crate) async fn a(&self, room: &str) -> Client {
        Client::connect(
            &self.url(&format!("/api/room/{room}/websocket")),
            &next_ip(),
        )
        .await
    }

    /// A dialect-A socket that has said hello and read up to `ready`;
    /// returns the client and the frames before its own `joined` (the
    /// roster and the backlog), after checking that its own `joined` came
    /// last, right before `ready`.
    pub(crate) async fn a_named(&self, room: &str, name: &str) -> (Client, Vec<Value>) {
        self.a_named_ext(room, name, &[]).await
    }

    pub(crate) async fn a_named_ext(
        &self,
        room: &str,
        name: &str,
        ext: &[&str],
    ) -> (Client, Vec<Value>) {
        let mut client = self.a(room).await;
        client
            .send_json(serde_json::json!({ "name": name, "ext": ext }))
            .await;
        let mut before_ready = client.json_until_ready().await;
        assert_eq!(
            before_ready.pop(),
            Some(serde_json::json!({ "joined": name })),
            "own join right before ready"
        );
        (client, before_ready)
    }

    /// A dialect-B socket into `room`.
    pub(crate) async fn b(&self, room: &str) -> Client {
        Client::connect(&self.url(&format!("/room/{room}/websocket")), &next_ip()).await
    }

    /// A dialect-C socket; `query` is the raw query string.
    pub(crate) async fn c(&self, query: &str) -> Client {
        Client::connect(&self.url(&format!("/ws?{query}")), &next_ip()).await
    }
}

/// Opens a runtime on `dir` with the test's clock and socket options.
pub(crate) fn open_runtime(dir: &Path, setup: &Setup, clock: Arc<ManualClock>) -> Runtime {
    let opts = objects::WebSocketOptions::default().with_max_message_bytes(setup.max_message_bytes);
    let mut options = objects::RuntimeOptions::default();
    if let Some(max_size) = setup.store_max_bytes {
        options.store.max_size = max_size;
    }
    Runtime::builder()
        .options(options)
        .data_dir(dir)
        .clock(clock)
        .hibernation_timeout(setup.hibernation)
        .websocket(opts)
        .open()
        .expect("open runtime")
}

static NEXT_IP: AtomicU32 = AtomicU32::new(1);

/// A fresh client IP (10.x.y.z) for the trusted header.
pub(crate) fn next_ip() -> String {
    let n = NEXT_IP.fetch_add(1, Ordering::SeqCst);
    let [_, b, c, d] = n.to_be_bytes();
    format!("10.{b}.{c}.{d}")
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client.
pub(crate) struct Client {
    pub(crate) ws: Ws,
}

/// What ended a connection, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// A Close frame with this code and reason.
    Close(u16, String),
    /// The connection ended without a Close frame (or with an error).
    Dropped,
}

impl Client {
    /// Connects with `ip` in `X-Forwarded-For`.
    pub(crate) async fn connect(url: &str, ip: &str) -> Client {
        let mut req = url.into_client_request().expect("request");
        req.headers_mut()
            .insert("x-forwarded-for", ip.parse().expect("header"));
        let (ws, resp) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect in time")
            .expect("connect");
        assert_eq!(resp.status(), 101);
        Client { ws }
    }

    pub(crate) async fn send(&mut self, msg: Message) {
        tokio::time::timeout(PATIENCE, self.ws.send(msg))
            .await
            .expect("send in time")
            .expect("send");
    }

    pub(crate) async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    pub(crate) async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub(crate) async fn say(&mut self, message: &str) {
        self.send_json(serde_json::json!({ "message": message }))
            .await;
    }

    /// The next data or close frame (pings and pongs skipped).
    pub(crate) async fn next(&mut self) -> Option<Message> {
        let next = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(m)) => return Some(m),
                    Some(Err(_)) | None => return None,
                }
            }
        };
        tokio::time::timeout(PATIENCE, next)
            .await
            .expect("a frame in time")
    }

    /// The next frame, which must be text.
    pub(crate) async fn text(&mut self) -> String {
        match self.next().await {
            Some(Message::Text(t)) => t.as_str().to_owned(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame, which must be a JSON text frame.
    pub(crate) async fn json(&mut self) -> Value {
        let text = self.text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Frames up to and excluding `{"ready":true}`.
    pub(crate) async fn json_until_ready(&mut self) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.json().await;
            if frame == serde_json::json!({ "ready": true }) {
                return frames;
            }
            frames.push(frame);
        }
    }

    /// Reads until the connection ends; fails on any data frame before.
    pub(crate) async fn ending(&mut self) -> Ending {
        match self.next().await {
            Some(Message::Close(Some(CloseFrame { code, reason }))) => {
                Ending::Close(u16::from(code), reason.as_str().to_owned())
            }
            Some(Message::Close(None)) => Ending::Close(1005, String::new()),
            None => Ending::Dropped,
            Some(other) => panic!("expected the end, got {other:?}"),
        }
    }

    /// Closes cleanly and waits for the server's reply.
    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, self.ws.next()).await {}
    }
}

/// `{"name","message","timestamp"}` fields of a chat frame.
pub(crate) fn chat_of(frame: &Value) -> (String, String, u64) {
    (
        frame["name"]
            .as_str()
            .unwrap_or_else(|| panic!("no name: {frame}"))
            .to_owned(),
        frame["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {frame}"))
            .to_owned(),
        frame["timestamp"]
            .as_u64()
            .unwrap_or_else(|| panic!("no timestamp: {frame}")),
    )
}

/// Runs the built `chat-demo` binary to completion with `args` (no
/// `RUST_LOG`, no stdin), at most `within`: its status, stdout, stderr.
pub(crate) async fn run_binary(args: &[&str], within: Duration) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        within,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-demo"))
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits in time")
    .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts the built `chat-demo` binary (the default `serve`) on `dir`,
/// listening on 127.0.0.1:0 and trusting `X-Forwarded-For`; returns the
/// child and the `host:port` it printed.
pub(crate) async fn start_binary(dir: &Path) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-demo"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--trust-client-ip-header",
            "x-forwarded-for",
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
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
    (child, addr)
}
