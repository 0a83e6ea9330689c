//! The trait users implement, and the types its handlers take.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::alarm::AlarmInfo;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::websocket::{Message, WebSocket};

/// A durable object type: one instance per id, one event at a time.
///
/// Every handler gets `&mut self` and the object's [`Context`] (its id,
/// storage and sockets). An error or panic escaping a handler *resets* the
/// object: the instance is dropped, its uncommitted writes and held output
/// are discarded, the caller gets [`Error::Reset`], and the next event
/// constructs a fresh instance from storage. Return application errors
/// inside your response or reply type instead. ([`Error::NotImplemented`]
/// from a default handler does not reset.)
///
/// ```
/// use objects::{Context, Object, Result};
/// use std::sync::Arc;
///
/// struct Counter { n: u64 }
///
/// impl Object for Counter {
///     type Env = ();
///     type Call = u64;   // add this much
///     type Reply = u64;  // the new total
///
///     async fn new(ctx: &mut Context, _env: Arc<()>) -> Result<Self> {
///         Ok(Counter { n: ctx.storage().get("n")?.unwrap_or(0) })
///     }
///
///     async fn call(&mut self, ctx: &mut Context, add: u64) -> Result<u64> {
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
    fn new(ctx: &mut Context, env: Arc<Self::Env>) -> impl Future<Output = Result<Self>> + Send;

    /// Handles an HTTP request (and WebSocket upgrades; see
    /// [`Context::accept_websocket`]).
    fn fetch(
        &mut self,
        ctx: &mut Context,
        req: Request,
    ) -> impl Future<Output = Result<Response>> + Send {
        let _ = (ctx, req);
        async { Err(Error::NotImplemented("fetch")) }
    }

    /// Handles a typed RPC call.
    fn call(
        &mut self,
        ctx: &mut Context,
        call: Self::Call,
    ) -> impl Future<Output = Result<Self::Reply>> + Send {
        let _ = (ctx, call);
        async { Err(Error::NotImplemented("call")) }
    }

    /// Runs when the object's alarm fires. An error schedules a retry with
    /// backoff; success clears the alarm in the same commit as the handler's
    /// writes.
    fn alarm(
        &mut self,
        ctx: &mut Context,
        info: AlarmInfo,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (ctx, info);
        async { Err(Error::NotImplemented("alarm")) }
    }

    /// A message arrived on an accepted WebSocket.
    fn websocket_message(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        msg: Message,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (ctx, ws, msg);
        async { Err(Error::NotImplemented("websocket_message")) }
    }

    /// An accepted WebSocket closed (`clean` is false when the peer vanished
    /// without a Close frame; the code is then 1006).
    fn websocket_close(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        code: u16,
        reason: String,
        clean: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (ctx, ws, code, reason, clean);
        async { Err(Error::NotImplemented("websocket_close")) }
    }

    /// An accepted WebSocket failed (protocol error, oversize frame, slow
    /// reader cut off). A close event follows.
    fn websocket_error(
        &mut self,
        ctx: &mut Context,
        ws: WebSocket,
        error: String,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (ctx, ws, error);
        async { Err(Error::NotImplemented("websocket_error")) }
    }
}
