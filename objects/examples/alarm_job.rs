//! A scheduled job: a room that deletes itself after a period of silence.
//! Every message pushes its alarm back; when the alarm fires, the room
//! clears its storage (and the alarm with it).
//!
//! ```text
//! cargo run -p objects --example alarm_job
//! ```
//!
//! The silence period is 2 seconds here so the demo finishes quickly.

use std::sync::Arc;
use std::time::Duration;

use objects::BoxError;
use objects::{AlarmInfo, Context, ListOptions, Object, Result, Runtime};
use tokio::sync::Notify;

const SILENCE: Duration = Duration::from_secs(2);

struct Room {
    env: Arc<Notify>,
}

impl Object for Room {
    type Env = Notify;
    /// A message to post.
    type Call = String;
    /// How many messages the room holds.
    type Reply = usize;

    async fn new(_ctx: &mut Context, env: Arc<Notify>) -> Result<Self, BoxError> {
        Ok(Room { env })
    }

    async fn call(&mut self, ctx: &mut Context, msg: String) -> Result<usize, BoxError> {
        let now = ctx.now();
        let key = now.duration_since(std::time::UNIX_EPOCH)?.as_millis();
        let storage = ctx.storage();
        storage.put(&format!("msg/{key:016}"), &msg)?;
        storage.set_alarm(now + SILENCE)?;
        Ok(storage
            .list_bytes(&ListOptions::new().prefix("msg/"))?
            .len())
    }

    async fn alarm(&mut self, ctx: &mut Context, info: AlarmInfo) -> Result<(), BoxError> {
        let n = ctx.storage().list_bytes(&ListOptions::new())?.len();
        println!(
            "{} was silent for {:?}; deleting its {n} messages",
            ctx.name().unwrap_or("room"),
            ctx.now().duration_since(info.scheduled - SILENCE)?
        );
        ctx.storage().delete_all()?;
        self.env.notify_one();
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rt = Runtime::builder().data_dir("data/alarm_job").open()?;
    let rooms = rt.namespace::<Room>("rooms", Notify::new())?;
    let room = rooms.get_by_name("lobby");
    for text in ["hello", "anyone here?", "bye"] {
        let n = room.call(text.to_string()).await?;
        println!("posted {text:?}; the room holds {n} messages");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("waiting for {SILENCE:?} of silence...");
    rooms.env().notified().await;
    // The handler's deletes commit as its event ends; shutdown waits for it.
    rt.shutdown().await;
    println!("rooms with stored data now: {}", rooms.stored_ids()?.len());
    Ok(())
}
