//! The per-IP message rate limit of the Edge Chat Demo, as a pure rule:
//! the caller passes the time in and keeps one [`RateLimit`] per client IP,
//! across all rooms and dialects.
//!
//! # The rule
//!
//! Each IP has a *next allowed time*. A message is refused while that time
//! is more than [`grace_ms`](RateLimitOptions::grace_ms) ahead of now;
//! otherwise it is allowed and moves the next allowed time to
//! `max(now, next) + per_message_ms`. A refused message changes nothing.
//!
//! With the defaults (5 s per message, 20 s grace) an idle IP may send a
//! burst of 5 messages (the next allowed time goes 0 → 5 → 10 → 15 → 20 →
//! 25 s; the fifth is checked at 20 s ahead, which is not *more* than 20),
//! then one every 5 s; waiting 25 s restores the whole burst.
//!
//! This is what the seed does, unrolled: its `RateLimiter` object adds 5 s
//! per message and answers `cooldown = next - now - 20`, and its
//! `RateLimiterClient` lets a message through unless a previous answer's
//! cooldown is still running, so the message that *creates* a cooldown is
//! allowed, and the ones refused during it never reach the limiter.
//!
//! ```
//! use chat_demo::protocol::limit::{RateLimit, RateLimitOptions};
//!
//! let options = RateLimitOptions::default();
//! let mut limit = RateLimit::new();
//! for _ in 0..5 {
//!     assert!(limit.check(0, &options).is_ok());
//! }
//! let cooldown = limit.check(0, &options).unwrap_err();
//! assert_eq!(cooldown.remaining_ms, 5_000);
//! assert!(limit.check(5_000, &options).is_ok());
//! ```

/// The error text for a refused message, sent in the dialect's error frame.
pub const RATE_LIMITED: &str = "Your IP is being rate-limited, please try again later.";

/// The parameters of the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitOptions {
    /// How far each allowed message moves the next allowed time (5000).
    pub per_message_ms: u64,
    /// How far ahead the next allowed time may be while messages are still
    /// allowed: the burst allowance (20000).
    pub grace_ms: u64,
}

impl Default for RateLimitOptions {
    fn default() -> Self {
        Self {
            per_message_ms: 5_000,
            grace_ms: 20_000,
        }
    }
}

/// The rate limit state of one client IP.
///
/// A fresh (or [`idle`](Self::is_idle)) state allows a full burst, so the
/// caller may forget idle states to bound its memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Milliseconds since the epoch; 0 (the distant past) when fresh.
    next_allowed_ms: u64,
}

/// A refused message: how long the IP must wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limited for another {remaining_ms} ms")]
pub struct Cooldown {
    /// Milliseconds until a message would be allowed again.
    pub remaining_ms: u64,
}

impl Cooldown {
    /// The text to send to the client: [`RATE_LIMITED`].
    pub fn client_text(&self) -> &'static str {
        RATE_LIMITED
    }
}

impl RateLimit {
    /// A fresh state: the IP may send a full burst now.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one message at `now_ms` (ms since the epoch), if allowed.
    ///
    /// Never panics, whatever the clock does: if it steps back, the next
    /// allowed time simply looks further ahead, and messages are refused
    /// until the clock catches up to within the grace period.
    ///
    /// # Errors
    ///
    /// [`Cooldown`] when the message is refused; the state is then unchanged.
    pub fn check(&mut self, now_ms: u64, options: &RateLimitOptions) -> Result<(), Cooldown> {
        let ahead = self.next_allowed_ms.saturating_sub(now_ms);
        if ahead > options.grace_ms {
            return Err(Cooldown {
                remaining_ms: ahead - options.grace_ms,
            });
        }
        self.next_allowed_ms = self
            .next_allowed_ms
            .max(now_ms)
            .saturating_add(options.per_message_ms);
        Ok(())
    }

    /// Whether the state at `now_ms` is as good as fresh (nothing counted is
    /// still in effect), so the caller may drop it.
    pub fn is_idle(&self, now_ms: u64) -> bool {
        self.next_allowed_ms <= now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: RateLimitOptions = RateLimitOptions {
        per_message_ms: 5_000,
        grace_ms: 20_000,
    };

    /// How many messages at `now_ms` are allowed before the first refusal.
    fn burst(limit: &mut RateLimit, now_ms: u64) -> usize {
        let mut allowed = 0;
        while limit.check(now_ms, &OPTIONS).is_ok() {
            allowed += 1;
            assert!(allowed <= 100, "the limit never refused");
        }
        allowed
    }

    #[test]
    fn defaults_are_the_seeds() {
        assert_eq!(RateLimitOptions::default(), OPTIONS);
        assert_eq!(
            Cooldown { remaining_ms: 1 }.client_text(),
            "Your IP is being rate-limited, please try again later."
        );
    }

    #[test]
    fn burst_of_five_then_refused() {
        let mut limit = RateLimit::new();
        for n in 0..5 {
            assert_eq!(limit.check(0, &OPTIONS), Ok(()), "message {n}");
        }
        assert_eq!(
            limit.check(0, &OPTIONS),
            Err(Cooldown {
                remaining_ms: 5_000
            })
        );
    }

    #[test]
    fn burst_size_does_not_depend_on_the_epoch() {
        let now = 1_700_000_000_000;
        assert_eq!(burst(&mut RateLimit::new(), now), 5);
    }

    #[test]
    fn refused_messages_do_not_count() {
        let mut limit = RateLimit::new();
        assert_eq!(burst(&mut limit, 0), 5);
        let before = limit;
        for now in [0, 1_000, 4_999] {
            assert!(limit.check(now, &OPTIONS).is_err());
        }
        assert_eq!(limit, before);
        assert_eq!(
            limit.check(4_999, &OPTIONS),
            Err(Cooldown { remaining_ms: 1 })
        );
        assert_eq!(limit.check(5_000, &OPTIONS), Ok(()));
    }

    #[test]
    fn after_the_burst_one_message_every_five_seconds() {
        let mut limit = RateLimit::new();
        assert_eq!(burst(&mut limit, 0), 5);
        for step in 1..=10 {
            let now = step * 5_000;
            assert_eq!(limit.check(now, &OPTIONS), Ok(()), "at {now}");
            assert_eq!(
                limit.check(now, &OPTIONS),
                Err(Cooldown {
                    remaining_ms: 5_000
                }),
                "second at {now}"
            );
        }
    }

    #[test]
    fn waiting_restores_the_burst() {
        let mut limit = RateLimit::new();
        assert_eq!(burst(&mut limit, 0), 5);
        // 25 s later the next allowed time is now: a full burst again.
        assert!(limit.is_idle(25_000));
        assert_eq!(burst(&mut limit, 25_000), 5);
        // 10 s after a burst, two more.
        let mut limit = RateLimit::new();
        assert_eq!(burst(&mut limit, 0), 5);
        assert_eq!(burst(&mut limit, 10_000), 2);
    }

    #[test]
    fn idle_means_as_good_as_fresh() {
        let mut limit = RateLimit::new();
        assert!(limit.is_idle(0));
        assert_eq!(limit.check(1_000, &OPTIONS), Ok(()));
        assert!(!limit.is_idle(5_999));
        assert!(limit.is_idle(6_000));
    }

    #[test]
    fn clock_going_backwards_does_not_panic() {
        let mut limit = RateLimit::new();
        assert_eq!(burst(&mut limit, 100_000), 5);
        // Next allowed is 125 s; the clock steps back to 60 s: 65 s ahead.
        assert_eq!(
            limit.check(60_000, &OPTIONS),
            Err(Cooldown {
                remaining_ms: 45_000
            })
        );
        assert_eq!(
            limit.check(0, &OPTIONS),
            Err(Cooldown {
                remaining_ms: 105_000
            })
        );
        // Allowed again once the clock is within the grace period.
        assert_eq!(limit.check(105_000, &OPTIONS), Ok(()));
    }

    #[test]
    fn extreme_times_saturate() {
        let mut limit = RateLimit::new();
        assert_eq!(limit.check(u64::MAX, &OPTIONS), Ok(()));
        assert_eq!(limit.check(u64::MAX, &OPTIONS), Ok(()));
        assert!(limit.check(0, &OPTIONS).is_err());
        let greedy = RateLimitOptions {
            per_message_ms: u64::MAX,
            grace_ms: u64::MAX,
        };
        let mut limit = RateLimit::new();
        assert_eq!(limit.check(1, &greedy), Ok(()));
        assert_eq!(limit.check(1, &greedy), Ok(()));
    }

    #[test]
    fn zero_grace_allows_one_per_period() {
        let strict = RateLimitOptions {
            per_message_ms: 1_000,
            grace_ms: 0,
        };
        let mut limit = RateLimit::new();
        assert_eq!(limit.check(0, &strict), Ok(()));
        assert_eq!(
            limit.check(0, &strict),
            Err(Cooldown {
                remaining_ms: 1_000
            })
        );
        assert_eq!(limit.check(1_000, &strict), Ok(()));
    }
}
