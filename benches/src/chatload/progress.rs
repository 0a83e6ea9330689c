//! Progress lines on stderr during a run, every few seconds: a run may last
//! ten minutes, and a stall should show while it happens, not after.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::Percentiles;
use super::client::Shared;

/// Prints a line every `every` (nothing with `None`).
pub(super) struct Progress {
    every: Option<Duration>,
    clients: usize,
    started: Instant,
    next: Instant,
    last: (Instant, u64),
}

impl Progress {
    pub(super) fn new(every: Option<Duration>, clients: usize) -> Progress {
        let now = Instant::now();
        Progress {
            every,
            clients,
            started: now,
            next: now + every.unwrap_or_default(),
            last: (now, 0),
        }
    }

    /// Prints a line about `phase` if one is due.
    pub(super) fn tick(&mut self, shared: &Shared, phase: &str) {
        let Some(every) = self.every else { return };
        let now = Instant::now();
        if now < self.next {
            return;
        }
        while self.next <= now {
            self.next += every;
        }
        eprintln!("{}", self.line(shared, phase, now));
    }

    /// Waits until `deadline`, printing lines when due.
    pub(super) async fn sleep_until(&mut self, shared: &Shared, phase: &str, deadline: Instant) {
        loop {
            self.tick(shared, phase);
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let wake = match self.every {
                Some(_) => deadline.min(self.next),
                None => deadline,
            };
            tokio::time::sleep(wake - now).await;
        }
    }

    fn line(&mut self, shared: &Shared, phase: &str, now: Instant) -> String {
        let ready: u64 = shared
            .ready_per_room
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .sum();
        let settled = shared.settled.load(Ordering::SeqCst);
        let sent = shared.sent.load(Ordering::SeqCst);
        let delivered = shared.delivered.load(Ordering::SeqCst);
        let (then, delivered_then) = self.last;
        let rate = delivered.saturating_sub(delivered_then) as f64
            / now.duration_since(then).as_secs_f64().max(1e-3);
        self.last = (now, delivered);
        let mut line = format!(
            "chatload {:>6.1} s {phase}: ready {ready}/{} ({} failed), sent {sent}, delivered {delivered} ({rate:.0}/s)",
            now.duration_since(self.started).as_secs_f64(),
            self.clients,
            settled.saturating_sub(ready as usize),
        );
        if let Some(latency) = merged(&shared.latency).filter(|h| !h.is_empty()) {
            let p = Percentiles::of_micros(&latency);
            line += &format!(
                ", latency so far p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                p.p50, p.p99, p.max
            );
        }
        line
    }
}

/// The shards of a latency histogram, added up.
pub(super) fn merged(shards: &[std::sync::Mutex<Histogram<u64>>]) -> Option<Histogram<u64>> {
    let mut all = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok()?;
    for shard in shards {
        all.add(&*shard.lock().unwrap_or_else(PoisonError::into_inner))
            .ok()?;
    }
    Some(all)
}
