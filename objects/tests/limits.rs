//! Stuck handlers and `Context::abort`: an event past its namespace's time
//! limit, or one that aborts, resets its object (instance dropped, its
//! writes and frames gone) while the object's sockets stay open.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use objects::{
    Aborted, BoxError, Context, Error, EventTimeout, Message, Namespace, NamespaceOptions, Object,
    Request, Response, Result, Runtime, WebSocket,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Default)]
struct Env {
    constructed: AtomicUsize,
    /// Notified when a handler is about to hang.
    hanging: tokio::sync::Notify,
}

struct Room {
    env: Arc<Env>,
    /// In-memory only: a fresh instance starts at 0.
    seen: u32,
}

#[derive(Serialize, Deserialize, Debug)]
enum Call {
    Put(String),
    /// Writes, sends a frame to every socket, then never finishes.
    PutThenHang(String),
    /// Writes, sends, then aborts.
    PutThenAbort(String),
    /// Writes, aborts, but returns `Ok`: the abort still wins.
    AbortButOk(String),
    Get(String),
    Sockets,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Reply {
    Unit,
    Value(Option<String>),
    Count(usize),
}

impl Object for Room {
    type Env = Env;
    type Call = Call;
    type Reply = Reply;

    async fn new(_ctx: &mut Context, env: Arc<Env>) -> Result<Self, BoxError> {
        env.constructed.fetch_add(1, Ordering::SeqCst);
        Ok(Room { env, seen: 0 })
    }

    async fn fetch(&mut self, ctx: &mut Context, mut req: Request) -> Result<Response, BoxError> {
        let (_, resp) = ctx.accept_websocket(&mut req, &[])?;
        Ok(resp)
    }

    async fn call(&mut self, ctx: &mut Context, call: Call) -> Result<Reply, BoxError> {
        let all = ctx.websockets(None);
        match call {
            Call::Put(k) => {
                ctx.storage().put(&k, &"v")?;
                Ok(Reply::Unit)
            }
            Call::PutThenHang(k) => {
                ctx.storage().put(&k, &"v")?;
                ctx.broadcast(all, "from the stuck event");
                self.env.hanging.notify_one();
                std::future::pending::<()>().await;
                Ok(Reply::Unit)
            }
            Call::PutThenAbort(k) => {
                ctx.storage().put(&k, &"v")?;
                ctx.broadcast(all, "from the aborted event");
                Err(ctx.abort("the room is inconsistent"))
            }
            Call::AbortButOk(k) => {
                ctx.storage().put(&k, &"v")?;
                let _ = ctx.abort("changed my mind");
                Ok(Reply::Unit)
            }
            Call::Get(k) => Ok(Reply::Value(ctx.storage().get(&k)?)),
            Call::Sockets => Ok(Reply::Count(all.len())),
        }
    }

    async fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        msg: Message,
    ) -> Result<(), BoxError> {
        self.seen += 1;
        if let Message::Text(t) = msg {
            let n = self.env.constructed.load(Ordering::SeqCst);
            ctx.send(ws, format!("{t} seen={} instance={n}", self.seen));
        }
        Ok(())
    }
}

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(addr: SocketAddr) -> Client {
    let (ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("connect");
    assert_eq!(resp.status(), 101);
    ws
}

/// Sends `text` and returns the next text frame.
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

const LIMIT: Duration = Duration::from_secs(2);

struct Setup {
    rt: Runtime,
    rooms: Namespace<Room>,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    _dir: tempfile::TempDir,
}

/// A runtime whose "rooms" namespace has a 2 s event limit, with a
/// Prometheus recorder local to this thread (the runtime registers a
/// namespace's counters when the namespace is registered).
fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let (rt, rooms) = {
        let _local = metrics::set_default_local_recorder(&recorder);
        let rt = Runtime::builder()
            .data_dir(dir.path())
            .open()
            .expect("open");
        let rooms = rt
            .namespace_with::<Room>(
                "rooms",
                Env::default(),
                &NamespaceOptions::default().with_event_time_limit(LIMIT),
            )
            .expect("ns");
        (rt, rooms)
    };
    // The recorder must outlive the runtime's handles.
    std::mem::forget(recorder);
    Setup {
        rt,
        rooms,
        prometheus,
        _dir: dir,
    }
}

/// A counter summed over its series (each namespace has its own).
fn counter(prom: &metrics_exporter_prometheus::PrometheusHandle, name: &str) -> u64 {
    prom.render()
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest,
            };
            value.trim().parse::<u64>().ok()
        })
        .sum()
}

#[tokio::test(start_paused = true)]
async fn an_event_past_its_limit_resets_the_object_and_keeps_its_sockets() {
    let s = setup();
    let addr = common::serve(s.rooms.clone(), "r").await;
    let mut client = connect(addr).await;
    let room = s.rooms.get_by_name("r");
    room.call(Call::Put("kept".into())).await.expect("put");
    assert_eq!(ask(&mut client, "a").await, "a seen=1 instance=1");

    // (The store's writer runs on a blocking thread, which stops paused
    // time from advancing by itself: the test advances it.)
    let hang = tokio::spawn(room.call(Call::PutThenHang("lost".into())));
    s.rooms.env().hanging.notified().await;
    tokio::time::advance(LIMIT).await;
    let err = hang
        .await
        .expect("join")
        .expect_err("the stuck event fails");
    let text = err.to_string();
    assert!(matches!(err, Error::Reset { .. }), "{err:?}");
    assert!(
        text.contains(&room.id().to_string()),
        "names the object: {text}"
    );
    assert!(text.contains("2s"), "names the limit: {text}");
    let Error::Reset { cause, .. } = &err else {
        unreachable!()
    };
    let timeout = cause
        .downcast_ref::<EventTimeout>()
        .expect("an EventTimeout cause");
    assert_eq!(timeout.limit, LIMIT);

    // Its write is gone, the earlier one kept; a fresh instance runs.
    assert_eq!(
        room.call(Call::Get("lost".into())).await.expect("get"),
        Reply::Value(None)
    );
    assert_eq!(
        room.call(Call::Get("kept".into())).await.expect("get"),
        Reply::Value(Some("v".into()))
    );
    assert_eq!(s.rooms.env().constructed.load(Ordering::SeqCst), 2);
    // The socket is still open and reaches the new instance; the stuck
    // event's frame never went out (the next frame is this answer).
    assert_eq!(
        room.call(Call::Sockets).await.expect("sockets"),
        Reply::Count(1)
    );
    assert_eq!(ask(&mut client, "b").await, "b seen=1 instance=2");
    assert_eq!(counter(&s.prometheus, "objects_event_timeouts_total"), 1);
    assert_eq!(counter(&s.prometheus, "objects_resets_total"), 1);
    assert_eq!(counter(&s.prometheus, "objects_aborts_total"), 0);
    s.rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn abort_resets_the_object_and_keeps_its_sockets() {
    let s = setup();
    let addr = common::serve(s.rooms.clone(), "r").await;
    let mut client = connect(addr).await;
    let room = s.rooms.get_by_name("r");
    assert_eq!(ask(&mut client, "a").await, "a seen=1 instance=1");

    let err = room
        .call(Call::PutThenAbort("lost".into()))
        .await
        .expect_err("aborted");
    let Error::Reset { cause, .. } = &err else {
        panic!("expected a reset, got {err:?}")
    };
    let aborted = cause.downcast_ref::<Aborted>().expect("an Aborted cause");
    assert_eq!(aborted.reason, "the room is inconsistent");
    assert!(
        err.to_string().contains("the room is inconsistent"),
        "{err}"
    );

    // Returning Ok after abort does not save the event.
    let err = room
        .call(Call::AbortButOk("also-lost".into()))
        .await
        .expect_err("aborted though the handler returned Ok");
    assert!(err.is_reset(), "{err:?}");

    for key in ["lost", "also-lost"] {
        assert_eq!(
            room.call(Call::Get(key.into())).await.expect("get"),
            Reply::Value(None),
            "{key}"
        );
    }
    assert_eq!(s.rooms.env().constructed.load(Ordering::SeqCst), 3);
    assert_eq!(ask(&mut client, "b").await, "b seen=1 instance=3");
    assert_eq!(counter(&s.prometheus, "objects_aborts_total"), 2);
    assert_eq!(counter(&s.prometheus, "objects_event_timeouts_total"), 0);
    s.rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_limit_is_per_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The runtime-wide default (30 s) for one, 2 s for the other; the
    // callers' deadline is longer than both.
    let opts = objects::RuntimeOptions::default().with_call_timeout(Duration::from_secs(120));
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .options(opts)
        .open()
        .expect("open");
    let slow = rt.namespace::<Room>("slow", Env::default()).expect("ns");
    let fast = rt
        .namespace_with::<Room>(
            "fast",
            Env::default(),
            &NamespaceOptions::default().with_event_time_limit(LIMIT),
        )
        .expect("ns");
    let fast_call = tokio::spawn(fast.get_by_name("x").call(Call::PutThenHang("k".into())));
    fast.env().hanging.notified().await;
    let slow_call = tokio::spawn(slow.get_by_name("x").call(Call::PutThenHang("k".into())));
    slow.env().hanging.notified().await;
    tokio::time::advance(LIMIT).await;
    let err = fast_call.await.expect("join").expect_err("times out");
    assert!(err.to_string().contains("2s"), "{err}");
    // The other namespace's event is still running at 29 s...
    tokio::time::advance(Duration::from_secs(27)).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!slow_call.is_finished(), "reset before its 30 s limit");
    // ...and reset at 30 s.
    tokio::time::advance(Duration::from_secs(1)).await;
    let err = slow_call.await.expect("join").expect_err("times out");
    assert!(err.to_string().contains("30s"), "{err}");
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn mailbox_and_idle_settings_are_per_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .open()
        .expect("open");
    let small = rt
        .namespace_with::<Room>(
            "small",
            Env::default(),
            &NamespaceOptions::default()
                .with_mailbox_capacity(2)
                .with_idle_timeout(Duration::from_secs(5)),
        )
        .expect("ns");
    let default = rt.namespace::<Room>("default", Env::default()).expect("ns");
    // Hold each object in a hanging event, then queue behind it.
    let small_room = small.get_by_name("x");
    let hang = tokio::spawn(small_room.call(Call::PutThenHang("k".into())));
    small.env().hanging.notified().await;
    let queued: Vec<_> = (0..2).map(|_| small_room.call(Call::Sockets)).collect();
    let err = small_room
        .call(Call::Sockets)
        .await
        .expect_err("the third queued event is refused");
    assert!(err.is_overloaded(), "{err:?}");
    assert!(err.to_string().contains("2 events"), "{err}");
    // The default namespace keeps the runtime's bound (1024).
    let default_room = default.get_by_name("x");
    let hang_default = tokio::spawn(default_room.call(Call::PutThenHang("k".into())));
    default.env().hanging.notified().await;
    let many: Vec<_> = (0..100).map(|_| default_room.call(Call::Sockets)).collect();
    // Both stuck events end at the (default) time limit; what was queued
    // then runs.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(hang.await.expect("join").is_err());
    assert!(hang_default.await.expect("join").is_err());
    for q in queued {
        assert_eq!(q.await.expect("queued"), Reply::Count(0));
    }
    for q in many {
        assert_eq!(q.await.expect("queued"), Reply::Count(0));
    }
    // Idle eviction: 5 s for the small namespace, 70 s for the other.
    tokio::time::advance(Duration::from_secs(6)).await;
    for _ in 0..1000 {
        if small.live_count() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(small.live_count(), 0, "evicted after its own 5 s");
    assert_eq!(default.live_count(), 1, "still within the runtime's 70 s");
    rt.shutdown().await;
}
