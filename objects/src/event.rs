//! What travels through an object's mailbox: events, the call chain they
//! arrived on, and how an event that cannot run is answered.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;

use tokio::sync::oneshot;

use crate::alarm::{AlarmInfo, AlarmOutcome};
use crate::background::Done;
use crate::context::Context;
use crate::error::{BoxError, Error, EventTimeout, Result};
use crate::http::{Request, Response};
use crate::object::{Handler, Method, Object};
use crate::stream::StreamResponse;
use crate::websocket::socket::SocketEvent;

/// The objects an event is (transitively) waiting in, outermost first. A
/// call to an object already on the chain is a cycle and is refused.
#[derive(Clone, Default, Debug)]
pub(crate) struct CallChain(Arc<Vec<[u8; 32]>>);

impl CallChain {
    pub(crate) fn contains(&self, id: &[u8; 32]) -> bool {
        self.0.contains(id)
    }

    /// The ids, outermost first (to send the chain to another node).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn ids(&self) -> &[[u8; 32]] {
        &self.0
    }

    /// A chain that arrived from another node.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn from_ids(ids: Vec<[u8; 32]>) -> CallChain {
        CallChain(Arc::new(ids))
    }

    pub(crate) fn push(&self, id: [u8; 32]) -> CallChain {
        let mut v = Vec::with_capacity(self.0.len() + 1);
        v.extend_from_slice(&self.0);
        v.push(id);
        CallChain(Arc::new(v))
    }
}

tokio::task_local! {
    static CHAIN: CallChain;
}

/// The chain of the event running on this task, if any.
pub(crate) fn current_chain() -> CallChain {
    CHAIN.try_with(Clone::clone).unwrap_or_default()
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// What can happen to an object.
pub(crate) enum Event<O: Object> {
    Fetch(Box<Request>, Reply<Response>),
    FetchStream(Box<Request>, Reply<StreamResponse>),
    Call(O::Call, Reply<O::Reply>),
    /// The alarm set for `info.scheduled` is due. With `abandon`, its
    /// retries are used up: clear it without running the handler.
    Alarm {
        info: AlarmInfo,
        abandon: bool,
        reply: oneshot::Sender<AlarmOutcome>,
    },
    /// Something happened on an accepted WebSocket.
    Socket {
        sid: u64,
        event: SocketEvent,
        /// A message's share of the object's byte budget, given back when
        /// the event is taken out of the mailbox.
        charge: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    /// A typed method (`Stub::ask`), its reply type erased.
    Method(Box<dyn Invoke<O>>),
    /// A background future of instance `epoch` finished; `done` is its
    /// continuation (`context::Continuation<O>`, type-erased).
    Background {
        epoch: u64,
        done: Done,
        /// Its slot in the object's bound, given back when the event is
        /// taken out of the mailbox.
        running: crate::background::Running,
    },
}

impl<O: Object> Event<O> {
    /// The caller gave up (deadline passed, future dropped): skip the event.
    pub(crate) fn abandoned(&self) -> bool {
        match self {
            Event::Fetch(_, r) => r.is_closed(),
            Event::FetchStream(_, r) => r.is_closed(),
            Event::Call(_, r) => r.is_closed(),
            Event::Method(m) => m.abandoned(),
            Event::Alarm { reply, .. } => reply.is_closed(),
            Event::Socket { .. } | Event::Background { .. } => false,
        }
    }

    pub(crate) fn refuse(self, e: Error) {
        match self {
            Event::Fetch(_, r) => {
                let _ = r.send(Err(e));
            }
            Event::FetchStream(_, r) => {
                let _ = r.send(Err(e));
            }
            Event::Call(_, r) => {
                let _ = r.send(Err(e));
            }
            Event::Alarm { reply, .. } => {
                let _ = reply.send(alarm_failure(&e));
            }
            Event::Method(m) => m.refuse(e),
            Event::Socket { .. } | Event::Background { .. } => {}
        }
    }
}

/// A typed method on its way to object type `O`, its types erased so one
/// mailbox carries every method of `O`.
pub(crate) trait Invoke<O>: Send {
    /// The caller gave up.
    fn abandoned(&self) -> bool;
    /// Answers the caller without running the handler.
    fn refuse(self: Box<Self>, e: Error);
    /// Starts the handler. Returns how to answer the caller if the event
    /// fails (usable even after the future is dropped at the time limit)
    /// and the handler's future, whose success is the held reply.
    fn start<'a>(self: Box<Self>, object: &'a mut O, ctx: &'a mut Context) -> Started<'a>;
    /// The method for another node: its name, its request as JSON and
    /// where the JSON answer goes.
    #[cfg(feature = "cluster")]
    fn into_remote(self: Box<Self>) -> RemoteMethod;
}

/// A typed method leaving for the object's owner.
#[cfg(feature = "cluster")]
pub(crate) struct RemoteMethod {
    pub(crate) name: &'static str,
    pub(crate) body: serde_json::Result<Box<serde_json::value::RawValue>>,
    /// Decodes the owner's answer into the method's reply type and hands
    /// it to the caller (a reply that does not decode is `Unavailable`).
    pub(crate) finish: Finish,
    /// Resolves once the caller gave up waiting (or was answered).
    pub(crate) closed: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// See [`RemoteMethod::finish`].
#[cfg(feature = "cluster")]
pub(crate) type Finish = Box<dyn FnOnce(&crate::ObjectId, Result<Json>) + Send>;

/// A JSON text as it came off the wire.
#[cfg(feature = "cluster")]
pub(crate) type Json = Box<serde_json::value::RawValue>;

/// A started method: its refusal and its future.
pub(crate) type Started<'a> = (
    Box<dyn FnOnce(Error) + Send>,
    Pin<Box<dyn Future<Output = Result<Box<dyn HeldReply>, BoxError>> + Send + 'a>>,
);

/// A method's reply, held until its event's writes are durable.
pub(crate) trait HeldReply: Send {
    /// The writes are durable: send the reply.
    fn release(self: Box<Self>);
    /// They are not: send the error instead.
    fn fail(self: Box<Self>, e: Error);
}

/// The reply channel of one method call, shared by the handler's future
/// (which may be dropped) and its refusal.
type Slot<R> = Arc<Mutex<Option<Reply<R>>>>;

/// Resolves once the caller has dropped its receiver, or was answered.
#[cfg(feature = "cluster")]
fn given_up<R: Send + 'static>(slot: Slot<R>) -> impl Future<Output = ()> + Send + 'static {
    std::future::poll_fn(move |cx| match crate::sync::lock(&slot).as_mut() {
        Some(tx) => tx.poll_closed(cx),
        None => std::task::Poll::Ready(()),
    })
}

fn answer<R>(slot: &Slot<R>, r: Result<R>) {
    if let Some(tx) = crate::sync::lock(slot).take() {
        let _ = tx.send(r);
    }
}

/// A typed method call: the request and where its reply goes.
pub(crate) struct Pending<M: Method> {
    msg: M,
    slot: Slot<M::Reply>,
}

impl<M: Method> Pending<M> {
    pub(crate) fn new(msg: M, reply: Reply<M::Reply>) -> Self {
        Pending {
            msg,
            slot: Arc::new(Mutex::new(Some(reply))),
        }
    }
}

struct Ready<R> {
    value: R,
    slot: Slot<R>,
}

impl<R: Send> HeldReply for Ready<R> {
    fn release(self: Box<Self>) {
        answer(&self.slot, Ok(self.value));
    }
    fn fail(self: Box<Self>, e: Error) {
        answer(&self.slot, Err(e));
    }
}

impl<M: Method, O: Handler<M>> Invoke<O> for Pending<M> {
    fn abandoned(&self) -> bool {
        crate::sync::lock(&self.slot)
            .as_ref()
            .is_none_or(oneshot::Sender::is_closed)
    }

    fn refuse(self: Box<Self>, e: Error) {
        answer(&self.slot, Err(e));
    }

    fn start<'a>(self: Box<Self>, object: &'a mut O, ctx: &'a mut Context) -> Started<'a> {
        let Pending { msg, slot } = *self;
        let refuse_slot = slot.clone();
        let refuse: Box<dyn FnOnce(Error) + Send> = Box::new(move |e| answer(&refuse_slot, Err(e)));
        let fut = async move {
            let value = object.handle(ctx, msg).await?;
            Ok(Box::new(Ready { value, slot }) as Box<dyn HeldReply>)
        };
        (refuse, Box::pin(fut))
    }

    #[cfg(feature = "cluster")]
    fn into_remote(self: Box<Self>) -> RemoteMethod {
        let Pending { msg, slot } = *self;
        let closed = given_up(slot.clone());
        RemoteMethod {
            name: M::name(),
            body: serde_json::value::to_raw_value(&msg),
            closed: Box::pin(closed),
            finish: Box::new(move |id, answer_json| {
                let r = answer_json.and_then(|raw| {
                    serde_json::from_str::<M::Reply>(raw.get()).map_err(|e| Error::Unavailable {
                        id: id.clone(),
                        reason: format!("the owner's reply does not decode: {e}"),
                    })
                });
                answer(&slot, r);
            }),
        }
    }
}

/// How a failed alarm run counts: handler failures count as retries,
/// failures of the runtime do not.
pub(crate) fn alarm_failure(e: &Error) -> AlarmOutcome {
    match e {
        Error::ShuttingDown
        | Error::Overloaded { .. }
        | Error::Storage(_)
        | Error::Unavailable { .. } => AlarmOutcome::Infra(e.to_string()),
        e => AlarmOutcome::Failed(e.to_string()),
    }
}

/// An event with the call chain it arrived on.
pub(crate) struct Envelope<O: Object> {
    pub(crate) event: Event<O>,
    pub(crate) chain: CallChain,
}

/// A handler panicked; the payload's text, when it had one.
#[derive(Debug, thiserror::Error)]
#[error("handler panicked: {0}")]
pub(crate) struct Panicked(String);

/// Runs a handler future as [`guarded`] does, within the namespace's
/// event time limit: past it the future is dropped and the event fails
/// with [`EventTimeout`].
pub(crate) async fn limited<T>(
    chain: &CallChain,
    limit: std::time::Duration,
    fut: impl Future<Output = Result<T, BoxError>>,
) -> Result<T, BoxError> {
    match tokio::time::timeout(limit, guarded(chain, fut)).await {
        Ok(r) => r,
        Err(_) => Err(Box::new(EventTimeout { limit })),
    }
}

/// Runs a handler future with the call chain set, turning a panic into an
/// error.
pub(crate) async fn guarded<T>(
    chain: &CallChain,
    fut: impl Future<Output = Result<T, BoxError>>,
) -> Result<T, BoxError> {
    match CHAIN
        .scope(chain.clone(), AssertUnwindSafe(fut).catch_unwind())
        .await
    {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            Err(Box::new(Panicked(msg)))
        }
    }
}

// ------------------------------------------------ events from other nodes

/// The answer to an event another node sent.
#[cfg(feature = "cluster")]
pub(crate) type RemoteAnswer =
    std::pin::Pin<Box<dyn Future<Output = crate::remote::Answer> + Send>>;

/// Turns a typed method that another node sent into the event to queue and
/// the answer to send back (one per method a namespace accepts).
#[cfg(feature = "cluster")]
pub(crate) type MethodEntry<O> =
    fn(
        crate::id::ObjectId,
        std::time::Duration,
        &serde_json::value::RawValue,
    ) -> std::result::Result<(Box<dyn Invoke<O>>, RemoteAnswer), String>;

/// The [`MethodEntry`] of method `M`.
#[cfg(feature = "cluster")]
pub(crate) fn method_entry<O, M>(
    id: crate::id::ObjectId,
    deadline: std::time::Duration,
    body: &serde_json::value::RawValue,
) -> std::result::Result<(Box<dyn Invoke<O>>, RemoteAnswer), String>
where
    O: crate::object::Handler<M>,
    M: crate::object::Method,
{
    let msg: M = serde_json::from_str(body.get())
        .map_err(|e| format!("the method {} does not decode: {e}", M::name()))?;
    let (tx, rx) = oneshot::channel();
    let invoke = Box::new(Pending::new(msg, tx));
    Ok((invoke, remote_answer(id, deadline, rx, |r: M::Reply| r)))
}

/// Waits for a local event's reply (at most `deadline`) and turns it into
/// the JSON answer or refusal for the node that sent the event.
#[cfg(feature = "cluster")]
pub(crate) fn remote_answer<T: Send + 'static, W: serde::Serialize + 'static>(
    id: crate::id::ObjectId,
    deadline: std::time::Duration,
    rx: oneshot::Receiver<Result<T>>,
    wire: fn(T) -> W,
) -> RemoteAnswer {
    use crate::remote::{Refusal, refusal};
    Box::pin(async move {
        let r = match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::DeadlineExceeded { id, deadline }),
        };
        match r {
            Ok(v) => serde_json::value::to_raw_value(&wire(v)).map_err(|e| Refusal::Failed {
                message: format!("the reply does not serialise: {e}"),
            }),
            Err(e) => Err(refusal(&e)),
        }
    })
}

#[cfg(all(test, feature = "cluster"))]
mod tests {
    use super::*;

    #[test]
    fn a_method_sent_away_sees_its_caller_give_up() {
        let (tx, rx) = oneshot::channel::<Result<u32>>();
        let slot: Slot<u32> = Arc::new(Mutex::new(Some(tx)));
        let mut waiting = Box::pin(given_up(slot.clone()));
        assert!((&mut waiting).now_or_never().is_none(), "the caller waits");
        drop(rx);
        assert!(waiting.now_or_never().is_some(), "the caller gave up");
        // Answered: nothing left to wait for.
        let (tx, _rx) = oneshot::channel::<Result<u32>>();
        let slot: Slot<u32> = Arc::new(Mutex::new(Some(tx)));
        answer(&slot, Ok(1));
        assert!(given_up(slot).now_or_never().is_some());
    }
}
