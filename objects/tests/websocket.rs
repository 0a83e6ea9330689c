//! WebSocket hibernation: conformance statements 20 to 24, hibernation on
//! paused time, dead peers, slow readers.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use objects::BoxError;
use objects::CloseEvent;
use objects::{Context, Message, Namespace, Object, Request, Response, Result, Runtime, WebSocket};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Default)]
struct Env {
    constructed: AtomicUsize,
    closes: Mutex<Vec<(u16, bool)>>,
    closed: tokio::sync::Notify,
    errors: Mutex<Vec<String>>,
}

/// Accepts sockets tagged from the query (`?tags=a,b`); answers each text
/// message with a report of what it knows, or acts on commands.
struct Room {
    env: Arc<Env>,
    /// In-memory state, lost on hibernation.
    messages_seen: u32,
}

impl Object for Room {
    type Env = Env;
    type Call = String;
    type Reply = String;

    async fn new(_ctx: &mut Context, env: Arc<Env>) -> Result<Self, BoxError> {
        env.constructed.fetch_add(1, Ordering::SeqCst);
        Ok(Room {
            env,
            messages_seen: 0,
        })
    }

    async fn fetch(&mut self, ctx: &mut Context, mut req: Request) -> Result<Response, BoxError> {
        let query = req.uri().query().unwrap_or_default().to_string();
        let tags: Vec<&str> = query
            .strip_prefix("tags=")
            .map(|t| t.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        match ctx.accept_websocket(&mut req, &tags) {
            Ok((ws, resp)) => {
                ctx.set_attachment(ws, &format!("user-{}", ws.sid()))?;
                Ok(resp)
            }
            Err(e) => Ok(http::Response::builder()
                .status(400)
                .body(e.to_string().into())
                .map_err(BoxError::from)?),
        }
    }

    async fn call(&mut self, ctx: &mut Context, cmd: String) -> Result<String, BoxError> {
        Ok(match cmd.as_str() {
            "count" => ctx.websockets(None).len().to_string(),
            "auto" => {
                ctx.set_auto_response(Some(("ping", "pong")))?;
                String::new()
            }
            "auto-ts" => {
                let ws = ctx.websockets(None);
                format!(
                    "{:?}",
                    ws.iter()
                        .map(|w| ctx.auto_response_timestamp(*w))
                        .collect::<Vec<_>>()
                )
            }
            big if big.starts_with("flood") => {
                let payload = "x".repeat(64 * 1024);
                let all = ctx.websockets(None);
                for _ in 0..200 {
                    ctx.broadcast(all.iter().copied(), payload.as_str());
                }
                String::new()
            }
            other => format!("unknown {other}"),
        })
    }

    async fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        msg: Message,
    ) -> Result<(), BoxError> {
        self.messages_seen += 1;
        let Message::Text(text) = msg else {
            return Ok(());
        };
        if text == "bye" {
            // A send and a close in one event: the frame goes out first.
            ctx.send(ws, "bye-ack");
            ctx.close(ws, 4000, "bye");
            return Ok(());
        }
        if text == "big-attachment" {
            let err = ctx
                .set_attachment(ws, &"y".repeat(objects::MAX_ATTACHMENT_BYTES + 1))
                .expect_err("too big");
            let kept: Option<String> = ctx.attachment(ws)?;
            ctx.send(ws, format!("{err} / kept {kept:?}"));
            return Ok(());
        }
        let att: Option<String> = ctx.attachment(ws)?;
        let tags = ctx.tags(ws)?;
        let all = ctx.websockets(None).len();
        let tagged = ctx.websockets(Some("t")).len();
        ctx.storage().put("last", &text)?;
        ctx.send(
            ws,
            format!(
                "seen={} att={att:?} tags={tags:?} all={all} t={tagged} text={text}",
                self.messages_seen
            ),
        );
        Ok(())
    }

    async fn websocket_close(
        &mut self,
        _ctx: &mut Context,
        _ws: WebSocket,
        close: CloseEvent,
    ) -> Result<(), BoxError> {
        self.env
            .closes
            .lock()
            .expect("lock")
            .push((close.code, close.clean));
        self.env.closed.notify_waiters();
        Ok(())
    }

    async fn websocket_error(
        &mut self,
        _ctx: &mut Context,
        _ws: WebSocket,
        error: String,
    ) -> Result<(), BoxError> {
        self.env.errors.lock().expect("lock").push(error);
        Ok(())
    }
}

/// Every request goes to the room named "r".
async fn serve(ns: Namespace<Room>) -> SocketAddr {
    common::serve(ns, "r").await
}

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(addr: SocketAddr, tags: &str) -> Client {
    let (ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}/?tags={tags}"))
        .await
        .expect("connect");
    assert_eq!(resp.status(), 101);
    ws
}

async fn ask(c: &mut Client, text: &str) -> String {
    c.send(WsMessage::text(text)).await.expect("send");
    loop {
        match c.next().await.expect("open").expect("frame") {
            WsMessage::Text(t) => return t.as_str().to_string(),
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn open(dir: &std::path::Path) -> Runtime {
    Runtime::builder().data_dir(dir).open().expect("open")
}

/// Waits (on a notification, not a timer) until the close handler has run
/// and `pred` holds for the recorded closes.
async fn wait_closes(env: &Env, pred: impl Fn(&[(u16, bool)]) -> bool) {
    loop {
        let notified = env.closed.notified();
        if pred(&env.closes.lock().expect("lock")) {
            return;
        }
        notified.await;
    }
}

/// Lets tasks run until `cond` holds (bounded; no wall-clock sleep).
async fn settle(mut cond: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

// 20: hibernation keeps sockets, tags and attachments; memory is reset.
#[tokio::test(start_paused = true)]
async fn hibernated_objects_wake_with_their_sockets_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let rooms = rt.namespace::<Room>("rooms", Env::default()).expect("ns");
    let addr = serve(rooms.clone()).await;
    let mut a = connect(addr, "t,x").await;
    let mut b = connect(addr, "y").await;
    let first = ask(&mut a, "hello").await;
    assert!(first.starts_with("seen=1 "), "{first}");
    assert!(first.contains("tags=[\"t\", \"x\"] all=2 t=1"), "{first}");
    assert_eq!(rooms.env().constructed.load(Ordering::SeqCst), 1);

    tokio::time::advance(Duration::from_secs(11)).await;
    settle(|| rooms.live_count() == 0).await;

    let after = ask(&mut b, "again").await;
    assert_eq!(
        rooms.env().constructed.load(Ordering::SeqCst),
        2,
        "constructor ran again"
    );
    assert!(
        after.starts_with("seen=1 "),
        "in-memory state was reset: {after}"
    );
    assert!(after.contains("tags=[\"y\"] all=2 t=1"), "{after}");
    assert!(after.contains("att=Some(\"user-"), "{after}");
    rt.shutdown().await;
}

// 21: auto-response without waking the object.
#[tokio::test(start_paused = true)]
async fn auto_response_answers_without_waking_the_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let rooms = rt.namespace::<Room>("rooms", Env::default()).expect("ns");
    let addr = serve(rooms.clone()).await;
    let mut a = connect(addr, "").await;
    rooms
        .get_by_name("r")
        .call("auto".into())
        .await
        .expect("auto");
    tokio::time::advance(Duration::from_secs(11)).await;
    settle(|| rooms.live_count() == 0).await;
    assert_eq!(ask(&mut a, "ping").await, "pong");
    assert_eq!(ask(&mut a, "ping").await, "pong");
    assert_eq!(rooms.live_count(), 0, "still hibernating");
    assert_eq!(rooms.env().constructed.load(Ordering::SeqCst), 1);
    let ts = rooms
        .get_by_name("r")
        .call("auto-ts".into())
        .await
        .expect("ts");
    assert!(ts.starts_with("[Some("), "{ts}");
    rt.shutdown().await;
}

// 22: tag limits.
#[tokio::test]
async fn tag_limits_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let rooms = rt.namespace::<Room>("rooms", Env::default()).expect("ns");
    let addr = serve(rooms.clone()).await;
    let eleven: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/?tags={}", eleven.join(",")))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("400"), "{err}");
    let long = "a".repeat(257);
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{addr}/?tags={long}"))
            .await
            .is_err()
    );
    let mut ok = connect(addr, &format!("{},t,t", "a".repeat(256))).await;
    let r = ask(&mut ok, "x").await;
    assert!(
        r.contains("t=1"),
        "duplicates dropped, tag lookup works: {r}"
    );
    rt.shutdown().await;
}

// 23: a vanished peer yields exactly one close 1006.
#[tokio::test]
async fn a_dropped_connection_is_one_close_1006() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let rooms = rt.namespace::<Room>("rooms", Env::default()).expect("ns");
    let addr = serve(rooms.clone()).await;
    let a = connect(addr, "").await;
    let mut b = connect(addr, "").await;
    assert!(ask(&mut b, "x").await.contains("all=2"));
    // Drop the TCP stream without a Close frame.
    drop(a.into_inner());
    let stub = rooms.get_by_name("r");
    wait_closes(rooms.env(), |c| !c.is_empty()).await;
    assert_eq!(stub.call("count".into()).await.expect("count"), "1");
    assert_eq!(
        *rooms.env().closes.lock().expect("lock"),
        vec![(1006, false)]
    );
    assert!(ask(&mut b, "y").await.contains("all=1"));
    rt.shutdown().await;
}

// 24: attachment over the limit fails and keeps the old value.
#[tokio::test]
async fn oversize_attachments_fail_and_keep_the_old_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let rooms = rt.namespace::<Room>("rooms", Env::default()).expect("ns");
    let addr = serve(rooms.clone()).await;
    let mut a = connect(addr, "").await;
    let r = ask(&mut a, "big-attachment").await;
    assert!(
        r.contains("over the limit") && r.contains("kept Some(\"user-"),
        "{r}"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn a_slow_reader_is_cut_off_while_others_keep_receiving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        // The frame count is what this test is about: bytes enough for the
        // 256 frames of 64 KiB.
        .websocket(
            objects::WebSocketOptions::default()
                .with_send_queue(256)
                .with_send_queue_bytes(256 * 64 * 1024),
        )
        .open()
        .expect("open");
    let rooms = rt.namespace::<Room>("rooms", Env::default()).expect("ns");
    let addr = serve(rooms.clone()).await;
    let slow = connect(addr, "").await; // never read
    let mut fast = connect(addr, "").await;
    assert!(ask(&mut fast, "hi").await.contains("all=2"));
    let stub = rooms.get_by_name("r");
    let (progress, mut got) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while let Some(Ok(m)) = fast.next().await {
            if let WsMessage::Text(t) = m
                && t.len() == 64 * 1024
            {
                n += 1;
                progress.send_replace(n);
            }
        }
    });
    // Each flood is 200 frames of 64 KiB: within the fast reader's queue,
    // and far beyond what the kernel buffers for the reader that never reads.
    for round in 1..=5 {
        stub.call("flood".into()).await.expect("flood");
        got.wait_for(|n| *n == 200 * round)
            .await
            .expect("fast reader keeps receiving");
    }
    wait_closes(rooms.env(), |c| c.contains(&(1008, false))).await;
    assert_eq!(
        stub.call("count".into()).await.expect("count"),
        "1",
        "only the fast reader is left"
    );
    assert!(
        rooms
            .env()
            .errors
            .lock()
            .expect("lock")
            .iter()
            .any(|e| e.contains("slow reader"))
    );
    drop(slow);
    reader.abort();
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn dead_peers_are_detected_by_ping_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let rooms = rt.namespace::<Room>("rooms", Env::default()).expect("ns");
    let addr = serve(rooms.clone()).await;
    // A peer that completes the handshake and then never reads or answers.
    let silent = connect(addr, "").await;
    let stub = rooms.get_by_name("r");
    assert_eq!(stub.call("count".into()).await.expect("count"), "1");
    tokio::time::advance(Duration::from_secs(31)).await;
    // Let the socket task send its ping before the clock moves on.
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    tokio::time::advance(Duration::from_secs(21)).await;
    wait_closes(rooms.env(), |c| !c.is_empty()).await;
    assert_eq!(stub.call("count".into()).await.expect("count"), "0");
    assert_eq!(
        *rooms.env().closes.lock().expect("lock"),
        vec![(1006, false)]
    );
    drop(silent);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_close_goes_out_after_the_frames_sent_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let rooms = rt.namespace::<Room>("rooms", Env::default()).expect("ns");
    let addr = serve(rooms.clone()).await;
    let mut a = connect(addr, "").await;
    assert_eq!(ask(&mut a, "bye").await, "bye-ack");
    match a.next().await.expect("frame").expect("ok") {
        WsMessage::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 4000);
            assert_eq!(f.reason.as_str(), "bye");
        }
        other => panic!("expected the close, got {other:?}"),
    }
    wait_closes(rooms.env(), |c| c.contains(&(4000, true))).await;
    rt.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_is_closed_with_1007() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = open(dir.path());
    let rooms = rt.namespace::<Room>("rooms", Env::default()).expect("ns");
    let addr = serve(rooms.clone()).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /?tags= HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("head");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // A masked text frame (mask key 0) whose payload is not UTF-8.
    s.write_all(&[0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe])
        .await
        .expect("frame");
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.expect("close frame");
    assert_eq!(h[0], 0x88, "a Close frame");
    let mut payload = vec![0u8; usize::from(h[1] & 0x7f)];
    s.read_exact(&mut payload).await.expect("payload");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1007);
    wait_closes(rooms.env(), |c| c.contains(&(1007, false))).await;
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_write_that_waits_past_its_deadline_cuts_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        // Neither queue bound bites: only the write deadline can.
        .websocket(
            objects::WebSocketOptions::default()
                .with_send_queue(4096)
                .with_send_queue_bytes(64 << 20)
                .with_write_timeout(Duration::from_secs(5)),
        )
        .open()
        .expect("open");
    let rooms = rt.namespace::<Room>("rooms", Env::default()).expect("ns");
    let addr = serve(rooms.clone()).await;
    let silent = connect(addr, "").await; // never reads
    let stub = rooms.get_by_name("r");
    // 25 MB: far more than the kernel buffers of both ends hold, so the
    // socket task's write blocks.
    stub.call("flood".into()).await.expect("flood");
    stub.call("flood".into()).await.expect("flood");
    let cut = async {
        loop {
            for _ in 0..1000 {
                tokio::task::yield_now().await;
            }
            if rooms
                .env()
                .closes
                .lock()
                .expect("lock")
                .contains(&(1008, false))
            {
                return;
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
    };
    // Virtual time: far past the 5 s deadline, and before the 30 s ping.
    tokio::time::timeout(Duration::from_secs(20), cut)
        .await
        .expect("cut by the write deadline");
    assert!(
        rooms
            .env()
            .errors
            .lock()
            .expect("lock")
            .iter()
            .any(|e| e.contains("write deadline")),
        "{:?}",
        rooms.env().errors.lock().expect("lock")
    );
    drop(silent);
    rt.shutdown().await;
}
