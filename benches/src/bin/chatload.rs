//! `chatload`: load generator for dialect-A chat servers on loopback
//! addresses; see `benches::chatload` for the scenarios and what is measured.
//!
//! ```text
//! chatload --url ws://127.0.0.1:8787 --scenario fanout --clients 200 --rate 0.2 --duration 30
//! chatload --url ws://127.0.0.1:8787 --scenario fanout --clients 1000 --server-pid "$(pgrep -x chat-demo)"
//! ```
//!
//! Prints a progress line on stderr every 5 s (`--progress-secs`), then one
//! JSON line of results on stdout and a short summary on stderr. Latency
//! is measured from each message's scheduled send time (see
//! `benches::chatload`), with p50, p90, p99, p99.9 and max. Against `chat-demo`, start it with
//! `--trust-client-ip-header x-forwarded-for` so each client gets its own
//! rate budget.

use std::time::Duration;

use benches::chatload::{self, Config, Scenario};
use clap::Parser;

/// Dialect-A chat load generator (loopback servers only).
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Base URL of the server (ws://, loopback host). Repeat it for the
    /// nodes of a cluster: clients are spread over them, each room's too.
    #[arg(long, default_values_t = ["ws://127.0.0.1:8787".to_owned()])]
    url: Vec<String>,
    /// What to run.
    #[arg(long, value_enum, default_value_t = Scenario::Fanout)]
    scenario: Scenario,
    /// Clients (at most 20,000); ignored for `rooms`, which uses
    /// `rooms * per-room`.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Messages per second each client sends (fanout, rooms).
    #[arg(long, default_value_t = 0.2)]
    rate: f64,
    /// Seconds of sending (fanout, rooms) or holding (idle); at most 600.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Room name (prefix with several rooms); default: fresh per run.
    #[arg(long)]
    room: Option<String>,
    /// Rooms the clients are spread over.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Clients per room (scenario `rooms`).
    #[arg(long, default_value_t = 10)]
    per_room: usize,
    /// Messages seeded into each room first (default: 100 for `join`, else 0).
    #[arg(long)]
    backlog: Option<usize>,
    /// Header carrying each client's fake IP; `none` sends no header.
    #[arg(long, default_value = "x-forwarded-for")]
    ip_header: String,
    /// Connections opened at once during the ramp.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Seconds one client may take from connect to `ready`.
    #[arg(long, default_value_t = 30.0)]
    connect_timeout: f64,
    /// Seconds to wait for the last deliveries after sending stops.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Process id of the server (same machine): report its CPU time (from
    /// /proc/<pid>/stat) over the measured window and CPU per delivery.
    /// Repeat it for the nodes of a cluster: their times are summed.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Seconds between progress lines on stderr; 0 for none.
    #[arg(long, default_value_t = 5.0)]
    progress_secs: f64,
}

fn seconds(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| anyhow::anyhow!("--{what}: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut urls = a.url.into_iter();
    let first = urls
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8787".to_owned());
    let mut config = Config::new(first, a.scenario);
    config.more_urls = urls.collect();
    config.clients = a.clients;
    config.rooms = a.rooms;
    if a.scenario == Scenario::Rooms {
        config.clients = a.rooms.saturating_mul(a.per_room);
    }
    config.rate = a.rate;
    config.duration = seconds(a.duration, "duration")?;
    config.room = a.room;
    if let Some(b) = a.backlog {
        config.backlog = b;
    }
    config.ip_header = (!a.ip_header.eq_ignore_ascii_case("none")).then_some(a.ip_header);
    config.connect_concurrency = a.connect_concurrency;
    config.connect_timeout = seconds(a.connect_timeout, "connect-timeout")?;
    config.drain = seconds(a.drain, "drain")?;
    config.server_pids = a.server_pid;
    config.progress = (a.progress_secs > 0.0)
        .then(|| seconds(a.progress_secs, "progress-secs"))
        .transpose()?;
    let report = chatload::run(config).await?;
    println!("{}", serde_json::to_string(&report)?);
    eprintln!("{}", report.summary());
    Ok(())
}
