//! The `RateLimiter` object: one per client IP, shared by every room.

use std::sync::Arc;

use objects::{BoxError, Context, Handler, Method, Object};
use serde::{Deserialize, Serialize};

use crate::protocol::limit::{RateLimit, RateLimitOptions};

/// Counts one client IP's chat messages across all rooms and dialects
/// (the rule is [`RateLimit`]). One object per IP, reached with
/// `id_from_name(ip)`.
///
/// Like the original, it stores nothing: it only cares about the last
/// half-minute, so losing its state on eviction or restart merely forgives
/// a burst. An idle limiter is evicted long after its state stopped
/// mattering (the runtime's idle timeout, 70 s by default, against at most
/// 25 s of memory).
///
/// Its one method is [`Check`], asked with `stub.ask(Check { now_ms })`.
#[derive(Debug)]
pub struct RateLimiter {
    state: RateLimit,
    options: RateLimitOptions,
}

/// What a client is told when its IP's limiter could not answer (the
/// message or join is refused either way: the limit fails closed). In a
/// cluster its node may be unavailable now; else it is overloaded or
/// shutting down, and the client sees the usual rate limit text.
pub(crate) const LIMITER_UNAVAILABLE: &str =
    "The rate limiter for your IP is not available right now; please try again shortly.";

/// The client's text for a limiter that failed with `error`.
pub(crate) fn failure_text(error: &objects::Error) -> &'static str {
    if error.is_unavailable() {
        LIMITER_UNAVAILABLE
    } else {
        crate::protocol::limit::RATE_LIMITED
    }
}

/// Counts a message sent at `now_ms`: `Ok(())`, or refused with
/// `Err(cooldown_ms)`, the time until one would be allowed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Check {
    /// When the message was sent, in ms since the epoch.
    pub now_ms: u64,
}

impl Method for Check {
    type Reply = Result<(), u64>;
}

impl Object for RateLimiter {
    type Env = RateLimitOptions;
    /// No one-method calls: the limiter answers [`Check`].
    type Call = ();
    /// No one-method calls.
    type Reply = ();

    async fn new(_ctx: &mut Context, env: Arc<RateLimitOptions>) -> Result<Self, BoxError> {
        Ok(RateLimiter {
            state: RateLimit::new(),
            options: *env,
        })
    }
}

impl Handler<Check> for RateLimiter {
    async fn handle(
        &mut self,
        _ctx: &mut Context,
        Check { now_ms }: Check,
    ) -> Result<Result<(), u64>, BoxError> {
        Ok(self
            .state
            .check(now_ms, &self.options)
            .map_err(|cooldown| cooldown.remaining_ms))
    }
}
