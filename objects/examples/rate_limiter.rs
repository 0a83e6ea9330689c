//! A rate limiter: one object per client key, a token bucket in memory,
//! asked through typed methods (`Method` + `Handler`, `Stub::ask`).
//!
//! One object per key makes the check exact without a lock or a database:
//! every request for the key queues in the same mailbox. The bucket lives
//! in memory only: an evicted or reset limiter starts full again, which is
//! the usual trade (Cloudflare's rate-limiter example does the same).
//!
//! ```text
//! cargo run -p objects --example rate_limiter
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use objects::{BoxError, Context, Handler, Method, Object, Runtime};
use serde::{Deserialize, Serialize};

/// Bucket size and refill rate of every limiter.
#[derive(Debug, Clone, Copy)]
struct Policy {
    burst: f64,
    per_second: f64,
}

struct Limiter {
    policy: Policy,
    tokens: f64,
    at: SystemTime,
}

/// Takes `cost` tokens if there are that many.
#[derive(Serialize, Deserialize)]
struct Take {
    cost: u32,
}

/// What `Take` answers.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Decision {
    Allowed {
        left: u32,
    },
    /// Not enough tokens; enough will be there after this long.
    Limited {
        retry_after_ms: u64,
    },
    /// The cost is over the bucket size: never allowed. (An answer, not
    /// an error: a handler error would reset the object, refilling the
    /// bucket for the client that sent it.)
    OverBurst,
}

impl Method for Take {
    type Reply = Decision;
}

/// How many tokens are there now (does not take any).
#[derive(Serialize, Deserialize)]
struct Peek;

impl Method for Peek {
    type Reply = u32;
}

impl Limiter {
    fn refill(&mut self, now: SystemTime) {
        let elapsed = now.duration_since(self.at).unwrap_or_default();
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() * self.policy.per_second).min(self.policy.burst);
        self.at = now;
    }
}

impl Object for Limiter {
    type Env = Policy;
    type Call = ();
    type Reply = ();

    async fn new(ctx: &mut Context, policy: Arc<Policy>) -> Result<Self, BoxError> {
        Ok(Limiter {
            policy: *policy,
            tokens: policy.burst,
            at: ctx.now(),
        })
    }
}

impl Handler<Take> for Limiter {
    async fn handle(&mut self, ctx: &mut Context, take: Take) -> Result<Decision, BoxError> {
        self.refill(ctx.now());
        let cost = f64::from(take.cost);
        if cost > self.policy.burst {
            return Ok(Decision::OverBurst);
        }
        if self.tokens >= cost {
            self.tokens -= cost;
            // Whole tokens left; the fraction stays in the bucket.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let left = self.tokens.floor() as u32;
            Ok(Decision::Allowed { left })
        } else {
            let missing = cost - self.tokens;
            let wait = Duration::from_secs_f64(missing / self.policy.per_second);
            Ok(Decision::Limited {
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            })
        }
    }
}

impl Handler<Peek> for Limiter {
    async fn handle(&mut self, ctx: &mut Context, _: Peek) -> Result<u32, BoxError> {
        self.refill(ctx.now());
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(self.tokens.floor() as u32)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let rt = Runtime::builder().data_dir(dir.path()).open()?;
    let limiters = rt.namespace::<Limiter>(
        "limiters",
        Policy {
            burst: 5.0,
            per_second: 2.0,
        },
    )?;
    let alice = limiters.get_by_name("client:alice");
    let bob = limiters.get_by_name("client:bob");
    for i in 1..=7 {
        let decision = alice.ask(Take { cost: 1 }).await?;
        println!("alice request {i}: {decision:?}");
    }
    println!(
        "bob, a different key: {:?}",
        bob.ask(Take { cost: 1 }).await?
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    println!("alice after 600 ms: {} tokens", alice.ask(Peek).await?);
    println!(
        "a cost over the burst: {:?}",
        alice.ask(Take { cost: 50 }).await?
    );
    rt.shutdown().await;
    Ok(())
}
