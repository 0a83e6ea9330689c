//! A hibernating WebSocket echo and presence server.
//!
//! ```text
//! cargo run -p objects --example ws_echo
//! # then connect to ws://127.0.0.1:8788/echo/<room> with any WebSocket client
//! ```
//!
//! Each room is an object. It accepts sockets into the runtime and echoes
//! every message with the number of people present. After 10 s without
//! events it is evicted from memory while the sockets stay open; the next
//! message wakes it. "ping" is answered with "pong" by the runtime alone.

use std::sync::Arc;

use axum::extract::Request as AxumRequest;
use objects::BoxError;
use objects::CloseEvent;
use objects::{Context, Message, Namespace, Object, Request, Response, Result, Runtime, WebSocket};

struct EchoRoom;

impl Object for EchoRoom {
    type Env = ();
    type Call = ();
    type Reply = ();

    async fn new(ctx: &mut Context, _env: Arc<()>) -> Result<Self, BoxError> {
        println!("room {} constructed", ctx.name().unwrap_or("?"));
        ctx.set_auto_response(Some(("ping", "pong")))?;
        Ok(EchoRoom)
    }

    async fn fetch(&mut self, ctx: &mut Context, mut req: Request) -> Result<Response, BoxError> {
        match ctx.accept_websocket(&mut req, &[]) {
            Ok((_ws, resp)) => Ok(resp),
            Err(e) => Ok(http::Response::builder()
                .status(400)
                .body(e.to_string().into())
                .map_err(objects::BoxError::from)?),
        }
    }

    async fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        msg: Message,
    ) -> Result<(), BoxError> {
        let present = ctx.websockets(None).len();
        match msg {
            Message::Text(t) => ctx.send(ws, format!("[{present} here] {t}")),
            Message::Binary(b) => ctx.send(ws, b),
        }
        Ok(())
    }

    async fn websocket_close(
        &mut self,
        _ctx: &mut Context,
        _ws: WebSocket,
        _close: CloseEvent,
    ) -> Result<(), BoxError> {
        Ok(())
    }
}

async fn front(rooms: Namespace<EchoRoom>, req: AxumRequest) -> axum::response::Response {
    let room = req
        .uri()
        .path()
        .strip_prefix("/echo/")
        .unwrap_or("lobby")
        .to_string();
    // Keeps the request's extensions, where the upgrade handle is.
    let req = match objects::buffer_request(req, 4096).await {
        Ok(req) => req,
        Err(e) => return axum::response::Response::new(axum::body::Body::from(e.to_string())),
    };
    match rooms.get_by_name(&room).fetch(req).await {
        Ok(resp) => resp.map(axum::body::Body::from),
        Err(e) => axum::response::Response::new(axum::body::Body::from(e.to_string())),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rt = Runtime::builder().data_dir("data/ws_echo").open()?;
    let rooms = rt.namespace::<EchoRoom>("echo", ())?;
    let app = axum::Router::new().fallback(move |req: AxumRequest| front(rooms.clone(), req));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8788").await?;
    println!("listening on ws://{}/echo/<room>", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    rt.shutdown().await;
    Ok(())
}
