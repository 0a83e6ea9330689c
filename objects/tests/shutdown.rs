//! The steps of a graceful stop: `Runtime::close_websockets` closes every
//! accepted socket with 1001 while events keep running, and
//! `Runtime::shutdown_within` gives up on work that never ends and says so.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use objects::{
    BoxError, CloseEvent, Context, NamespaceOptions, Object, Request, Response, Runtime, WebSocket,
};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Safety net for waits that a passing test never reaches.
const PATIENCE: Duration = Duration::from_secs(10);

/// Accepts every upgrade (or says why not) and reports the close events it
/// hears; its calls count.
struct Lobby {
    calls: u32,
    env: Arc<LobbyEnv>,
}

struct LobbyEnv {
    closes: mpsc::UnboundedSender<u16>,
}

impl Object for Lobby {
    type Env = LobbyEnv;
    type Call = ();
    type Reply = u32;

    async fn new(_: &mut Context, env: Arc<LobbyEnv>) -> Result<Self, BoxError> {
        Ok(Lobby { calls: 0, env })
    }

    async fn call(&mut self, _: &mut Context, (): ()) -> Result<u32, BoxError> {
        self.calls += 1;
        Ok(self.calls)
    }

    async fn fetch(&mut self, ctx: &mut Context, mut req: Request) -> Result<Response, BoxError> {
        match ctx.accept_websocket(&mut req, &[]) {
            Ok((_, resp)) => Ok(resp),
            Err(e) => Ok(http::Response::builder()
                .status(503)
                .body(e.to_string().into())?),
        }
    }

    async fn websocket_close(
        &mut self,
        _: &mut Context,
        _: WebSocket,
        close: CloseEvent,
    ) -> Result<(), BoxError> {
        let _ = self.env.closes.send(close.code);
        Ok(())
    }
}

#[tokio::test]
async fn closing_websockets_sends_1001_and_events_keep_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .open()
        .expect("open");
    let (closes, mut closed) = mpsc::unbounded_channel();
    let ns = rt
        .namespace::<Lobby>("lobbies", LobbyEnv { closes })
        .expect("ns");
    let addr = common::serve(ns.clone(), "lobby").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("connect");
    assert_eq!(ns.get_by_name("lobby").call(()).await.expect("call"), 1);

    let report = rt.close_websockets(PATIENCE).await;
    assert!(report.clean, "{report:?}");
    assert_eq!(report.sockets_open, 0);
    match tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("a frame")
    {
        Some(Ok(WsMessage::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1001);
            assert_eq!(frame.reason.as_str(), "server shutting down");
        }
        other => panic!("expected a Close frame, got {other:?}"),
    }
    // The object heard an ordinary close (it has no shutdown code).
    let code = tokio::time::timeout(PATIENCE, closed.recv())
        .await
        .expect("in time");
    assert_eq!(code, Some(1001));

    // Events still run; new sockets are refused.
    assert_eq!(ns.get_by_name("lobby").call(()).await.expect("call"), 2);
    match tokio_tungstenite::connect_async(format!("ws://{addr}/")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
        }
        other => panic!("expected a refusal, got {:?}", other.map(|(_, r)| r)),
    }

    let report = rt.shutdown_within(PATIENCE).await;
    assert!(report.clean, "{report:?}");
    assert_eq!((report.objects_running, report.sockets_open), (0, 0));
}

/// A call handler that never finishes (it says when it has started).
struct Stuck(Arc<Notify>);

impl Object for Stuck {
    type Env = Arc<Notify>;
    type Call = ();
    type Reply = ();

    async fn new(_: &mut Context, started: Arc<Arc<Notify>>) -> Result<Self, BoxError> {
        Ok(Stuck(Arc::clone(&started)))
    }

    async fn call(&mut self, _: &mut Context, (): ()) -> Result<(), BoxError> {
        self.0.notify_one();
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test]
async fn a_bounded_shutdown_gives_up_on_a_handler_that_never_finishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .open()
        .expect("open");
    let started = Arc::new(Notify::new());
    // No event time limit to end the handler first.
    let options = NamespaceOptions::default().with_event_time_limit(Duration::from_secs(3600));
    let ns = rt
        .namespace_with::<Stuck>("stuck", started.clone(), &options)
        .expect("ns");
    let stub = ns.get_by_name("forever");
    let call = tokio::spawn(async move { stub.call(()).await });
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("the handler started");

    let report = rt.shutdown_within(Duration::from_millis(100)).await;
    assert!(!report.clean, "{report:?}");
    assert_eq!(report.objects_running, 1, "{report:?}");
    call.abort();
}
