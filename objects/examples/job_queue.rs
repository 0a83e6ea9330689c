//! A job queue: each job is a named durable timer of a queue object,
//! delivered at least once with its payload, retried with backoff when it
//! fails (the retry count is stored with the timer, so it survives a
//! restart), and dropped after its last retry. A repeating timer reports
//! progress.
//!
//! ```text
//! cargo run -p objects --example job_queue
//! ```
//!
//! The example runs on tokio's paused clock so its minutes of backoff
//! take no time; a server runs the same code on the real clock.

use std::sync::Arc;
use std::time::Duration;

use objects::{BoxError, Context, Handler, Method, Object, Runtime, Timer, TokioClock};
use serde::{Deserialize, Serialize};

/// A job: what to do, and (for the demo) how many attempts fail first.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Job {
    task: String,
    fails_first: u32,
}

struct Queue;

/// Queues a job to run after `delay_ms`; answers the job's name.
#[derive(Serialize, Deserialize)]
struct Enqueue {
    job: Job,
    delay_ms: u64,
}

impl Method for Enqueue {
    type Reply = String;
}

/// What is done and what is pending.
#[derive(Serialize, Deserialize)]
struct Status;

#[derive(Serialize, Deserialize, Debug)]
struct StatusReply {
    done: Vec<String>,
    /// (name, retries so far)
    pending: Vec<(String, u32)>,
}

impl Method for Status {
    type Reply = StatusReply;
}

impl Object for Queue {
    type Env = ();
    type Call = ();
    type Reply = ();

    async fn new(_ctx: &mut Context, _env: Arc<()>) -> Result<Self, BoxError> {
        Ok(Queue)
    }

    async fn timer(&mut self, ctx: &mut Context, timer: Timer) -> Result<(), BoxError> {
        if timer.name == "progress" {
            let done: Vec<String> = ctx.storage().get("done")?.unwrap_or_default();
            println!("  progress: {} jobs done", done.len());
            return Ok(());
        }
        let job: Job = timer.payload()?;
        if timer.retry_count < job.fails_first {
            println!(
                "  {} ({}): attempt {} fails",
                timer.name,
                job.task,
                timer.retry_count + 1
            );
            // An error undoes this run's writes and schedules a retry.
            return Err(format!("{} is not ready yet", job.task).into());
        }
        println!(
            "  {} ({}): done on attempt {}",
            timer.name,
            job.task,
            timer.retry_count + 1
        );
        let mut done: Vec<String> = ctx.storage().get("done")?.unwrap_or_default();
        done.push(job.task);
        ctx.storage().put("done", &done)?;
        Ok(())
    }
}

impl Handler<Enqueue> for Queue {
    async fn handle(&mut self, ctx: &mut Context, e: Enqueue) -> Result<String, BoxError> {
        let n: u64 = ctx.storage().get("next")?.unwrap_or(0);
        ctx.storage().put("next", &(n + 1))?;
        let name = format!("job-{n}");
        ctx.timers()
            .schedule_after(&name, Duration::from_millis(e.delay_ms), &e.job)?;
        ctx.timers()
            .schedule_every("progress", Duration::from_secs(600), &())?;
        Ok(name)
    }
}

impl Handler<Status> for Queue {
    async fn handle(&mut self, ctx: &mut Context, _: Status) -> Result<StatusReply, BoxError> {
        Ok(StatusReply {
            done: ctx.storage().get("done")?.unwrap_or_default(),
            pending: ctx
                .timers()
                .list()?
                .into_iter()
                .filter(|t| t.name != "progress")
                .map(|t| (t.name, t.retry_count))
                .collect(),
        })
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let open = || {
        Runtime::builder()
            .data_dir(dir.path())
            .clock(Arc::new(TokioClock::starting_at(
                std::time::SystemTime::now(),
            )))
            .open()
    };
    {
        let rt = open()?;
        let queues = rt.namespace::<Queue>("queues", ())?;
        let q = queues.get_by_name("emails");
        for (task, fails_first, delay_ms) in [
            ("welcome ada", 0, 1_000),
            ("welcome bob", 2, 2_000),
            ("invoice 17", 9, 3_000),
        ] {
            let job = Job {
                task: task.into(),
                fails_first,
            };
            println!("queued {}", q.ask(Enqueue { job, delay_ms }).await?);
        }
        // (The store's writer runs on a blocking thread, which keeps paused
        // time from moving by itself: move it by hand.)
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(2)).await;
            rt.alarms_settled().await;
        }
        println!("before a restart: {:?}", q.ask(Status).await?);
        rt.shutdown().await;
    }

    // A new runtime on the same data: pending jobs and their retry
    // counts are still there.
    let rt = open()?;
    let queues = rt.namespace::<Queue>("queues", ())?;
    let q = queues.get_by_name("emails");
    println!("after the restart: {:?}", q.ask(Status).await?);
    for _ in 0..40 {
        tokio::time::advance(Duration::from_secs(60)).await;
        rt.alarms_settled().await;
    }
    println!("at the end: {:?}", q.ask(Status).await?);
    rt.shutdown().await;
    Ok(())
}
