//! Inspector sign-ins: a random session id in the cookie (never the admin
//! token itself), with an expiry, revoked by signing out; and a budget of
//! sign-in attempts, so the token cannot be guessed at network speed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::connections::Budget;
use crate::protocol::limit::RateLimitOptions;

/// How long a session lasts after sign-in.
pub(super) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Most sessions held at once; signing in past it ends the oldest.
const MAX_SESSIONS: usize = 64;

/// Sign-in attempts, for all clients together (the admin address is the
/// operator's): a burst of 10, then one every 6 s.
const SIGN_IN_LIMIT: RateLimitOptions = RateLimitOptions {
    per_message_ms: 6_000,
    grace_ms: 54_000,
};

/// The open sessions and the sign-in budget.
#[derive(Debug)]
pub(super) struct SignIns {
    /// Session id (64 hex digits) to its expiry. A std mutex, held for a
    /// map operation only.
    sessions: Mutex<HashMap<String, Instant>>,
    attempts: Mutex<Budget>,
    /// The origin of the budget's clock.
    started: Instant,
}

impl SignIns {
    pub(super) fn new() -> SignIns {
        SignIns {
            sessions: Mutex::new(HashMap::new()),
            attempts: Mutex::new(Budget::default()),
            started: Instant::now(),
        }
    }

    /// Spends one sign-in attempt; false when over the budget.
    pub(super) fn attempt(&self) -> bool {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spend(now_ms, &SIGN_IN_LIMIT)
    }

    /// Opens a session and returns its id; `None` if the system has no
    /// randomness to give.
    pub(super) fn open(&self) -> Option<String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).ok()?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, expires| *expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), now + SESSION_TTL);
        Some(id)
    }

    /// Whether `id` names an open, unexpired session.
    pub(super) fn is_open(&self, id: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(id)
            .is_some_and(|expires| *expires > Instant::now())
    }

    /// Ends a session (sign-out).
    pub(super) fn close(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sessions_open_expire_and_close() {
        let sign_ins = SignIns::new();
        let a = sign_ins.open().expect("randomness");
        let b = sign_ins.open().expect("randomness");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(sign_ins.is_open(&a) && sign_ins.is_open(&b));
        assert!(!sign_ins.is_open("0".repeat(64).as_str()));
        sign_ins.close(&a);
        assert!(!sign_ins.is_open(&a), "closed");
        tokio::time::advance(SESSION_TTL).await;
        assert!(!sign_ins.is_open(&b), "expired");
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_so_many_sessions() {
        let sign_ins = SignIns::new();
        let first = sign_ins.open().expect("randomness");
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 1..MAX_SESSIONS {
            sign_ins.open().expect("randomness");
        }
        assert!(sign_ins.is_open(&first));
        let last = sign_ins.open().expect("randomness");
        assert!(!sign_ins.is_open(&first), "the oldest made room");
        assert!(sign_ins.is_open(&last));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_budgeted() {
        let sign_ins = SignIns::new();
        let burst = (0..100).take_while(|_| sign_ins.attempt()).count();
        assert_eq!(burst, 10);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(sign_ins.attempt(), "one more after 6 s");
        assert!(!sign_ins.attempt());
    }
}
