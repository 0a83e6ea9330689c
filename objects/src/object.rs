//! The trait users implement, and the types its handlers take.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::alarm::AlarmInfo;
use crate::context::Context;
use crate::error::{BoxError, Error};
use crate::http::{Request, Response};
use crate::storage::Timer;
use crate::stream::StreamResponse;
use crate::websocket::{CloseEvent, Message, WebSocket};

/// A durable object type: one instance per id, one event at a time.
///
/// Every handler gets `&mut self` and the object's [`Context`] (its id,
/// storage and sockets), and may fail with any error ([`BoxError`]: `?`
/// works on any `std::error::Error`). An error or panic escaping a handler
/// *resets* the object: the instance is dropped, its uncommitted writes and
/// held output are discarded, the caller gets [`Error::Reset`] with the
/// handler's error as its source, and the next event constructs a fresh
/// instance from storage. Return application errors inside your response
/// or reply type instead. ([`Error::NotImplemented`] from a default handler
/// does not reset.)
///
/// ```
/// use objects::{BoxError, Context, Object};
/// use std::sync::Arc;
///
/// struct Counter { n: u64 }
///
/// impl Object for Counter {
///     type Env = ();
///     type Call = u64;   // add this much
///     type Reply = u64;  // the new total
///
///     async fn new(ctx: &mut Context, _env: Arc<()>) -> Result<Self, BoxError> {
///         Ok(Counter { n: ctx.storage().get("n")?.unwrap_or(0) })
///     }
///
///     async fn call(&mut self, ctx: &mut Context, add: u64) -> Result<u64, BoxError> {
///         self.n += add;
///         ctx.storage().put("n", &self.n)?;
///         Ok(self.n)
///     }
/// }
/// ```
pub trait Object: Sized + Send + 'static {
    /// Shared configuration and handles (other namespaces, settings) given to
    /// every instance.
    type Env: Send + Sync + 'static;
    /// The typed RPC request. Serialisable so calls can cross machines later.
    type Call: Serialize + DeserializeOwned + Send + 'static;
    /// The typed RPC reply.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// Builds an instance; runs before the first event after activation,
    /// eviction, hibernation or reset. Read what you need from storage here.
    fn new(
        ctx: &mut Context,
        env: Arc<Self::Env>,
    ) -> impl Future<Output = Result<Self, BoxError>> + Send;

    /// Handles an HTTP request (and WebSocket upgrades; see
    /// [`Context::accept_websocket`]).
    fn fetch(
        &mut self,
        ctx: &mut Context,
        req: Request,
    ) -> impl Future<Output = Result<Response, BoxError>> + Send {
        let _ = (ctx, req);
        async { Err(Error::NotImplemented("fetch").into()) }
    }

    /// Handles an HTTP request whose response body is streamed: make the
    /// body with [`Context::body_channel`], keep its sender, return the
    /// response; later events send chunks with [`Context::stream_send`].
    /// The object is free for other events as soon as this returns; the
    /// response leaves once this event's writes are durable.
    fn fetch_stream(
        &mut self,
        ctx: &mut Context,
        req: Request,
    ) -> impl Future<Output = Result<StreamResponse, BoxError>> + Send {
        let _ = (ctx, req);
        async { Err(Error::NotImplemented("fetch_stream").into()) }
    }

    /// Handles a typed RPC call.
    fn call(
        &mut self,
        ctx: &mut Context,
        call: Self::Call,
    ) -> impl Future<Output = Result<Self::Reply, BoxError>> + Send {
        let _ = (ctx, call);
        async { Err(Error::NotImplemented("call").into()) }
    }

    /// Runs when the object's alarm fires. An error schedules a retry with
    /// backoff; success clears the alarm in the same commit as the handler's
    /// writes.
    fn alarm(
        &mut self,
        ctx: &mut Context,
        info: AlarmInfo,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (ctx, info);
        async { Err(Error::NotImplemented("alarm").into()) }
    }

    /// Runs when one of the object's timers is due (see
    /// [`Context::timers`]). An error undoes the handler's writes, resets
    /// the object and delivers the timer again with backoff (its retry
    /// count is stored with it); success removes a one-shot timer or sets
    /// a repeating one a period on.
    fn timer(
        &mut self,
        ctx: &mut Context,
        timer: Timer,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (ctx, timer);
        async { Err(Error::NotImplemented("timer").into()) }
    }

    /// A message arrived on an accepted WebSocket.
    fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        msg: Message,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (ctx, ws, msg);
        async { Err(Error::NotImplemented("websocket_message").into()) }
    }

    /// An accepted WebSocket closed (see [`CloseEvent`]).
    fn websocket_close(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        close: CloseEvent,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (ctx, ws, close);
        async { Err(Error::NotImplemented("websocket_close").into()) }
    }

    /// An accepted WebSocket failed (protocol error, oversize frame, slow
    /// reader cut off). A close event follows.
    fn websocket_error(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        error: String,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (ctx, ws, error);
        async { Err(Error::NotImplemented("websocket_error").into()) }
    }
}

/// One request type of an object's typed methods, with its own reply type.
/// Requests and replies are serde types so a transport can carry them.
///
/// Implement it for each request, and [`Handler`] for each object that
/// answers it; callers use [`Stub::ask`](crate::Stub::ask), whose future
/// resolves to exactly `Self::Reply`.
pub trait Method: Serialize + DeserializeOwned + Send + 'static {
    /// What the object answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// The method's name between the nodes of a cluster, where the owner
    /// of an object finds the method by it (see
    /// [`Namespace::accept`](crate::Namespace::accept)). The default, the
    /// Rust type's path, is the same on every node that runs the same
    /// build; give a fixed name to let nodes of different builds talk.
    fn name() -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// An object answers the typed method `M`: one `impl Handler<M>` per
/// request type, as actix does, instead of one enum of requests and one of
/// replies. Runs as any event does (one at a time, the reply held until
/// the event's writes are durable, an error resetting the object).
///
/// ```
/// use objects::{BoxError, Context, Handler, Method, Object};
/// use serde::{Deserialize, Serialize};
/// use std::sync::Arc;
///
/// struct Room { members: Vec<String> }
///
/// #[derive(Serialize, Deserialize)]
/// struct Join(String);
/// impl Method for Join { type Reply = usize; }       // members now
///
/// #[derive(Serialize, Deserialize)]
/// struct Members;
/// impl Method for Members { type Reply = Vec<String>; }
///
/// impl Object for Room {
///     type Env = ();
///     type Call = ();
///     type Reply = ();
///     async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
///         Ok(Room { members: Vec::new() })
///     }
/// }
///
/// impl Handler<Join> for Room {
///     async fn handle(&mut self, _: &mut Context, Join(who): Join) -> Result<usize, BoxError> {
///         self.members.push(who);
///         Ok(self.members.len())
///     }
/// }
///
/// impl Handler<Members> for Room {
///     async fn handle(&mut self, _: &mut Context, _: Members) -> Result<Vec<String>, BoxError> {
///         Ok(self.members.clone())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> objects::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let rt = objects::Runtime::builder().data_dir(dir.path()).open()?;
/// let rooms = rt.namespace::<Room>("rooms", ())?;
/// let room = rooms.get_by_name("lobby");
/// let n: usize = room.ask(Join("ada".into())).await?;
/// let who: Vec<String> = room.ask(Members).await?;
/// assert_eq!((n, who), (1, vec!["ada".to_string()]));
/// # rt.shutdown().await;
/// # Ok(()) }
/// ```
///
/// A reply is tied to its request: asking `Join` for a `String` does not
/// compile.
///
/// ```compile_fail
/// # use objects::{BoxError, Context, Handler, Method, Object};
/// # use serde::{Deserialize, Serialize};
/// # use std::sync::Arc;
/// # struct Room;
/// # #[derive(Serialize, Deserialize)]
/// # struct Join(String);
/// # impl Method for Join { type Reply = usize; }
/// # impl Object for Room {
/// #     type Env = (); type Call = (); type Reply = ();
/// #     async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> { Ok(Room) }
/// # }
/// # impl Handler<Join> for Room {
/// #     async fn handle(&mut self, _: &mut Context, _: Join) -> Result<usize, BoxError> { Ok(1) }
/// # }
/// # async fn f(room: objects::Stub<Room>) -> objects::Result<()> {
/// let name: String = room.ask(Join("ada".into())).await?;
/// # Ok(()) }
/// ```
///
/// Nor does a handler that answers the wrong type:
///
/// ```compile_fail
/// # use objects::{BoxError, Context, Handler, Method, Object};
/// # use serde::{Deserialize, Serialize};
/// # use std::sync::Arc;
/// # struct Room;
/// # #[derive(Serialize, Deserialize)]
/// # struct Join(String);
/// # impl Method for Join { type Reply = usize; }
/// # impl Object for Room {
/// #     type Env = (); type Call = (); type Reply = ();
/// #     async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> { Ok(Room) }
/// # }
/// impl Handler<Join> for Room {
///     async fn handle(&mut self, _: &mut Context, _: Join) -> Result<String, BoxError> {
///         Ok("one".into())
///     }
/// }
/// ```
///
/// Nor asking an object a method it does not handle:
///
/// ```compile_fail
/// # use objects::{BoxError, Context, Handler, Method, Object};
/// # use serde::{Deserialize, Serialize};
/// # use std::sync::Arc;
/// # struct Room;
/// # #[derive(Serialize, Deserialize)]
/// # struct Leave;
/// # impl Method for Leave { type Reply = (); }
/// # impl Object for Room {
/// #     type Env = (); type Call = (); type Reply = ();
/// #     async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> { Ok(Room) }
/// # }
/// # async fn f(room: objects::Stub<Room>) -> objects::Result<()> {
/// room.ask(Leave).await?;
/// # Ok(()) }
/// ```
pub trait Handler<M: Method>: Object {
    /// Answers one request.
    fn handle(
        &mut self,
        ctx: &mut Context,
        msg: M,
    ) -> impl Future<Output = Result<M::Reply, BoxError>> + Send;
}
