//! One live object: a task that owns the instance, takes events from its
//! mailbox one at a time, commits their writes, and only then lets their
//! output go (the output gate).

mod timers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::alarm::schedule::{Jitter, RetryPolicy};
use crate::alarm::{AlarmKey, AlarmOutcome};
use crate::clock::ClockMs;
use crate::context::{Context, Continuation};
use crate::dispatch::{Mail, NsDeliver, NsInner, enqueue};
use crate::error::{Aborted, BoxError, Error, EventTimeout};
use crate::event::{CallChain, Envelope, Event, HeldReply, Reply, alarm_failure, limited};
use crate::gate::{Action, Gate, Mark, Undo};
use crate::http::Response;
use crate::id::ObjectId;
use crate::object::Object;
use crate::storage::timers::Due;
use crate::storage::{Savepoint, Storage};
use crate::stream::StreamResponse;
use crate::websocket::WebSocket;
use crate::websocket::socket::SocketEvent;

/// A finished event's output, held until its writes are durable.
enum Held<O: Object> {
    Fetch(Response, Reply<Response>),
    FetchStream(StreamResponse, Reply<StreamResponse>),
    Call(O::Reply, Reply<O::Reply>),
    Method(Box<dyn HeldReply>),
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
                other.refuse(Error::NotImplemented("internal: not an alarm event"));
                Held::None
            }
        }
    }

    fn release(self) {
        match self {
            Held::Fetch(v, r) => {
                let _ = r.send(Ok(v));
            }
            Held::FetchStream(v, r) => {
                let _ = r.send(Ok(v));
            }
            Held::Call(v, r) => {
                let _ = r.send(Ok(v));
            }
            Held::Method(m) => m.release(),
            Held::Alarm(r) => {
                let _ = r.send(AlarmOutcome::Done);
            }
            Held::None => {}
        }
    }

    /// The handler failed after all (it called `Context::abort`).
    fn refuse(self, e: Error) {
        match self {
            Held::Alarm(r) => {
                let _ = r.send(alarm_failure(&e));
            }
            other => other.fail(e),
        }
    }

    /// The commit failed: a failure of the runtime, not of the handler.
    fn fail(self, e: Error) {
        match self {
            Held::Fetch(_, r) => {
                let _ = r.send(Err(e));
            }
            Held::FetchStream(_, r) => {
                let _ = r.send(Err(e));
            }
            Held::Call(_, r) => {
                let _ = r.send(Err(e));
            }
            Held::Method(m) => m.fail(e),
            Held::Alarm(r) => {
                let _ = r.send(AlarmOutcome::Infra(e.to_string()));
            }
            Held::None => {}
        }
    }
}

/// How an event ended: its held output, or how to answer its caller and
/// why it failed.
type EventResult<O> = Result<Held<O>, (Box<dyn FnOnce(Error) + Send>, BoxError)>;
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
    rx: mpsc::Receiver<Mail<O>>,
    nudges: Nudges,
) {
    let guard = ns.shared.tasks.token();
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
                ns_for_error.shared.left.notify_waiters();
                let cause: Arc<dyn std::error::Error + Send + Sync> = Arc::new(e);
                rx.close();
                while let Ok(env) = rx.try_recv() {
                    env.event.refuse(Error::Reset {
                        id: id_for_error.clone(),
                        cause: cause.clone(),
                    });
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
    rx: mpsc::Receiver<Mail<O>>,
    instance: Option<O>,
    ctx: Context,
    /// Retries of failed timers (the alarm driver's policy).
    retry: RetryPolicy,
    jitter: Jitter,
    nudges: Nudges,
}

type NewError<O> = (mpsc::Receiver<Mail<O>>, Error);

impl<O: Object> Activation<O> {
    fn new(
        ns: Arc<NsInner<O>>,
        id: ObjectId,
        generation: u64,
        rx: mpsc::Receiver<Mail<O>>,
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
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&id.as_bytes()[..8]);
        let spawn = (
            deliver.clone() as Arc<dyn crate::background::Sink>,
            std::any::TypeId::of::<O>(),
            ns.limits,
        );
        let ctx = Context::new(
            id.clone(),
            storage,
            ns.shared.clone(),
            table,
            deliver,
            spawn,
        );
        ns.metrics.activations.increment(1);
        tracing::debug!(namespace = %ns.name, "object activated");
        Ok(Activation {
            ns,
            id,
            generation,
            rx,
            instance: None,
            ctx,
            retry: RetryPolicy::default(),
            jitter: Jitter::new(generation ^ u64::from_le_bytes(seed)),
            nudges,
        })
    }

    async fn run(mut self) {
        let shutdown = self.ns.shared.shutdown.clone();
        // One waiter on the shutdown token for the activation's life: a
        // fresh one per event would register with the token (one lock,
        // shared by every object) and unregister again, each time.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // An object whose only work is accepted sockets hibernates
            // sooner than an idle one is evicted.
            let idle = if self.ctx.holds_sockets() {
                self.ns.limits.hibernation_timeout
            } else {
                self.ns.limits.idle_timeout
            };
            let envelope = tokio::select! {
                biased;
                () = &mut cancelled => break,
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
            // Boxed: the event's future (the handlers' own futures, the
            // commit) lives only while a group runs, so a resting
            // activation's task is 1.8 KB instead of 3.2 KB (and does not
            // grow with the object's handlers). One allocation per group.
            Box::pin(self.run_group(envelope)).await;
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
        self.ns.shared.left.notify_waiters();
    }

    /// Leaves the live map if nothing is queued. The check runs under the
    /// map's write lock, which senders hold (shared) while they enqueue.
    fn try_evict(&mut self) -> bool {
        if self.ctx.background_running() > 0 || self.ctx.open_streams() > 0 {
            // Its background work is still running (the results come back
            // as events) or a streamed body is still being read (its
            // sender lives in the instance): the object stays.
            return false;
        }
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
                        .remove_if(id, |_, t| crate::sync::lock(t).is_empty());
                }
                go
            })
            .is_some();
        if !left {
            return false;
        }
        self.ns.metrics.evictions.increment(1);
        self.ns.shared.left.notify_waiters();
        tracing::debug!(namespace = %self.ns.name, "object evicted");
        // A waiting sender (socket frames) may have cloned the mailbox
        // before we left: close it and pass on anything that got in, which
        // starts the next activation.
        self.rx.close();
        while let Ok(env) = self.rx.try_recv() {
            if let Err(e) = enqueue(&self.ns, &self.id, *env) {
                tracing::warn!(object = %crate::id::log_label(self.id.as_bytes()), error = %e, "event lost at eviction");
            }
        }
        true
    }

    /// Runs the queued events back to back (up to the configured bound),
    /// then commits their writes at once and releases their output, as the
    /// gate (`gate.rs`) decides.
    async fn run_group(&mut self, first: Mail<O>) {
        let mut gate: Gate<Held<O>, Savepoint> =
            Gate::new(self.ns.shared.options.max_events_per_commit);
        let mut next = Some(first);
        while let Some(envelope) = next.take() {
            let action = if envelope.event.abandoned() {
                gate.skipped()
            } else {
                let savepoint = self.ctx.storage().overlay_mut().savepoint();
                gate.begin(Mark {
                    savepoint,
                    outbox: self.ctx.outbox_len(),
                });
                let ran = self.run_event(*envelope).await;
                match self.aborted(ran) {
                    Ok(h) => {
                        self.ctx.storage().overlay_mut().release(savepoint);
                        let sync_failed = self.ctx.storage().broken.is_some();
                        gate.succeeded(h, sync_failed)
                    }
                    Err((event_reply, e)) => {
                        self.count_reset_cause(&*e);
                        let sync_failed = self.ctx.storage().broken.is_some();
                        let resets =
                            !matches!(e.downcast_ref::<Error>(), Some(Error::NotImplemented(_)));
                        let (undo, action) = gate.failed(resets, sync_failed);
                        if let Some(undo) = undo {
                            self.undo(undo);
                        }
                        event_reply(self.reset_error(e));
                        action
                    }
                }
            };
            match action {
                Action::RunNext if !self.ns.shared.is_shutting_down() => {
                    next = self.rx.try_recv().ok();
                }
                Action::RunNext | Action::Commit => {}
                Action::Reset(held) => {
                    // A sync inside the group failed, taking the group's
                    // earlier writes with it.
                    let cause: Arc<dyn std::error::Error + Send + Sync> =
                        match self.ctx.storage().broken.clone() {
                            Some(cause) => cause,
                            None => Arc::new(crate::storage::StorageError::Closed),
                        };
                    self.fail_group(held, cause);
                    return;
                }
            }
        }
        let committed = self.ctx.storage().commit().await;
        // Alarm changes made durable (here or by a sync during the group)
        // reach the schedule whether or not the rest succeeded.
        self.publish_alarm();
        match committed {
            Ok(()) => {
                self.ctx.release_outbox();
                for h in gate.committed() {
                    h.release();
                }
            }
            Err(e) => self.fail_group(gate.commit_failed(), Arc::new(e)),
        }
    }

    /// An event whose handler called `Context::abort` fails with
    /// [`Aborted`], whatever the handler returned.
    fn aborted(&mut self, ran: EventResult<O>) -> EventResult<O> {
        let Some(reason) = self.ctx.take_abort() else {
            return ran;
        };
        let cause: BoxError = Box::new(Aborted { reason });
        match ran {
            Ok(held) => Err((Box::new(move |e| held.refuse(e)), cause)),
            Err((reply, _)) => Err((reply, cause)),
        }
    }

    /// Counts (and logs) the resets that are not plain handler errors.
    fn count_reset_cause(&self, e: &(dyn std::error::Error + 'static)) {
        let label = crate::id::log_label(self.id.as_bytes());
        if let Some(t) = e.downcast_ref::<EventTimeout>() {
            self.ns.metrics.event_timeouts.increment(1);
            tracing::warn!(object = %label, namespace = %self.ns.name, limit = ?t.limit, "event ran past its time limit");
        } else if let Some(a) = e.downcast_ref::<Aborted>() {
            self.ns.metrics.aborts.increment(1);
            tracing::warn!(object = %label, namespace = %self.ns.name, reason = %a.reason, "object aborted");
        }
    }

    /// Undoes a failed event: its writes and frames go; the instance too
    /// if the gate says so.
    fn undo(&mut self, undo: Undo<Savepoint>) {
        self.ctx.storage().overlay_mut().rollback(undo.to.savepoint);
        self.ctx.storage().end_event();
        self.ctx.truncate_outbox(undo.to.outbox);
        if undo.drop_instance {
            self.drop_instance();
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

    fn fail_group(&mut self, held: Vec<Held<O>>, cause: Arc<dyn std::error::Error + Send + Sync>) {
        self.publish_alarm();
        self.reset();
        for h in held {
            h.fail(Error::Reset {
                id: self.id.clone(),
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
        self.ctx.reset_background();
        if self.instance.take().is_some() {
            self.ns.metrics.resets.increment(1);
            tracing::warn!(object = %crate::id::log_label(self.id.as_bytes()), namespace = %self.ns.name, "object reset");
        }
    }

    /// What the caller of a failed event gets: the handler's error as the
    /// cause of a reset; a missing handler or a call cycle as themselves
    /// (they are answers about the call, not failures of the object).
    fn reset_error(&self, e: BoxError) -> Error {
        match e.downcast::<Error>() {
            Ok(e) if matches!(*e, Error::NotImplemented(_) | Error::CallCycle { .. }) => *e,
            Ok(e) => Error::Reset {
                id: self.id.clone(),
                cause: Arc::from(e as BoxError),
            },
            Err(e) => Error::Reset {
                id: self.id.clone(),
                cause: Arc::from(e),
            },
        }
    }

    /// Runs one event. On failure returns how to answer its caller.
    async fn run_event(&mut self, envelope: Envelope<O>) -> EventResult<O> {
        let Envelope { event, chain } = envelope;
        self.ns.metrics.events.increment(1);
        if let Event::Alarm { info, abandon, .. } = &event {
            // The alarm may have been replaced or deleted since it was
            // scheduled; then there is nothing to run.
            match self.ctx.storage().alarm_ms() {
                Ok(Some(t)) if t == crate::clock::to_ms(info.scheduled) => {}
                Ok(_) => return Ok(Held::alarm(event)),
                Err(e) => return Err((Box::new(move |err| event.refuse(err)), Box::new(e))),
            }
            match self.ctx.storage().mode() {
                // Timers in use: the stored alarm is the earliest of them.
                Ok(Some(_)) => return self.fire_timers(event, &chain).await,
                Ok(None) => {}
                Err(e) => return Err((Box::new(move |err| event.refuse(err)), Box::new(e))),
            }
            // Cleared in the same commit as the handler's writes; rolled
            // back with them if the handler fails. Inside the handler,
            // `alarm()` reads nothing unless the handler sets a new one.
            self.ctx.storage().clear_stored_alarm();
            if *abandon {
                self.ns.metrics.alarms_dropped.increment(1);
                tracing::warn!(object = %crate::id::log_label(self.id.as_bytes()), namespace = %self.ns.name, retries = info.retry_count - 1, "alarm dropped: out of retries");
                return Ok(Held::alarm(event));
            }
        }
        if let Event::Background { epoch, .. } = &event
            && !self.ctx.background_is_current(*epoch)
        {
            // Spawned by an instance that has since been reset.
            return Ok(Held::None);
        }
        if let Err(e) = self.ensure_instance(&chain).await {
            if let Event::Socket {
                sid,
                event: SocketEvent::Close(_),
                ..
            } = &event
            {
                self.ctx.forget_socket(*sid);
            }
            return Err((Box::new(move |err| event.refuse(err)), e));
        }
        let Some(instance) = self.instance.as_mut() else {
            return Err((
                Box::new(move |err| event.refuse(err)),
                "instance missing".into(),
            ));
        };
        let ctx = &mut self.ctx;
        let limit = self.ns.limits.event_time_limit;
        match event {
            Event::Fetch(req, reply) => {
                match limited(&chain, limit, instance.fetch(ctx, *req)).await {
                    Ok(resp) => Ok(Held::Fetch(resp, reply)),
                    Err(e) => Err((Box::new(move |err| drop(reply.send(Err(err)))), e)),
                }
            }
            Event::FetchStream(req, reply) => {
                match limited(&chain, limit, instance.fetch_stream(ctx, *req)).await {
                    Ok(resp) => Ok(Held::FetchStream(resp, reply)),
                    Err(e) => Err((Box::new(move |err| drop(reply.send(Err(err)))), e)),
                }
            }
            Event::Call(call, reply) => {
                match limited(&chain, limit, instance.call(ctx, call)).await {
                    Ok(v) => Ok(Held::Call(v, reply)),
                    Err(e) => Err((Box::new(move |err| drop(reply.send(Err(err)))), e)),
                }
            }
            Event::Alarm { info, reply, .. } => {
                match limited(&chain, limit, instance.alarm(ctx, info)).await {
                    Ok(()) => {
                        self.ns.metrics.alarms_fired.increment(1);
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
            Event::Method(m) => {
                let (refuse, fut) = m.start(instance, ctx);
                match limited(&chain, limit, fut).await {
                    Ok(held) => Ok(Held::Method(held)),
                    Err(e) => Err((refuse, e)),
                }
            }
            Event::Background { done, running, .. } => {
                // Its slot is free before the continuation runs, which may
                // spawn again.
                drop(running);
                let Ok(cont) = done.downcast::<Continuation<O>>() else {
                    return Err((Box::new(|_| {}), "background result of another type".into()));
                };
                match limited(&chain, limit, async { cont(instance, ctx) }).await {
                    Ok(()) => Ok(Held::None),
                    Err(e) => Err((Box::new(|_| {}), e)),
                }
            }
            Event::Socket { sid, event, charge } => {
                // Taken out of the mailbox: its bytes leave the budget.
                drop(charge);
                let ws = WebSocket { sid };
                let (result, closed) = match event {
                    SocketEvent::Message(m) => (
                        limited(&chain, limit, instance.websocket_message(ctx, ws, m)).await,
                        false,
                    ),
                    SocketEvent::Close(close) => (
                        limited(&chain, limit, instance.websocket_close(ctx, ws, close)).await,
                        true,
                    ),
                    SocketEvent::Error(e) => (
                        limited(&chain, limit, instance.websocket_error(ctx, ws, e)).await,
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

    async fn ensure_instance(&mut self, chain: &CallChain) -> Result<(), BoxError> {
        if self.instance.is_none() {
            let env = self.ns.env.clone();
            let instance = limited(
                chain,
                self.ns.limits.event_time_limit,
                O::new(&mut self.ctx, env),
            )
            .await?;
            self.instance = Some(instance);
        }
        Ok(())
    }
}
