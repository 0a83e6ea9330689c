//! Alarms: one per object, durable, delivered at least once.
//!
//! The durable record lives in storage (committed with the object's other
//! writes). This module keeps the in-memory schedule of every pending alarm
//! (one index entry each, no task per alarm) and a driver task that sleeps
//! until the next deadline, wakes the due objects through their mailboxes
//! and retries failures with backoff.

pub(crate) mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, ClockMs, from_ms};
use crate::storage::Store;
use schedule::{AlarmSchedule, Jitter, RetryPolicy};

/// What an alarm handler is told about the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmInfo {
    /// How many earlier runs of this alarm failed (0 on the first run).
    pub retry_count: u32,
    /// The time the alarm was set for.
    pub scheduled: SystemTime,
}

impl AlarmInfo {
    /// True when this run retries a failed one.
    pub fn is_retry(&self) -> bool {
        self.retry_count > 0
    }
}

/// Where the driver sends due alarms: the namespaces, reached through this
/// trait so that this module needs nothing above it.
pub(crate) trait AlarmTarget: Send + Sync + 'static {
    /// Queues an alarm event for object `id` of `namespace`; the receiver
    /// resolves when the event has run and its writes are durable.
    ///
    /// # Errors
    ///
    /// Why the event could not be queued (unknown namespace, full
    /// mailbox, shutdown), as text for the log.
    fn deliver_alarm(
        &self,
        namespace: &str,
        id: [u8; 32],
        info: AlarmInfo,
        abandon: bool,
    ) -> Result<oneshot::Receiver<AlarmOutcome>, String>;
}

/// What the driver works with: handles, no registry.
pub(crate) struct Driver {
    pub(crate) alarms: Arc<Alarms>,
    pub(crate) store: Arc<Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) target: Arc<dyn AlarmTarget>,
}

/// Alarms being delivered at once, at most (the rest wait their turn).
const MAX_IN_FLIGHT: usize = 4096;
/// Delay before redelivering after a failure of the runtime itself.
const INFRA_RETRY: Duration = Duration::from_secs(1);

/// Which object an alarm belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AlarmKey {
    pub(crate) id: [u8; 32],
    pub(crate) namespace: Arc<str>,
}

/// How an alarm delivery ended.
#[derive(Debug)]
pub(crate) enum AlarmOutcome {
    /// The handler succeeded and its writes (the alarm's clearing included)
    /// are durable; or the alarm had been replaced and did not run.
    Done,
    /// The handler failed: counts as a retry.
    Failed(String),
    /// The runtime failed (commit failure, overload, shutdown): retried
    /// without counting.
    Infra(String),
}

/// The retry state of an alarm whose handler failed.
#[derive(Debug, Clone, Copy)]
struct Retry {
    count: u32,
    scheduled_ms: u64,
}

#[derive(Default)]
struct State {
    schedule: AlarmSchedule<AlarmKey>,
    retries: HashMap<[u8; 32], Retry>,
}

/// The runtime's alarm schedule, shared with every activation.
pub(crate) struct Alarms {
    state: Mutex<State>,
    pub(crate) changed: Notify,
    policy: RetryPolicy,
    /// (nothing in flight and nothing due, clock reading) as of the
    /// driver's last pass; lets tests and tools wait for alarms to settle.
    quiet: watch::Sender<(bool, u64)>,
}

impl Default for Alarms {
    fn default() -> Self {
        Alarms {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            policy: RetryPolicy::default(),
            quiet: watch::Sender::new((true, 0)),
        }
    }
}

impl Alarms {
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = crate::sync::lock(&self.state);
        f(&mut guard)
    }

    /// An alarm change became durable: reflect it in the schedule. Any retry
    /// state of the old alarm is forgotten.
    pub(crate) fn committed(&self, key: AlarmKey, at: Option<u64>) {
        self.with_state(|s| {
            s.retries.remove(&key.id);
            match at {
                Some(t) => s.schedule.set(key, t),
                None => {
                    s.schedule.delete(&key);
                }
            }
        });
        self.changed.notify_one();
    }

    /// Loads alarms from storage (at namespace registration).
    pub(crate) fn load(&self, alarms: impl IntoIterator<Item = (AlarmKey, u64)>) {
        self.with_state(|s| {
            for (k, t) in alarms {
                s.schedule.set(k, t);
            }
        });
        self.changed.notify_one();
    }

    /// Waits until the driver has seen the clock at `now_ms` or later with
    /// nothing due and nothing in flight.
    pub(crate) async fn settled(&self, now_ms: u64) {
        let mut rx = self.quiet.subscribe();
        self.changed.notify_one();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|(quiet, seen)| *quiet && *seen >= now_ms).await;
    }

    /// Pending alarms, for metrics and tests.
    pub(crate) fn pending(&self) -> usize {
        self.with_state(|s| s.schedule.len())
    }
}

/// A delivery in flight: resolves to its key, scheduled time, retry count
/// and outcome.
type Delivery = std::pin::Pin<Box<dyn Future<Output = (AlarmKey, Retry, AlarmOutcome)> + Send>>;

/// Runs the alarm driver until shutdown.
pub(crate) async fn drive(shared: Driver) {
    let alarms = &shared.alarms;
    let mut in_flight: FuturesUnordered<Delivery> = FuturesUnordered::new();
    let mut jitter = Jitter::new(seed());
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        let now = shared.clock.now_ms();
        // Deliver what is due, as far as the in-flight bound allows.
        let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
        let due = alarms.with_state(|s| {
            let due = s.schedule.take_due(now, room);
            due.into_iter()
                .map(|(key, at)| {
                    let retry = s.retries.get(&key.id).copied().unwrap_or(Retry {
                        count: 0,
                        scheduled_ms: at,
                    });
                    (key, retry)
                })
                .collect::<Vec<_>>()
        });
        for (key, retry) in due {
            // Past the last retry: this delivery only clears the alarm.
            let abandon = retry.count > alarms.policy.max_retries;
            in_flight.push(deliver(&shared, key, retry, abandon));
        }
        let next = alarms.with_state(|s| s.schedule.next_deadline());
        alarms
            .quiet
            .send_replace((in_flight.is_empty() && next.is_none_or(|t| t > now), now));
        let sleep = match next {
            Some(t) if in_flight.len() < MAX_IN_FLIGHT => {
                Duration::from_millis(t.saturating_sub(shared.clock.now_ms()))
            }
            // Nothing pending (or no room): sleep until told otherwise.
            _ => Duration::from_secs(86_400),
        };
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return,
            Some((key, retry, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                settle(&shared, key, retry, outcome, &mut jitter);
            }
            () = alarms.changed.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

fn settle(
    shared: &Driver,
    key: AlarmKey,
    retry: Retry,
    outcome: AlarmOutcome,
    jitter: &mut Jitter,
) {
    let alarms = &shared.alarms;
    let now = shared.clock.now_ms();
    match outcome {
        AlarmOutcome::Done => {
            alarms.with_state(|s| {
                if s.retries
                    .get(&key.id)
                    .is_some_and(|r| r.scheduled_ms == retry.scheduled_ms)
                {
                    s.retries.remove(&key.id);
                }
            });
        }
        AlarmOutcome::Failed(error) => {
            let count = retry.count + 1;
            // Still the same alarm in storage? If the object replaced or
            // deleted it meanwhile, the schedule already says so.
            let current = shared.store.alarm(&key.id).ok().flatten();
            if current != Some(retry.scheduled_ms) {
                return;
            }
            let at = if alarms.policy.should_retry(retry.count) {
                crate::metrics::alarm_retried(&key.namespace);
                tracing::info!(object = %crate::id::log_label(&key.id), namespace = %key.namespace, retry = count, %error, "alarm handler failed; retrying");
                now + alarms.policy.delay_ms(count, jitter.next_unit())
            } else {
                // Out of retries: deliver once more to clear it durably.
                now
            };
            alarms.with_state(|s| {
                s.retries.insert(
                    key.id,
                    Retry {
                        count,
                        scheduled_ms: retry.scheduled_ms,
                    },
                );
                s.schedule.set(key, at);
            });
        }
        AlarmOutcome::Infra(error) => {
            if shared.shutdown.is_cancelled() {
                return;
            }
            // Only if it is still the same alarm in storage (the object may
            // have set a newer one, which the schedule already holds).
            let current = shared.store.alarm(&key.id).ok().flatten();
            if current != Some(retry.scheduled_ms) {
                return;
            }
            tracing::warn!(object = %crate::id::log_label(&key.id), namespace = %key.namespace, %error, "alarm delivery failed in the runtime; redelivering");
            let at = now + u64::try_from(INFRA_RETRY.as_millis()).unwrap_or(1000);
            alarms.with_state(|s| {
                if retry.count > 0 {
                    s.retries.insert(key.id, retry);
                }
                s.schedule.set(key, at);
            });
        }
    }
}

fn deliver(shared: &Driver, key: AlarmKey, retry: Retry, abandon: bool) -> Delivery {
    let info = AlarmInfo {
        retry_count: retry.count,
        scheduled: from_ms(retry.scheduled_ms),
    };
    let sent = shared
        .target
        .deliver_alarm(&key.namespace, key.id, info, abandon);
    Box::pin(async move {
        let outcome = match sent {
            Ok(rx) => rx
                .await
                .unwrap_or_else(|_| AlarmOutcome::Infra("object task ended".into())),
            Err(e) => AlarmOutcome::Infra(e),
        };
        (key, retry, outcome)
    })
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    // Jitter quality does not matter much; fall back to a constant.
    if getrandom::fill(&mut b).is_err() {
        return 0x5eed;
    }
    u64::from_le_bytes(b)
}
