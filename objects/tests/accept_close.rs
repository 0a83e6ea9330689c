//! An object that accepts a WebSocket and closes it in the same event (to
//! refuse a client with a reason it can read) sends the 101, then a Close
//! frame with that code and reason: the close is queued behind the accept.

mod common;

use std::sync::Arc;

use futures_util::StreamExt;
use objects::{BoxError, Context, Error, Object, Request, Response, Runtime};
use tokio_tungstenite::tungstenite::Message as WsMessage;

struct Doorman;

impl Object for Doorman {
    type Env = ();
    type Call = ();
    type Reply = ();

    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
        Ok(Doorman)
    }

    async fn fetch(&mut self, ctx: &mut Context, mut req: Request) -> Result<Response, BoxError> {
        let (ws, resp) = ctx.accept_websocket(&mut req, &[]).map_err(Error::from)?;
        ctx.send(ws, "sorry");
        ctx.close(ws, 4003, "this room needs a password");
        Ok(resp)
    }
}

#[tokio::test]
async fn a_socket_closed_in_its_accepting_event_gets_the_close_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .open()
        .expect("open");
    let ns = rt.namespace::<Doorman>("doors", ()).expect("ns");
    let addr = common::serve(ns, "door").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("connect");
    let first = ws.next().await.expect("a frame").expect("ok");
    assert_eq!(first, WsMessage::text("sorry"));
    match ws.next().await {
        Some(Ok(WsMessage::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4003);
            assert_eq!(frame.reason.as_str(), "this room needs a password");
        }
        other => panic!("expected the Close frame, got {other:?}"),
    }
    rt.shutdown().await;
}
