//! The trait users implement, and the types its handlers take.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::alarm::AlarmInfo;
use crate::context::Context;
use crate::error::{BoxError, Error};
use crate::http::{Request, Response};
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
