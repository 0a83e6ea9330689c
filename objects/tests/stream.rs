//! Streamed bodies (`fetch_stream`, `Context::body_channel`,
//! `Context::stream_send`): chunks leave with their event's commit, a
//! failed event's chunk never leaves, a reset ends the streams, a reader
//! that falls behind is cut, and an object is not evicted under a stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use objects::{
    BodySender, BodyStream, BoxError, Context, Handler, Method, Object, Request, Result, Runtime,
    StreamCut, StreamResponse,
};
use serde::{Deserialize, Serialize};

/// A feed: every reader gets what is published after it subscribed.
struct Feed {
    readers: Vec<BodySender>,
}

#[derive(Serialize, Deserialize)]
struct Publish(String);
impl Method for Publish {
    /// Readers it went to.
    type Reply = usize;
}

/// Publishes, then fails: the chunk must not leave.
#[derive(Serialize, Deserialize)]
struct PublishThenFail(String);
impl Method for PublishThenFail {
    type Reply = ();
}

/// Publishes `n` chunks of `size` bytes in one event.
#[derive(Serialize, Deserialize)]
struct Flood {
    n: usize,
    size: usize,
}
impl Method for Flood {
    type Reply = ();
}

impl Object for Feed {
    type Env = ();
    type Call = ();
    type Reply = ();

    async fn new(_ctx: &mut Context, _env: Arc<()>) -> Result<Self, BoxError> {
        Ok(Feed {
            readers: Vec::new(),
        })
    }

    async fn fetch_stream(
        &mut self,
        ctx: &mut Context,
        _req: Request,
    ) -> Result<StreamResponse, BoxError> {
        let (tx, body) = ctx.body_channel();
        ctx.stream_send(&tx, "hello\n");
        self.readers.push(tx);
        Ok(http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)?)
    }
}

impl Feed {
    fn publish(&mut self, ctx: &mut Context, chunk: Bytes) -> usize {
        self.readers.retain(|r| !r.is_closed());
        for r in &self.readers {
            ctx.stream_send(r, chunk.clone());
        }
        self.readers.len()
    }
}

impl Handler<Publish> for Feed {
    async fn handle(
        &mut self,
        ctx: &mut Context,
        Publish(text): Publish,
    ) -> Result<usize, BoxError> {
        Ok(self.publish(ctx, Bytes::from(format!("{text}\n"))))
    }
}

impl Handler<PublishThenFail> for Feed {
    async fn handle(&mut self, ctx: &mut Context, m: PublishThenFail) -> Result<(), BoxError> {
        self.publish(ctx, Bytes::from(m.0));
        Err("failed after publishing".into())
    }
}

impl Handler<Flood> for Feed {
    async fn handle(&mut self, ctx: &mut Context, f: Flood) -> Result<(), BoxError> {
        for _ in 0..f.n {
            self.publish(ctx, Bytes::from(vec![b'x'; f.size]));
        }
        Ok(())
    }
}

async fn next_chunk(body: &mut BodyStream) -> Option<Result<Bytes, StreamCut>> {
    let frame = body.frame().await?;
    Some(frame.map(|f| f.into_data().expect("a data frame")))
}

fn get() -> Request {
    http::Request::builder()
        .uri("/feed")
        .body(Bytes::new())
        .expect("request")
}

#[tokio::test]
async fn chunks_leave_with_their_commit_and_a_reset_ends_the_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .open()
        .expect("open");
    let feeds = rt.namespace::<Feed>("feeds", ()).expect("ns");
    let feed = feeds.get_by_name("f");
    let resp = feed.fetch_stream(get()).await.expect("stream");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    assert_eq!(
        next_chunk(&mut body).await.expect("open").expect("chunk"),
        "hello\n"
    );
    // The object is free while the stream is open.
    assert_eq!(feed.ask(Publish("a".into())).await.expect("publish"), 1);
    assert_eq!(feed.ask(Publish("b".into())).await.expect("publish"), 1);
    assert_eq!(
        next_chunk(&mut body).await.expect("open").expect("chunk"),
        "a\n"
    );
    assert_eq!(
        next_chunk(&mut body).await.expect("open").expect("chunk"),
        "b\n"
    );
    // A failed event's chunk never leaves; the reset drops the instance
    // that held the sender, which ends the stream.
    let err = feed
        .ask(PublishThenFail("never".into()))
        .await
        .expect_err("fails");
    assert!(err.is_reset(), "{err:?}");
    assert!(next_chunk(&mut body).await.is_none(), "the stream ended");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_cut_and_the_object_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .open()
        .expect("open");
    let feeds = rt.namespace::<Feed>("feeds", ()).expect("ns");
    let feed = feeds.get_by_name("f");
    let mut slow = feed.fetch_stream(get()).await.expect("stream").into_body();
    feed.ask(Flood {
        n: objects::MAX_STREAM_CHUNKS + 10,
        size: 8,
    })
    .await
    .expect("flood");
    // What fit is readable, then the cut is reported, then the end.
    let mut chunks = 0;
    let cut = loop {
        match next_chunk(&mut slow).await {
            Some(Ok(_)) => chunks += 1,
            Some(Err(cut)) => break cut,
            None => panic!("ended without reporting the cut"),
        }
    };
    assert!(chunks <= objects::MAX_STREAM_CHUNKS, "{chunks}");
    assert!(cut.to_string().contains("fell behind"), "{cut}");
    assert!(next_chunk(&mut slow).await.is_none());
    // The cut reader is pruned; a new one is served.
    let mut fresh = feed.fetch_stream(get()).await.expect("stream").into_body();
    assert_eq!(
        next_chunk(&mut fresh).await.expect("open").expect("chunk"),
        "hello\n"
    );
    assert_eq!(feed.ask(Publish("c".into())).await.expect("publish"), 1);
    assert_eq!(
        next_chunk(&mut fresh).await.expect("open").expect("chunk"),
        "c\n"
    );
    // One chunk over the byte bound cuts too.
    feed.ask(Flood {
        n: 1,
        size: objects::MAX_STREAM_BYTES + 1,
    })
    .await
    .expect("flood");
    assert!(matches!(next_chunk(&mut fresh).await, Some(Err(_))));
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_object_is_not_evicted_while_a_stream_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .idle_timeout(Duration::from_secs(5))
        .open()
        .expect("open");
    let feeds = rt.namespace::<Feed>("feeds", ()).expect("ns");
    let feed = feeds.get_by_name("f");
    let mut body = feed.fetch_stream(get()).await.expect("stream").into_body();
    assert_eq!(
        next_chunk(&mut body).await.expect("open").expect("chunk"),
        "hello\n"
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(feeds.live_count(), 1, "evicted under an open stream");
    drop(body);
    tokio::time::advance(Duration::from_secs(6)).await;
    for _ in 0..1000 {
        if feeds.live_count() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(feeds.live_count(), 0, "not evicted once the reader left");
    rt.shutdown().await;
}
