//! Named durable timers, multiplexed over the object's one alarm.
//!
//! Each timer is a record in the object's own storage, under a key that
//! begins with a NUL character (`"\0timer:<name>"`), committed with the
//! event's other writes. While an object has timers, its plain alarm
//! (`set_alarm`) lives in a record too (`"\0alarm"`, whose presence is
//! what "timers in use" means), and the stored alarm the runtime schedules
//! is the earliest of them all. When the last timer goes, the plain alarm
//! moves back into the stored alarm and the records are deleted.
//!
//! Records carry their retry count, so a failing timer's count survives a
//! restart. The activation (`activation.rs`) fires them: it reads the due
//! records, runs each, and settles each with [`Storage::timer_succeeded`]
//! or [`Storage::timer_failed`].

use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ListOptions, Storage, StorageError};
use crate::clock::{from_ms, to_ms};

/// Timers one object may have.
pub const MAX_TIMERS: usize = 1000;
/// Longest timer name, in bytes.
pub const MAX_TIMER_NAME: usize = 256;

pub(crate) const TIMER_PREFIX: &str = "\u{0}timer:";
pub(crate) const ALARM_KEY: &str = "\u{0}alarm";

/// One pending timer (or, in the `"\0alarm"` record, the plain alarm).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// When it is next delivered (its time, or a retry's).
    pub(crate) at: u64,
    /// The time it was set for (what the handler is told).
    pub(crate) scheduled: u64,
    /// Repeat period, for `schedule_every`.
    pub(crate) every: Option<u64>,
    /// The payload's JSON text.
    pub(crate) payload: String,
    /// Failed runs so far.
    pub(crate) retries: u32,
}

/// The `"\0alarm"` record: the plain alarm while timers are in use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mode {
    pub(crate) alarm: Option<Record>,
}

/// A timer as [`Timers::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimerInfo {
    /// Its name (unique per object).
    pub name: String,
    /// When it is next delivered (a retry's time after a failure).
    pub next: SystemTime,
    /// Its repeat period, if it repeats.
    pub every: Option<Duration>,
    /// Failed runs so far.
    pub retry_count: u32,
}

/// A due timer, as the [`Object::timer`](crate::Object::timer) handler
/// gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timer {
    /// Its name.
    pub name: String,
    /// The time it was set for.
    pub scheduled: SystemTime,
    /// Failed runs before this one.
    pub retry_count: u32,
    /// Its repeat period, if it repeats.
    pub every: Option<Duration>,
    payload: String,
}

impl Timer {
    /// Decodes the payload it was scheduled with.
    ///
    /// # Errors
    ///
    /// The payload does not decode as `T`.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, StorageError> {
        serde_json::from_str(&self.payload).map_err(|e| StorageError::codec(&e))
    }
}

/// What fires in one alarm delivery: a timer, or the plain alarm.
#[derive(Debug, Clone)]
pub(crate) enum Due {
    Alarm(Record),
    Timer(String, Record),
}

impl Due {
    pub(crate) fn record(&self) -> &Record {
        match self {
            Due::Alarm(r) | Due::Timer(_, r) => r,
        }
    }

    /// The handler's view of a due timer.
    pub(crate) fn timer(&self) -> Option<Timer> {
        match self {
            Due::Alarm(_) => None,
            Due::Timer(name, r) => Some(Timer {
                name: name.clone(),
                scheduled: from_ms(r.scheduled),
                retry_count: r.retries,
                every: r.every.map(Duration::from_millis),
                payload: r.payload.clone(),
            }),
        }
    }
}

fn timer_key(name: &str) -> String {
    format!("{TIMER_PREFIX}{name}")
}

/// An object's timers, from [`Context::timers`](crate::Context::timers).
/// Changes commit with the event's other writes.
#[derive(Debug)]
pub struct Timers<'a> {
    pub(crate) storage: &'a mut Storage,
    pub(crate) now: SystemTime,
}

impl Timers<'_> {
    /// Sets timer `name` (replacing one of that name) to fire at `at`
    /// with `payload`. A time in the past fires at once.
    ///
    /// # Errors
    ///
    /// An empty or over-long name, the epoch as time, a payload that does
    /// not serialise or is over the value limit, more than [`MAX_TIMERS`]
    /// timers, or a storage error.
    pub fn schedule_at<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        at: SystemTime,
        payload: &T,
    ) -> Result<(), StorageError> {
        self.set(name, to_ms(at), None, payload)
    }

    /// Sets timer `name` to fire `after` from now.
    ///
    /// # Errors
    ///
    /// As [`schedule_at`](Self::schedule_at).
    pub fn schedule_after<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        after: Duration,
        payload: &T,
    ) -> Result<(), StorageError> {
        self.set(name, to_ms(self.now + after), None, payload)
    }

    /// Sets timer `name` to fire every `period` (the first time one
    /// period from now) until cancelled.
    ///
    /// # Errors
    ///
    /// A period under 1 ms, or as [`schedule_at`](Self::schedule_at).
    pub fn schedule_every<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        period: Duration,
        payload: &T,
    ) -> Result<(), StorageError> {
        let every = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        if every == 0 {
            return Err(StorageError::InvalidTimer(
                "the period must be at least 1 ms",
            ));
        }
        self.set(name, to_ms(self.now + period), Some(every), payload)
    }

    /// Cancels timer `name`; false if there was none.
    ///
    /// # Errors
    ///
    /// A storage error.
    pub fn cancel(&mut self, name: &str) -> Result<bool, StorageError> {
        let gone = self.storage.delete(&timer_key(name))?;
        if gone {
            self.storage.sync_alarm()?;
        }
        Ok(gone)
    }

    /// The pending timers, by name.
    ///
    /// # Errors
    ///
    /// A storage error or a corrupt record.
    pub fn list(&self) -> Result<Vec<TimerInfo>, StorageError> {
        Ok(self
            .storage
            .timer_records()?
            .into_iter()
            .map(|(name, r)| TimerInfo {
                name,
                next: from_ms(r.at),
                every: r.every.map(Duration::from_millis),
                retry_count: r.retries,
            })
            .collect())
    }

    fn set<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        at: u64,
        every: Option<u64>,
        payload: &T,
    ) -> Result<(), StorageError> {
        if name.is_empty() || name.len() > MAX_TIMER_NAME {
            return Err(StorageError::InvalidTimer("a timer name is 1 to 256 bytes"));
        }
        if at == 0 {
            return Err(StorageError::InvalidAlarm);
        }
        let payload = serde_json::to_string(payload).map_err(|e| StorageError::codec(&e))?;
        let key = timer_key(name);
        if self.storage.get::<Record>(&key)?.is_none()
            && self.storage.timer_records()?.len() >= MAX_TIMERS
        {
            return Err(StorageError::TooManyTimers { max: MAX_TIMERS });
        }
        if self.storage.mode()?.is_none() {
            // The first timer: the plain alarm moves into its record.
            let alarm = self.storage.alarm_ms()?.map(|t| Record {
                at: t,
                scheduled: t,
                every: None,
                payload: String::new(),
                retries: 0,
            });
            self.storage.put(ALARM_KEY, &Mode { alarm })?;
        }
        self.storage.put(
            &key,
            &Record {
                at,
                scheduled: at,
                every,
                payload,
                retries: 0,
            },
        )?;
        self.storage.sync_alarm()
    }
}

impl Storage {
    /// The `"\0alarm"` record: `Some` while timers are in use.
    pub(crate) fn mode(&self) -> Result<Option<Mode>, StorageError> {
        self.get(ALARM_KEY)
    }

    /// Every timer record, by name.
    pub(crate) fn timer_records(&self) -> Result<Vec<(String, Record)>, StorageError> {
        let list: Vec<(String, Record)> = self.list(&ListOptions::new().prefix(TIMER_PREFIX))?;
        Ok(list
            .into_iter()
            .map(|(k, r)| (k[TIMER_PREFIX.len()..].to_string(), r))
            .collect())
    }

    /// The plain alarm's time as the handler sees it.
    pub(crate) fn user_alarm_ms(&self) -> Result<Option<u64>, StorageError> {
        match self.mode()? {
            Some(m) => Ok(m.alarm.map(|r| r.scheduled)),
            None => self.alarm_ms(),
        }
    }

    /// Sets (or clears) the plain alarm. Returns false if timers are not
    /// in use (the caller sets the stored alarm itself).
    pub(crate) fn set_user_alarm(&mut self, at: Option<u64>) -> Result<bool, StorageError> {
        let Some(mut m) = self.mode()? else {
            return Ok(false);
        };
        m.alarm = at.map(|t| Record {
            at: t,
            scheduled: t,
            every: None,
            payload: String::new(),
            retries: 0,
        });
        self.put(ALARM_KEY, &m)?;
        self.sync_alarm()?;
        Ok(true)
    }

    /// Sets the stored alarm to the earliest record; with no timer left,
    /// moves the plain alarm back into it and deletes the `"\0alarm"`
    /// record.
    pub(crate) fn sync_alarm(&mut self) -> Result<(), StorageError> {
        let Some(m) = self.mode()? else {
            return Ok(());
        };
        let timers = self.timer_records()?;
        let alarm = m.alarm.as_ref().map(|r| r.at);
        if timers.is_empty() {
            self.delete(ALARM_KEY)?;
            self.overlay.set_alarm(alarm);
            return Ok(());
        }
        let first = timers.iter().map(|(_, r)| r.at).chain(alarm).min();
        self.overlay.set_alarm(first);
        Ok(())
    }

    /// What is due at `now_ms`, in (time, name) order, the plain alarm
    /// first among equals.
    pub(crate) fn due(&self, now_ms: u64) -> Result<Vec<Due>, StorageError> {
        let mut due = Vec::new();
        if let Some(Mode { alarm: Some(r) }) = self.mode()?
            && r.at <= now_ms
        {
            due.push(Due::Alarm(r));
        }
        for (name, r) in self.timer_records()? {
            if r.at <= now_ms {
                due.push(Due::Timer(name, r));
            }
        }
        due.sort_by(|a, b| {
            let key = |d: &Due| match d {
                Due::Alarm(r) => (r.at, String::new()),
                Due::Timer(n, r) => (r.at, format!("t{n}")),
            };
            key(a).cmp(&key(b))
        });
        Ok(due)
    }

    /// True if `due` is still as it was when found due (an earlier handler
    /// of the same delivery may have cancelled or replaced it).
    pub(crate) fn still_due(&self, due: &Due) -> Result<bool, StorageError> {
        Ok(match due {
            Due::Alarm(r) => self.mode()?.and_then(|m| m.alarm).as_ref() == Some(r),
            Due::Timer(name, r) => self.get::<Record>(&timer_key(name))?.as_ref() == Some(r),
        })
    }

    /// Before a due plain alarm runs: inside its handler it reads as
    /// unset (as a plain alarm does), unless the handler sets a new one.
    pub(crate) fn take_user_alarm(&mut self) -> Result<(), StorageError> {
        if let Some(mut m) = self.mode()? {
            m.alarm = None;
            self.put(ALARM_KEY, &m)?;
        }
        Ok(())
    }

    /// `due` ran and succeeded: a one-shot timer goes, a repeating one is
    /// set one period on (past `now_ms`), unless the handler changed it.
    pub(crate) fn timer_succeeded(&mut self, due: &Due, now_ms: u64) -> Result<(), StorageError> {
        if let Due::Timer(name, r) = due {
            let key = timer_key(name);
            let current: Option<Record> = self.get(&key)?;
            if current.as_ref() == Some(r) {
                match r.every {
                    Some(every) => {
                        let mut next = r.scheduled.saturating_add(every);
                        if next <= now_ms {
                            next = now_ms.saturating_add(every);
                        }
                        self.put(
                            &key,
                            &Record {
                                at: next,
                                scheduled: next,
                                retries: 0,
                                ..r.clone()
                            },
                        )?;
                    }
                    None => {
                        self.delete(&key)?;
                    }
                }
            }
        }
        self.sync_alarm()
    }

    /// `due` ran and failed (its writes already rolled back): count the
    /// failure and deliver again at `retry_at`; with `None` (out of
    /// retries) a one-shot timer is dropped and a repeating one goes on to
    /// its next period.
    pub(crate) fn timer_failed(
        &mut self,
        due: &Due,
        retry_at: Option<u64>,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        let next = retry_at.map(|at| Record {
            at,
            retries: due.record().retries + 1,
            ..due.record().clone()
        });
        match (due, next) {
            (Due::Alarm(_), next) => {
                if let Some(mut m) = self.mode()? {
                    m.alarm = next;
                    self.put(ALARM_KEY, &m)?;
                }
            }
            (Due::Timer(name, _), Some(n)) => self.put(&timer_key(name), &n)?,
            (Due::Timer(name, r), None) => {
                if r.every.is_some() {
                    // As if it had succeeded: on to the next period.
                    return self.timer_succeeded(due, now_ms);
                }
                self.delete(&timer_key(name))?;
            }
        }
        self.sync_alarm()
    }
}
