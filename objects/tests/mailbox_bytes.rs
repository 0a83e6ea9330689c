//! The byte budget of an object's mailbox (`mailbox_bytes`): while the
//! object is busy, a socket's messages are queued only up to the budget;
//! the socket then waits (its client feels TCP backpressure), and nothing
//! is lost: every message is handled, in order, once the object moves on.

mod common;

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use objects::{
    BoxError, Context, Message, NamespaceOptions, Object, Request, Response, Runtime, WebSocket,
};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(Default)]
struct Env {
    /// The handler of "hold" has started / may finish.
    holding: Notify,
    release: Notify,
}

struct Gate {
    env: Arc<Env>,
    seen: usize,
}

impl Object for Gate {
    type Env = Env;
    type Call = ();
    type Reply = ();

    async fn new(_ctx: &mut Context, env: Arc<Env>) -> Result<Self, BoxError> {
        Ok(Gate { env, seen: 0 })
    }

    async fn fetch(&mut self, ctx: &mut Context, mut req: Request) -> Result<Response, BoxError> {
        let (_, resp) = ctx.accept_websocket(&mut req, &[])?;
        Ok(resp)
    }

    async fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        msg: Message,
    ) -> Result<(), BoxError> {
        let Message::Text(text) = msg else {
            return Ok(());
        };
        if text == "hold" {
            self.env.holding.notify_one();
            self.env.release.notified().await;
        }
        self.seen += 1;
        ctx.send(ws, format!("{} {}", self.seen, text.len()));
        Ok(())
    }
}

const BUDGET: usize = 1_000;

/// Messages of the gate's namespace waiting in mailboxes.
fn queued(rt: &Runtime) -> usize {
    rt.stats()
        .namespaces
        .iter()
        .find(|n| n.name == "gates")
        .map_or(0, |n| n.mailbox_queued)
}

#[tokio::test]
async fn a_busy_object_queues_a_sockets_messages_only_up_to_its_byte_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .open()
        .expect("open");
    let gates = rt
        .namespace_with::<Gate>(
            "gates",
            Env::default(),
            &NamespaceOptions::default().with_mailbox_bytes(BUDGET),
        )
        .expect("ns");
    let addr = common::serve(gates.clone(), "g").await;
    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("connect");

    client.send(WsMessage::text("hold")).await.expect("send");
    gates.env().holding.notified().await;
    // Ten messages of 400 bytes while the object is busy: two fit the
    // budget of 1,000 bytes; the socket holds the third and reads no more.
    for _ in 0..10 {
        client
            .send(WsMessage::text("x".repeat(400)))
            .await
            .expect("send");
    }
    // One larger than the whole budget still goes through, alone.
    client
        .send(WsMessage::text("y".repeat(3 * BUDGET)))
        .await
        .expect("send");
    let mut spins = 0;
    while queued(&rt) < 2 {
        spins += 1;
        assert!(spins < 1_000_000, "the messages never queued");
        tokio::task::yield_now().await;
    }
    // Let the socket task (and the I/O driver) run a while longer: without
    // the budget it would queue all eleven.
    for _ in 0..2_000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(queued(&rt), 2, "queued past the byte budget");

    gates.env().release.notify_one();
    let mut replies = Vec::new();
    while replies.len() < 12 {
        match client.next().await.expect("open").expect("frame") {
            WsMessage::Text(t) => replies.push(t.as_str().to_string()),
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut want = vec!["1 4".to_string()];
    want.extend((2..=11).map(|n| format!("{n} 400")));
    want.push(format!("12 {}", 3 * BUDGET));
    assert_eq!(replies, want, "every message, in order");
    rt.shutdown().await;
}
