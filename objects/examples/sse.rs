//! A server-sent events feed served from an object: `GET /feeds/<name>`
//! opens a stream (`fetch_stream`), `POST /feeds/<name>` with a text body
//! publishes an event to every reader of that feed (a typed method). The
//! object handles one event at a time but is not held for the streams'
//! lifetime: each published chunk leaves once its event has committed.
//!
//! ```text
//! cargo run -p objects --example sse
//! curl -N http://127.0.0.1:8790/feeds/news          # in one terminal
//! curl -d 'hello' http://127.0.0.1:8790/feeds/news  # in another
//! ```

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::get;
use bytes::Bytes;
use objects::{
    BodySender, BoxError, Context, Handler, Method, Namespace, Object, Request, Runtime,
    StreamResponse,
};
use serde::{Deserialize, Serialize};

/// One feed: its readers' streams (in memory; a reader reconnects after a
/// restart, as SSE clients do on their own).
struct Feed {
    readers: Vec<BodySender>,
    sent: u64,
}

/// Publishes one event; answers how many readers it went to.
#[derive(Serialize, Deserialize)]
struct Publish(String);

impl Method for Publish {
    type Reply = usize;
}

impl Object for Feed {
    type Env = ();
    type Call = ();
    type Reply = ();

    async fn new(ctx: &mut Context, _env: Arc<()>) -> Result<Self, BoxError> {
        let sent = ctx.storage().get("sent")?.unwrap_or(0);
        Ok(Feed {
            readers: Vec::new(),
            sent,
        })
    }

    async fn fetch_stream(
        &mut self,
        ctx: &mut Context,
        _req: Request,
    ) -> Result<StreamResponse, BoxError> {
        let (tx, body) = ctx.body_channel();
        ctx.stream_send(&tx, format!(": connected after event {}\n\n", self.sent));
        self.readers.push(tx);
        Ok(http::Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(body)?)
    }
}

impl Handler<Publish> for Feed {
    async fn handle(
        &mut self,
        ctx: &mut Context,
        Publish(text): Publish,
    ) -> Result<usize, BoxError> {
        self.sent += 1;
        ctx.storage().put("sent", &self.sent)?;
        // One SSE event: an id and one `data:` line per line of text.
        let mut event = format!("id: {}\n", self.sent);
        for line in text.lines() {
            event.push_str("data: ");
            event.push_str(line);
            event.push('\n');
        }
        event.push('\n');
        let chunk = Bytes::from(event);
        self.readers.retain(|r| !r.is_closed());
        for r in &self.readers {
            ctx.stream_send(r, chunk.clone());
        }
        Ok(self.readers.len())
    }
}

async fn subscribe(
    State(feeds): State<Namespace<Feed>>,
    Path(name): Path<String>,
) -> http::Response<Body> {
    let req = http::Request::builder()
        .uri(format!("/feeds/{name}"))
        .body(Bytes::new())
        .expect("a valid request");
    match feeds.get_by_name(&name).fetch_stream(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => error(&e),
    }
}

async fn publish(
    State(feeds): State<Namespace<Feed>>,
    Path(name): Path<String>,
    text: String,
) -> http::Response<Body> {
    match feeds.get_by_name(&name).ask(Publish(text)).await {
        Ok(n) => http::Response::new(Body::from(format!("sent to {n} readers\n"))),
        Err(e) => error(&e),
    }
}

fn error(e: &objects::Error) -> http::Response<Body> {
    let status = if e.is_overloaded() { 503 } else { 500 };
    http::Response::builder()
        .status(status)
        .body(Body::from(format!("{e}\n")))
        .expect("a valid response")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::builder().data_dir("data/sse").open()?;
    let feeds = rt.namespace::<Feed>("feeds", ())?;
    let app = axum::Router::new()
        .route("/feeds/{name}", get(subscribe).post(publish))
        .with_state(feeds);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8790").await?;
    println!(
        "SSE feeds on http://{}/feeds/<name>",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    rt.shutdown().await;
    Ok(())
}
