//! The `RateLimiter` object: one per client IP, shared by every room.

use std::sync::Arc;

use objects::BoxError;
use objects::{Context, Object};
/// Results inside handlers: any error, boxed.
type Result<T, E = objects::BoxError> = std::result::Result<T, E>;

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
/// RPC: `call(now_ms)` counts a message sent at `now_ms` and answers
/// `Ok(())`, or refuses it with `Err(cooldown_ms)`, the time until one
/// would be allowed.
#[derive(Debug)]
pub struct RateLimiter {
    state: RateLimit,
    options: RateLimitOptions,
}

impl Object for RateLimiter {
    type Env = RateLimitOptions;
    type Call = u64;
    type Reply = std::result::Result<(), u64>;

    async fn new(_ctx: &mut Context, env: Arc<RateLimitOptions>) -> Result<Self, BoxError> {
        Ok(RateLimiter {
            state: RateLimit::new(),
            options: *env,
        })
    }

    async fn call(
        &mut self,
        _ctx: &mut Context,
        now_ms: u64,
    ) -> Result<std::result::Result<(), u64>, BoxError> {
        Ok(self
            .state
            .check(now_ms, &self.options)
            .map_err(|cooldown| cooldown.remaining_ms))
    }
}
