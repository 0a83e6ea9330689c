//! Open WebSocket connections per client IP, for the per-IP limit.
//!
//! Owned by the front door alone: it takes a [`Slot`] before handing an
//! upgrade to a room, and, when the room answers 101, ties the slot to the
//! TCP connection itself (the accept loop's per-connection hold, which
//! travels with the connection into the runtime's socket task). The slot
//! is given back when that connection is dropped, whatever ends it (client
//! close, error, vanished peer, a close by the room, shutdown), and even
//! when the room is hibernated or gone: rooms know nothing of it. The
//! count lives in the memory of the process that holds the connections; a
//! restart starts from zero, as the connections are gone too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::protocol::limit::{RateLimit, RateLimitOptions};

/// Open connections per client IP (the same key as the rate limit).
#[derive(Debug, Default)]
pub(crate) struct Connections {
    /// At most this many per IP; `None`: no limit (still counted).
    max_per_ip: Option<usize>,
    /// Only IPs with at least one connection: the map stays as small as the
    /// set of connected clients. A std mutex: held for a map update only,
    /// never across an await.
    open: Mutex<HashMap<String, usize>>,
}

impl Connections {
    pub(crate) fn new(max_per_ip: Option<usize>) -> Connections {
        Connections {
            max_per_ip,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a slot for `ip`, given back when the slot is dropped; `None`
    /// when `ip` already has the maximum.
    pub(crate) fn acquire(self: &Arc<Self>, ip: &str) -> Option<Slot> {
        self.try_acquire(ip).then(|| Slot {
            connections: self.clone(),
            ip: ip.to_owned(),
        })
    }

    /// Takes a slot for `ip`; false when it already has the maximum.
    fn try_acquire(&self, ip: &str) -> bool {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(ip.to_owned()).or_insert(0);
        if self.max_per_ip.is_some_and(|max| *count >= max) {
            if *count == 0 {
                open.remove(ip);
            }
            return false;
        }
        *count += 1;
        true
    }

    /// Gives a slot of `ip` back.
    fn release(&self, ip: &str) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(ip);
            }
        }
    }

    /// Open connections of `ip`.
    pub(crate) fn count(&self, ip: &str) -> usize {
        let open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.get(ip).copied().unwrap_or(0)
    }
}

/// A taken connection slot of one client IP: given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    connections: Arc<Connections>,
    ip: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.release(&self.ip);
    }
}

/// A [`RateLimit`] for costs that must not stall when the wall clock
/// steps back: a step back starts a fresh burst instead of refusing until
/// the clock catches up (which is right for messages, but would silence
/// join notices or history paging for as long as the step).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Budget {
    limit: RateLimit,
    /// The latest time seen.
    last_ms: u64,
}

impl Budget {
    /// Spends one unit at `now_ms`, if the budget allows.
    pub(crate) fn spend(&mut self, now_ms: u64, options: &RateLimitOptions) -> bool {
        if now_ms < self.last_ms {
            self.limit = RateLimit::new();
        }
        self.last_ms = now_ms;
        self.limit.check(now_ms, options).is_ok()
    }

    /// Whether nothing spent is still in effect at `now_ms`.
    fn is_idle(&self, now_ms: u64) -> bool {
        now_ms < self.last_ms || self.limit.is_idle(now_ms)
    }
}

/// A per-minute budget per client IP for a cost that is not a chat
/// message: joins (a socket handed to a room costs the room a roster, a
/// backlog read and notices to its members, so it is charged before the
/// room is reached) and history pages (a storage read and up to 150 KB
/// out).
///
/// One [`Budget`] per IP in memory (the same rule as messages: a burst,
/// then a steady rate). A limit that is idle again is as good as fresh, so
/// idle entries are dropped whenever the map has grown past a bound: the
/// map holds only IPs that joined within the last minute or so.
#[derive(Debug)]
pub(crate) struct IpBudget {
    /// `None`: no limit.
    options: Option<RateLimitOptions>,
    /// A std mutex: held for a map update only.
    limits: Mutex<HashMap<String, Budget>>,
}

/// Past this many IPs in the map, idle ones are dropped on the next charge.
const BUDGET_MAP_SWEEP: usize = 4096;

impl IpBudget {
    /// `per_minute` units per IP per minute (all of them may be spent at
    /// once, then one every `60 / per_minute` seconds); 0: no limit.
    pub(crate) fn new(per_minute: u32) -> IpBudget {
        let options = (per_minute > 0).then(|| {
            let per = 60_000 / u64::from(per_minute);
            RateLimitOptions {
                per_message_ms: per,
                grace_ms: 60_000u64.saturating_sub(per),
            }
        });
        IpBudget {
            options,
            limits: Mutex::new(HashMap::new()),
        }
    }

    /// Charges one unit of `ip` at `now_ms` (ms, any origin); false when
    /// over the budget.
    pub(crate) fn charge(&self, ip: &str, now_ms: u64) -> bool {
        let Some(options) = &self.options else {
            return true;
        };
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        if limits.len() >= BUDGET_MAP_SWEEP && !limits.contains_key(ip) {
            limits.retain(|_, limit| !limit.is_idle(now_ms));
        }
        match limits.get_mut(ip) {
            Some(budget) => budget.spend(now_ms, options),
            None => {
                let mut budget = Budget::default();
                let allowed = budget.spend(now_ms, options);
                limits.insert(ip.to_owned(), budget);
                allowed
            }
        }
    }

    /// IPs the budget remembers.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.limits.lock().map(|l| l.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_minute_then_a_steady_rate() {
        let budget = IpBudget::new(30);
        let t0 = 1_000_000;
        let burst = (0..100).take_while(|_| budget.charge("a", t0)).count();
        assert!(
            (30..=31).contains(&burst),
            "a minute's worth at once: {burst}"
        );
        assert!(budget.charge("b", t0), "other IPs have their own budget");
        assert!(!budget.charge("a", t0 + 1_000), "not yet");
        assert!(budget.charge("a", t0 + 2_000), "one per two seconds");
        assert!(!budget.charge("a", t0 + 2_000));
        let unlimited = IpBudget::new(0);
        assert!((0..1000).all(|_| unlimited.charge("a", t0)));
    }

    proptest::proptest! {
        /// Whatever the sequence of spends and clock moves (forward or a
        /// step back), a budget never allows more than its burst plus one
        /// per period of time passed since the last step back, and an
        /// idle gap of the burst's length always allows a spend again.
        #[test]
        fn a_budget_never_allows_more_than_burst_plus_rate(
            steps in proptest::collection::vec((0u64..3_000, proptest::bool::weighted(0.05)), 1..300)
        ) {
            let options = RateLimitOptions { per_message_ms: 1_000, grace_ms: 4_000 };
            let burst = options.grace_ms / options.per_message_ms + 1;
            let mut budget = Budget::default();
            let mut now = 100_000_000u64;
            // Since the last step back: when, and how many were allowed.
            let (mut since, mut allowed) = (now, 0u64);
            for (advance, back) in steps {
                if back {
                    now -= 60_000;
                    since = now;
                    allowed = 0;
                } else {
                    now += advance;
                }
                if budget.spend(now, &options) {
                    allowed += 1;
                }
                let ceiling = burst + (now - since) / options.per_message_ms;
                proptest::prop_assert!(allowed <= ceiling, "{allowed} > {ceiling}");
            }
            now += options.grace_ms + options.per_message_ms;
            proptest::prop_assert!(budget.spend(now, &options), "refilled after a gap");
        }
    }

    #[test]
    fn a_clock_step_back_starts_a_fresh_burst() {
        let options = RateLimitOptions {
            per_message_ms: 1_000,
            grace_ms: 2_000,
        };
        let mut budget = Budget::default();
        let spent = (0..10)
            .take_while(|_| budget.spend(100_000, &options))
            .count();
        assert_eq!(spent, 3);
        assert!(!budget.spend(100_000, &options));
        assert!(budget.spend(40_000, &options), "a minute back: fresh");
        assert_eq!(
            (0..10)
                .take_while(|_| budget.spend(40_000, &options))
                .count(),
            2
        );
    }

    #[test]
    fn idle_ips_are_forgotten_when_the_map_grows() {
        let budget = IpBudget::new(30);
        for i in 0..BUDGET_MAP_SWEEP {
            assert!(budget.charge(&format!("10.0.{}.{}", i / 256, i % 256), 0));
        }
        assert_eq!(budget.remembered(), BUDGET_MAP_SWEEP);
        // Two minutes later every one of them is idle: the next new IP
        // sweeps them out.
        assert!(budget.charge("192.0.2.1", 120_000));
        assert_eq!(budget.remembered(), 1);
    }

    #[test]
    fn slots_are_taken_up_to_the_limit_and_given_back() {
        let c = Connections::new(Some(2));
        assert!(c.try_acquire("a") && c.try_acquire("a"));
        assert!(!c.try_acquire("a"), "third refused");
        assert!(c.try_acquire("b"), "other IPs unaffected");
        c.release("a");
        assert_eq!(c.count("a"), 1);
        assert!(c.try_acquire("a"));
        c.release("a");
        c.release("a");
        c.release("a");
        assert_eq!(c.count("a"), 0, "never below zero");
        assert!(
            c.open.lock().expect("lock").get("a").is_none(),
            "forgotten at zero"
        );
    }

    #[test]
    fn a_slot_is_given_back_when_dropped() {
        let c = Arc::new(Connections::new(Some(1)));
        let slot = c.acquire("a").expect("first");
        assert!(c.acquire("a").is_none(), "at the limit");
        drop(slot);
        assert_eq!(c.count("a"), 0);
        assert!(c.acquire("a").is_some(), "free again");
        assert_eq!(c.count("a"), 0, "the temporary slot was dropped too");
    }

    #[test]
    fn zero_and_no_limit() {
        let none = Connections::new(Some(0));
        assert!(!none.try_acquire("a"));
        assert_eq!(none.count("a"), 0);
        let unlimited = Connections::new(None);
        for _ in 0..1000 {
            assert!(unlimited.try_acquire("a"));
        }
        assert_eq!(unlimited.count("a"), 1000);
    }
}
