//! One live object: a task that owns the instance, takes events from its
//! mailbox one at a time, commits their writes, and only then lets their
//! output go (the output gate).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::alarm::{AlarmKey, AlarmOutcome};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::namespace::{NsDeliver, NsInner, enqueue};
use crate::object::{AlarmInfo, Object, Request, Response};
use crate::storage::Storage;
use crate::websocket::WebSocket;
use crate::websocket::socket::SocketEvent;

/// The objects an event is (transitively) waiting in, outermost first. A
/// call to an object already on the chain is a cycle and is refused.
#[derive(Clone, Default, Debug)]
pub(crate) struct CallChain(Arc<Vec<[u8; 32]>>);

impl CallChain {
    pub(crate) fn contains(&self, id: &[u8; 32]) -> bool {
        self.0.contains(id)
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

type Reply<T> = oneshot::Sender<Result<T>>;

/// What can happen to an object.
pub(crate) enum Event<O: Object> {
    Fetch(Box<Request>, Reply<Response>),
    Call(O::Call, Reply<O::Reply>),
    /// The alarm set for `info.scheduled_ms` is due. With `abandon`, its
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
    fn abandoned(&self) -> bool {
        match self {
            Event::Fetch(_, r) => r.is_closed(),
            Event::Call(_, r) => r.is_closed(),
            Event::Alarm { reply, .. } => reply.is_closed(),
            Event::Socket { .. } => false,
        }
    }

    fn refuse(self, e: Error) {
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
fn alarm_failure(e: &Error) -> AlarmOutcome {
    match e {
        Error::ShuttingDown | Error::Overloaded { .. } | Error::Storage(_) => {
            AlarmOutcome::Infra(e.to_string())
        }
        e => AlarmOutcome::Failed(e.to_string()),
    }
}

/// An event with the call chain it arrived on.
pub(crate) struct Envelope<O: Object> {
    pub(crate) event: Event<O>,
    pub(crate) chain: CallChain,
}

/// A finished event's output, held until its writes are durable.
enum Held<O: Object> {
    Fetch(Response, Reply<Response>),
    Call(O::Reply, Reply<O::Reply>),
    Alarm(oneshot::Sender<AlarmOutcome>),
    None,
}

impl<O: Object> Held<O> {
    /// An alarm event that finished without running the handler.
    fn alarm(event: Event<O>) -> Held<O> {
        match event {
            Event::Alarm { reply, .. } => Held::Alarm(reply),
            other => {
                // Only alarm events are passed here; answer anything else
                // with an error rather than dropping its caller.
                other.refuse(Error::app("internal: not an alarm event"));
                Held::None
            }
        }
    }

    fn release(self) {
        match self {
            Held::Fetch(v, r) => {
                let _ = r.send(Ok(v));
            }
            Held::Call(v, r) => {
                let _ = r.send(Ok(v));
            }
            Held::Alarm(r) => {
                let _ = r.send(AlarmOutcome::Done);
            }
            Held::None => {}
        }
    }

    /// The commit failed: a failure of the runtime, not of the handler.
    fn fail(self, e: Error) {
        match self {
            Held::Fetch(_, r) => {
                let _ = r.send(Err(e));
            }
            Held::Call(_, r) => {
                let _ = r.send(Err(e));
            }
            Held::Alarm(r) => {
                let _ = r.send(AlarmOutcome::Infra(e.to_string()));
            }
            Held::None => {}
        }
    }
}

/// How the namespace reaches a running activation besides its mailbox.
pub(crate) struct Nudges {
    /// Leave memory now if the mailbox is empty (the live cap).
    pub(crate) evict: Arc<Notify>,
    /// Where the activation records the namespace tick of its last event.
    pub(crate) last_active: Arc<AtomicU64>,
}

pub(crate) fn spawn<O: Object>(
    ns: Arc<NsInner<O>>,
    id: ObjectId,
    generation: u64,
    rx: mpsc::Receiver<Envelope<O>>,
    nudges: Nudges,
) {
    let shared = ns.shared.clone();
    let guard = shared.enter_task();
    let ns_for_error = ns.clone();
    let id_for_error = id.clone();
    // Every event of this activation runs inside this span, so whatever a
    // handler logs carries the object's namespace and id.
    let span = tracing::info_span!("object", namespace = %ns.name, id = %crate::id::log_label(id.as_bytes()));
    let task = async move {
        let _guard = guard;
        // Rebound after the guard so they drop before it: shutdown waits on
        // the guard, and these keep the store open.
        let (ns_for_error, id_for_error) = (ns_for_error, id_for_error);
        let activation = match Activation::new(ns, id, generation, rx, nudges) {
            Ok(a) => a,
            Err((mut rx, e)) => {
                // Leave the map before closing the mailbox, so senders
                // waiting for room start a new activation.
                ns_for_error
                    .live
                    .remove_if(id_for_error.as_bytes(), |_, s| s.generation == generation);
                let msg = e.to_string();
                rx.close();
                while let Ok(env) = rx.try_recv() {
                    env.event.refuse(Error::app(&msg));
                }
                return;
            }
        };
        activation.run().await;
    };
    tokio::spawn(tracing::Instrument::instrument(task, span));
}

struct Activation<O: Object> {
    ns: Arc<NsInner<O>>,
    id: ObjectId,
    generation: u64,
    rx: mpsc::Receiver<Envelope<O>>,
    instance: Option<O>,
    ctx: Context,
    nudges: Nudges,
}

type NewError<O> = (mpsc::Receiver<Envelope<O>>, Error);

impl<O: Object> Activation<O> {
    fn new(
        ns: Arc<NsInner<O>>,
        id: ObjectId,
        generation: u64,
        rx: mpsc::Receiver<Envelope<O>>,
        nudges: Nudges,
    ) -> std::result::Result<Self, NewError<O>> {
        let store = ns.shared.store.clone();
        let catalog = match store.catalog_entry(id.as_bytes()) {
            Ok(c) => c,
            Err(e) => return Err((rx, e.into())),
        };
        let id = id.with_name(
            catalog
                .as_ref()
                .and_then(|(_, n)| n.as_deref())
                .map(Arc::from),
        );
        let storage = Storage::new(
            store,
            *id.as_bytes(),
            ns.name.clone(),
            id.name().map(Arc::from),
            catalog.is_some(),
        );
        let table = ns.sockets.entry(*id.as_bytes()).or_default().clone();
        let deliver = Arc::new(NsDeliver(ns.clone()));
        let ctx = Context::new(id.clone(), storage, ns.shared.clone(), table, deliver);
        ns.shared.metrics.activations.increment(1);
        tracing::debug!(namespace = %ns.name, "object activated");
        Ok(Activation {
            ns,
            id,
            generation,
            rx,
            instance: None,
            ctx,
            nudges,
        })
    }

    async fn run(mut self) {
        let mut shutdown = self.ns.shared.shutdown.subscribe();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            // An object whose only work is accepted sockets hibernates
            // sooner than an idle one is evicted.
            let idle = if self.ctx.holds_sockets() {
                self.ns.shared.options.hibernation_timeout
            } else {
                self.ns.shared.options.idle_timeout
            };
            let envelope = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                m = self.rx.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
                () = tokio::time::sleep(idle) => {
                    if self.try_evict() {
                        return;
                    }
                    continue;
                }
                // The namespace is over its live cap and this is the
                // idlest object it saw.
                () = self.nudges.evict.notified() => {
                    if self.try_evict() {
                        return;
                    }
                    continue;
                }
            };
            let tick = self.ns.ticks.fetch_add(1, Ordering::Relaxed);
            self.nudges.last_active.store(tick, Ordering::Relaxed);
            self.run_group(envelope).await;
        }
        // Shutting down: in-flight work is done; refuse what is queued.
        self.rx.close();
        while let Ok(env) = self.rx.try_recv() {
            env.event.refuse(Error::ShuttingDown);
        }
        let generation = self.generation;
        self.ns
            .live
            .remove_if(self.id.as_bytes(), |_, s| s.generation == generation);
    }

    /// Leaves the live map if nothing is queued. The check runs under the
    /// map's write lock, which senders hold (shared) while they enqueue.
    fn try_evict(&mut self) -> bool {
        let generation = self.generation;
        let rx = &self.rx;
        let ns = &self.ns;
        let left = ns
            .live
            .remove_if(self.id.as_bytes(), |id, s| {
                let go = s.generation == generation && rx.is_empty();
                if go {
                    // Under the live map's lock (always taken before the
                    // socket map's), so no new activation can pick up the
                    // table we drop.
                    ns.sockets
                        .remove_if(id, |_, t| t.lock().map(|t| t.is_empty()).unwrap_or(false));
                }
                go
            })
            .is_some();
        if !left {
            return false;
        }
        self.ns.shared.metrics.evictions.increment(1);
        tracing::debug!(namespace = %self.ns.name, "object evicted");
        // A waiting sender (socket frames) may have cloned the mailbox
        // before we left: close it and pass on anything that got in, which
        // starts the next activation.
        self.rx.close();
        while let Ok(env) = self.rx.try_recv() {
            if let Err(e) = enqueue(&self.ns, &self.id, env) {
                tracing::warn!(object = %crate::id::log_label(self.id.as_bytes()), error = %e, "event lost at eviction");
            }
        }
        true
    }

    /// Runs the queued events back to back (up to the configured bound),
    /// then commits their writes at once and releases their output.
    async fn run_group(&mut self, first: Envelope<O>) {
        let max = self.ns.shared.options.max_events_per_commit.max(1);
        let mut held: Vec<Held<O>> = Vec::new();
        let mut next = Some(first);
        while let Some(envelope) = next.take() {
            if !envelope.event.abandoned() {
                let sp = self.ctx.storage().overlay_mut().savepoint();
                let outbox_mark = self.ctx.outbox_len();
                match self.run_event(envelope).await {
                    Ok(h) => {
                        self.ctx.storage().overlay_mut().release(sp);
                        held.push(h);
                    }
                    Err((event_reply, e)) => {
                        // This event's writes and output go; earlier ones in
                        // the group stay and commit below.
                        let broken = self.ctx.storage().broken.clone();
                        self.ctx.storage().overlay_mut().rollback(sp);
                        self.ctx.storage().end_event();
                        self.ctx.truncate_outbox(outbox_mark);
                        if let Some(cause) = broken {
                            // A sync in this event failed, taking the
                            // earlier events' writes with it.
                            event_reply(self.reset_error(&e));
                            self.fail_group(held, &cause);
                            return;
                        }
                        if !matches!(e, Error::NotImplemented(_)) {
                            self.drop_instance();
                        }
                        event_reply(self.reset_error(&e));
                        break;
                    }
                }
                if let Some(cause) = self.ctx.storage().broken.clone() {
                    // A sync inside the event failed: everything in the
                    // group was part of that commit.
                    self.fail_group(held, &cause);
                    return;
                }
            }
            if held.len() >= max || self.ns.shared.is_shutting_down() {
                break;
            }
            next = self.rx.try_recv().ok();
        }
        let committed = self.ctx.storage().commit().await;
        // Alarm changes made durable (here or by a sync during the group)
        // reach the schedule whether or not the rest succeeded.
        self.publish_alarm();
        match committed {
            Ok(()) => {
                self.ctx.release_outbox();
                for h in held {
                    h.release();
                }
            }
            Err(e) => self.fail_group(held, &e.to_string()),
        }
    }

    fn publish_alarm(&mut self) {
        if let Some(at) = self.ctx.storage().take_durable_alarm() {
            let key = AlarmKey {
                id: *self.id.as_bytes(),
                namespace: self.ns.name.clone(),
            };
            self.ns.shared.alarms.committed(key, at);
        }
    }

    fn fail_group(&mut self, held: Vec<Held<O>>, cause: &str) {
        self.publish_alarm();
        self.reset();
        let cause = format!("commit failed: {cause}");
        for h in held {
            h.fail(Error::Reset {
                id: self.id.to_hex(),
                cause: cause.clone(),
            });
        }
    }

    /// Drops the instance and everything uncommitted.
    fn reset(&mut self) {
        self.drop_instance();
        self.ctx.storage().discard();
        self.ctx.truncate_outbox(0);
    }

    /// Drops the instance only; the next event constructs a fresh one.
    fn drop_instance(&mut self) {
        if self.instance.take().is_some() {
            self.ns.shared.metrics.resets.increment(1);
            tracing::warn!(object = %crate::id::log_label(self.id.as_bytes()), namespace = %self.ns.name, "object reset");
        }
    }

    fn reset_error(&self, e: &Error) -> Error {
        match e {
            Error::NotImplemented(_) | Error::CallCycle { .. } => Error::app(e.to_string()),
            e => Error::Reset {
                id: self.id.to_hex(),
                cause: e.to_string(),
            },
        }
    }

    /// Runs one event. On failure returns how to answer its caller.
    #[allow(clippy::type_complexity)]
    async fn run_event(
        &mut self,
        envelope: Envelope<O>,
    ) -> std::result::Result<Held<O>, (Box<dyn FnOnce(Error) + Send>, Error)> {
        let Envelope { event, chain } = envelope;
        self.ns.shared.metrics.events.increment(1);
        if let Event::Alarm { info, abandon, .. } = &event {
            // The alarm may have been replaced or deleted since it was
            // scheduled; then there is nothing to run.
            match self.ctx.storage().alarm() {
                Ok(Some(t)) if t == info.scheduled_ms => {}
                Ok(_) => return Ok(Held::alarm(event)),
                Err(e) => return Err((Box::new(move |err| event.refuse(err)), e.into())),
            }
            // Cleared in the same commit as the handler's writes; rolled
            // back with them if the handler fails. Inside the handler,
            // `alarm()` reads nothing unless the handler sets a new one.
            self.ctx.storage().delete_alarm();
            if *abandon {
                self.ns.shared.metrics.alarms_dropped.increment(1);
                tracing::warn!(object = %crate::id::log_label(self.id.as_bytes()), namespace = %self.ns.name, retries = info.retry_count - 1, "alarm dropped: out of retries");
                return Ok(Held::alarm(event));
            }
        }
        if let Err(e) = self.ensure_instance(&chain).await {
            if let Event::Socket {
                sid,
                event: SocketEvent::Close { .. },
            } = &event
            {
                self.ctx.forget_socket(*sid);
            }
            return Err((Box::new(move |err| event.refuse(err)), e));
        }
        let Some(instance) = self.instance.as_mut() else {
            return Err((
                Box::new(move |err| event.refuse(err)),
                Error::app("instance missing"),
            ));
        };
        let ctx = &mut self.ctx;
        match event {
            Event::Fetch(req, reply) => match guarded(&chain, instance.fetch(ctx, *req)).await {
                Ok(resp) => Ok(Held::Fetch(resp, reply)),
                Err(e) => Err((Box::new(move |err| drop(reply.send(Err(err)))), e)),
            },
            Event::Call(call, reply) => match guarded(&chain, instance.call(ctx, call)).await {
                Ok(v) => Ok(Held::Call(v, reply)),
                Err(e) => Err((Box::new(move |err| drop(reply.send(Err(err)))), e)),
            },
            Event::Alarm { info, reply, .. } => {
                match guarded(&chain, instance.alarm(ctx, info)).await {
                    Ok(()) => {
                        self.ns.shared.metrics.alarms_fired.increment(1);
                        Ok(Held::Alarm(reply))
                    }
                    Err(e) => Err((
                        Box::new(move |err: Error| {
                            drop(reply.send(AlarmOutcome::Failed(err.to_string())))
                        }),
                        e,
                    )),
                }
            }
            Event::Socket { sid, event } => {
                let ws = WebSocket { sid };
                let (result, closed) = match event {
                    SocketEvent::Message(m) => (
                        guarded(&chain, instance.websocket_message(ctx, ws, m)).await,
                        false,
                    ),
                    SocketEvent::Close {
                        code,
                        reason,
                        clean,
                    } => (
                        guarded(
                            &chain,
                            instance.websocket_close(ctx, ws, code, reason, clean),
                        )
                        .await,
                        true,
                    ),
                    SocketEvent::Error(e) => (
                        guarded(&chain, instance.websocket_error(ctx, ws, e)).await,
                        false,
                    ),
                };
                if closed {
                    // The close handler has run: the socket is gone.
                    ctx.forget_socket(sid);
                }
                match result {
                    Ok(()) => Ok(Held::None),
                    Err(e) => Err((Box::new(|_| {}), e)),
                }
            }
        }
    }

    async fn ensure_instance(&mut self, chain: &CallChain) -> Result<()> {
        if self.instance.is_none() {
            let env = self.ns.env.clone();
            let instance = guarded(chain, O::new(&mut self.ctx, env)).await?;
            self.instance = Some(instance);
        }
        Ok(())
    }
}

/// Runs a handler future with the call chain set, turning a panic into an
/// error.
async fn guarded<T>(chain: &CallChain, fut: impl Future<Output = Result<T>>) -> Result<T> {
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
            Err(Error::app(format!("handler panicked: {msg}")))
        }
    }
}
