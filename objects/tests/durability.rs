//! The durability ordering that one sync per commit group relies on,
//! recorded on real LMDB with real sockets: the writer commits with
//! `MDB_NOMETASYNC` (a commit's meta page is written, not synced), so a
//! group may be answered, and its frames may leave, only after a later
//! sync — the next group's data sync or an explicit one — covered it. The
//! journal records commits, syncs, answers and frame releases in the order
//! they happen, and the check fails on any answer or frame that comes
//! before the sync covering its object's last commit.

mod common;

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use objects::testing::{Journal, Step};
use objects::{
    BoxError, Context, Error, Message, Object, Request, Response, Runtime, RuntimeOptions,
    StoreOptions, WebSocket,
};
use tokio_tungstenite::tungstenite::Message as WsMessage;

struct Room {
    seen: u64,
}

impl Object for Room {
    type Env = ();
    type Call = u64;
    type Reply = u64;

    async fn new(ctx: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
        Ok(Room {
            seen: ctx.storage().get("seen")?.unwrap_or(0),
        })
    }

    async fn fetch(&mut self, ctx: &mut Context, mut req: Request) -> Result<Response, BoxError> {
        let (_ws, resp) = ctx.accept_websocket(&mut req, &[]).map_err(Error::from)?;
        Ok(resp)
    }

    async fn call(&mut self, ctx: &mut Context, add: u64) -> Result<u64, BoxError> {
        self.seen += add;
        ctx.storage().put("seen", &self.seen)?;
        Ok(self.seen)
    }

    async fn websocket_message(
        &mut self,
        ctx: &mut Context,
        _: WebSocket,
        msg: Message,
    ) -> Result<(), BoxError> {
        self.seen += 1;
        ctx.storage()
            .put(&format!("msg/{:08}", self.seen), &self.seen)?;
        ctx.storage().put("seen", &self.seen)?;
        let all = ctx.websockets(None);
        ctx.broadcast(all, msg);
        Ok(())
    }
}

/// A runtime on `dir` whose writer and output gate record into a journal.
fn open(dir: &std::path::Path, mut store: StoreOptions) -> (Runtime, Arc<Journal>) {
    let journal = Arc::new(Journal::new());
    store.journal = Some(journal.clone());
    let rt = Runtime::builder()
        .data_dir(dir)
        .options(RuntimeOptions::default().with_store(store))
        .open()
        .expect("open");
    (rt, journal)
}

const CLIENTS: usize = 4;
const MESSAGES: usize = 25;
const CALLERS: u64 = 16;
const CALLS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaves_before_the_sync_that_covers_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, journal) = open(dir.path(), StoreOptions::default());
    let rooms = rt.namespace::<Room>("rooms", ()).expect("namespace");
    let addr = common::serve(rooms.clone(), "room").await;

    // Clients on one room's sockets, each sending and reading every echo.
    let mut sockets = Vec::new();
    for _ in 0..CLIENTS {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .expect("connect");
        sockets.push(ws);
    }
    let mut tasks = Vec::new();
    for (c, ws) in sockets.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            let sender = tokio::spawn(async move {
                for m in 0..MESSAGES {
                    tx.send(WsMessage::text(format!("{c}:{m}")))
                        .await
                        .expect("send");
                }
                tx
            });
            let mut got = 0;
            while got < CLIENTS * MESSAGES {
                match rx.next().await {
                    Some(Ok(WsMessage::Text(_))) => got += 1,
                    Some(Ok(_)) => {}
                    other => panic!("socket ended early: {other:?}"),
                }
            }
            drop(sender.await.expect("sender"));
            got
        }));
    }
    // Meanwhile, calls to other objects fill other commit groups.
    for caller in 0..CALLERS {
        let stub = rooms.get_by_name(&format!("other-{caller}"));
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for _ in 0..CALLS {
                last = stub.call(1).await.expect("call");
            }
            usize::try_from(last).expect("fits")
        }));
    }
    for t in tasks {
        assert!(t.await.expect("task") > 0);
    }
    rt.shutdown().await;

    let steps = journal.steps();
    let frames: usize = steps
        .iter()
        .map(|s| match s {
            Step::FramesOut { frames, .. } => *frames,
            _ => 0,
        })
        .sum();
    let answered: usize = steps
        .iter()
        .map(|s| match s {
            Step::Answered { objects } => objects.len(),
            _ => 0,
        })
        .sum();
    // The check below is about these steps, so they must be there: every
    // message reached every client, and every call and message commit was
    // answered.
    assert_eq!(frames, CLIENTS * CLIENTS * MESSAGES, "frames released");
    assert!(
        answered >= usize::try_from(CALLERS * CALLS).expect("fits"),
        "answers: {answered}"
    );
    journal.check_output_after_sync().expect("ordering");
}

/// With a commit delay, a commit that finds the writer idle waits for
/// company: three objects' calls share one transaction (the group fills
/// long before the hour-long delay is up), and still nothing is answered
/// before the sync that covers it. Without the delay the first call would
/// commit alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_delay_gathers_commits_into_one_group() {
    const OBJECTS: usize = 3;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StoreOptions::default()
        .with_max_group(OBJECTS)
        .with_commit_delay(std::time::Duration::from_secs(3600));
    let (rt, journal) = open(dir.path(), store);
    let rooms = rt.namespace::<Room>("rooms", ()).expect("namespace");
    let calls = (0..OBJECTS).map(|i| {
        let stub = rooms.get_by_name(&format!("r{i}"));
        tokio::spawn(async move { stub.call(1).await.expect("call") })
    });
    let all = futures_util::future::join_all(calls);
    let answers = tokio::time::timeout(std::time::Duration::from_secs(120), all)
        .await
        .expect("the group never filled");
    assert!(answers.into_iter().all(|a| a.expect("task") == 1));
    rt.shutdown().await;
    let commits: Vec<usize> = journal
        .steps()
        .iter()
        .filter_map(|s| match s {
            Step::Committed { objects } => Some(objects.len()),
            _ => None,
        })
        .collect();
    assert_eq!(commits, [OBJECTS], "one transaction for the three");
    journal.check_output_after_sync().expect("ordering");
}
