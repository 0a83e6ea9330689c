//! Open WebSocket connections per client IP, for the per-IP limit.
//!
//! The runtime owns every socket once a room accepts it, so the front door
//! cannot hold a guard for the connection's life. Instead the front door
//! takes a slot before handing the upgrade over (and gives it back if the
//! room does not answer 101), and the room gives it back in its close
//! handler, which the runtime runs exactly once per accepted socket
//! (client close, error, vanished peer, oversize frame, or a close by the
//! room itself). The count lives in memory, shared by the front door and
//! every room of the process; a restart starts from zero, as the sockets
//! are gone too.

use std::collections::HashMap;
use std::sync::Mutex;

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

    /// Takes a slot for `ip`; false when it already has the maximum.
    pub(crate) fn try_acquire(&self, ip: &str) -> bool {
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
    pub(crate) fn release(&self, ip: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
