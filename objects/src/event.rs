//! What travels through an object's mailbox: events, the call chain they
//! arrived on, and how an event that cannot run is answered.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use tokio::sync::oneshot;

use crate::alarm::{AlarmInfo, AlarmOutcome};
use crate::error::{BoxError, Error, Result};
use crate::http::{Request, Response};
use crate::object::Object;
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
    },
}

impl<O: Object> Event<O> {
    /// The caller gave up (deadline passed, future dropped): skip the event.
    pub(crate) fn abandoned(&self) -> bool {
        match self {
            Event::Fetch(_, r) => r.is_closed(),
            Event::Call(_, r) => r.is_closed(),
            Event::Alarm { reply, .. } => reply.is_closed(),
            Event::Socket { .. } => false,
        }
    }

    pub(crate) fn refuse(self, e: Error) {
        match self {
            Event::Fetch(_, r) => {
                let _ = r.send(Err(e));
            }
            Event::Call(_, r) => {
                let _ = r.send(Err(e));
            }
            Event::Alarm { reply, .. } => {
                let _ = reply.send(alarm_failure(&e));
            }
            Event::Socket { .. } => {}
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
