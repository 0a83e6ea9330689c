//! The hello world of Durable Objects: a named counter whose value survives
//! restarts.
//!
//! ```text
//! cargo run -p objects --example counter -- visits
//! cargo run -p objects --example counter -- visits   # one more
//! ```

use std::sync::Arc;

use objects::BoxError;
use objects::{Context, Object, Result, Runtime};

struct Counter {
    value: u64,
}

impl Object for Counter {
    type Env = ();
    /// How much to add.
    type Call = u64;
    /// The new value.
    type Reply = u64;

    async fn new(ctx: &mut Context, _env: Arc<()>) -> Result<Self, BoxError> {
        let value = ctx.storage().get("value")?.unwrap_or(0);
        Ok(Counter { value })
    }

    async fn call(&mut self, ctx: &mut Context, add: u64) -> Result<u64, BoxError> {
        self.value += add;
        ctx.storage().put("value", &self.value)?;
        // The reply leaves only after "value" is on disk (the output gate).
        Ok(self.value)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "visits".into());
    let rt = Runtime::builder().data_dir("data/counter").open()?;
    let counters = rt.namespace::<Counter>("counters", ())?;
    let value = counters.get_by_name(&name).call(1).await?;
    println!("{name} = {value}");
    let listed: Vec<String> = counters
        .stored_ids()?
        .iter()
        .map(|id| id.name().unwrap_or("?").to_string())
        .collect();
    println!("counters with stored data: {listed:?}");
    rt.shutdown().await;
    Ok(())
}
