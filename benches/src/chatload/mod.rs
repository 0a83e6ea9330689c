//! `chatload`: a load generator speaking dialect A of the chat protocol
//! (`docs/protocol.md`) against a server on a loopback address.
//!
//! Scenarios:
//!
//! - [`Scenario::Join`]: clients join a room that holds a backlog (seeded
//!   first): time from connect to `ready`, and a check of the backlog each
//!   client received.
//! - [`Scenario::Fanout`]: clients in one room each send at `rate`
//!   messages per second: end-to-end delivery latency, deliveries per
//!   second, lost, duplicated and out-of-order deliveries, rate-limit errors.
//! - [`Scenario::Rooms`]: the same in `rooms` rooms of `per_room` clients.
//! - [`Scenario::Idle`]: clients join and hold their connections for
//!   `duration`; how many are still open at the end.
//!
//! Every message text is `cl <run> <client> <seq> <scheduled µs> <sent µs>`
//! (µs since the run started), so each receiver can measure latency and
//! check, per sender, that every sequence number arrives once and in order.
//! Each client sends on a fixed schedule (`rate`, from a random phase);
//! when it falls behind, the late messages go out at once, and latency is
//! measured from the *scheduled* time: a server that makes senders wait
//! shows that wait in the tail instead of hiding it (coordinated omission).
//! The latency from the actual send is reported beside it.
//!
//! With [`Config::progress`], a line on stderr every few seconds says how
//! far the run is: clients ready, messages sent and delivered, the
//! delivery rate, the latency so far. Each client sends a distinct
//! fake client IP (`10.x.y.z`) in a header (`--ip-header`) so that a server
//! that trusts it gives each client its own rate budget; that IP is header
//! text only: every connection goes to the loopback address of `url`.
//!
//! With [`Config::server_pids`], the server process's CPU time (user and
//! system, from `/proc/<pid>/stat`) is read at the start and the end of the
//! measured window: for fanout and rooms from the start of sending until
//! drained, for join the ramp, for idle the hold. The report then gives the
//! server's CPU seconds and CPU per delivery, so servers can be compared by
//! work done rather than by latency alone.
//!
//! Bounded: at most [`MAX_CLIENTS`] clients, [`MAX_DURATION`] of load,
//! connects bounded in concurrency and time, a bounded drain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};

/// Most clients one run may open.
pub const MAX_CLIENTS: usize = 20_000;
/// Longest load phase (sending or holding) of one run.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Highest send rate per client, messages per second.
pub const MAX_RATE: f64 = 50.0;
/// Most backlog messages seeded before a run.
pub const MAX_BACKLOG: usize = 1_000;
/// The server sends at most this many backlog messages to a newcomer.
pub const SERVER_BACKLOG: usize = 100;
/// Backlog messages each seeding connection (one fake IP) sends: within the
/// rate limit's burst of 5.
const SEEDS_PER_IP: usize = 4;
/// Client read buffer (the default of 128 KiB per socket is too much for
/// thousands of clients).
const CLIENT_READ_BUFFER: usize = 4096;
/// Latency histogram shards (clients record into `id % SHARDS`).
const SHARDS: usize = 16;

/// What a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Clients join a room with a backlog: time to `ready`, backlog check.
    Join,
    /// Clients in one room each send at `rate`: delivery latency and loss.
    Fanout,
    /// `rooms` rooms of `per_room` clients, each sending at `rate`.
    Rooms,
    /// Clients join and hold their connections for `duration`.
    Idle,
}

/// One run's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Base URL of the server, `ws://<loopback>:<port>[/prefix]`.
    pub url: String,
    /// More front doors of the same service (the nodes of a cluster):
    /// client `i` connects to the `i % n`th of `url` and these, so each
    /// room's clients are spread over all of them. Backlogs are seeded
    /// through `url`.
    pub more_urls: Vec<String>,
    /// What to do.
    pub scenario: Scenario,
    /// Total clients (for [`Scenario::Rooms`]: `rooms * per_room`).
    pub clients: usize,
    /// Rooms the clients are spread over (round robin).
    pub rooms: usize,
    /// Messages per second each client sends (fanout, rooms).
    pub rate: f64,
    /// How long to send (fanout, rooms) or hold (idle).
    pub duration: Duration,
    /// Room name (or prefix, with several rooms); default: fresh per run.
    pub room: Option<String>,
    /// Messages to seed into each room before the clients join.
    pub backlog: usize,
    /// Header carrying each client's fake IP (`None`: no header).
    pub ip_header: Option<String>,
    /// Connections being opened at once (connect until `ready`).
    pub connect_concurrency: usize,
    /// Time limit for one client's connect, hello and `ready`.
    pub connect_timeout: Duration,
    /// After sending stops, how long to wait for the last deliveries.
    pub drain: Duration,
    /// Process ids of the server (same machine; one per node of a
    /// cluster): their CPU time over the measured window, summed, goes
    /// into the report.
    pub server_pids: Vec<u32>,
    /// Print a progress line on stderr this often (`None`: never).
    pub progress: Option<Duration>,
}

impl Config {
    /// Settings with the defaults of the command line.
    pub fn new(url: impl Into<String>, scenario: Scenario) -> Config {
        Config {
            url: url.into(),
            more_urls: Vec::new(),
            scenario,
            clients: 200,
            rooms: 1,
            rate: 0.2,
            duration: Duration::from_secs(30),
            room: None,
            backlog: if scenario == Scenario::Join { 100 } else { 0 },
            ip_header: Some("x-forwarded-for".to_owned()),
            connect_concurrency: 64,
            connect_timeout: Duration::from_secs(30),
            drain: Duration::from_secs(10),
            server_pids: Vec::new(),
            progress: None,
        }
    }
}

mod client;
mod cpu;
mod progress;
mod report;
use client::*;
use cpu::{CpuTimes, ServerCpu};
use progress::{Progress, merged};
pub use report::{Percentiles, Report};

/// Runs one load test and reports on it. Errors only for a bad
/// configuration or URL, or a backlog that could not be seeded; client
/// failures are counted in the report.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    if config.clients == 0 || config.clients > MAX_CLIENTS {
        bail!("clients must be 1..={MAX_CLIENTS}, got {}", config.clients);
    }
    if config.duration > MAX_DURATION {
        bail!("duration is at most {MAX_DURATION:?}");
    }
    if !(0.0..=MAX_RATE).contains(&config.rate) {
        bail!("rate must be 0..={MAX_RATE} messages per second per client");
    }
    if config.backlog > MAX_BACKLOG {
        bail!("backlog is at most {MAX_BACKLOG}");
    }
    // Fail early, before any connection, if a pid cannot be read.
    CpuTimes::of_pids(&config.server_pids)?;
    let rooms = config.rooms.clamp(1, config.clients);
    let mut targets = vec![target(&config.url).await?];
    for url in &config.more_urls {
        targets.push(target(url).await?);
    }
    let mut rng = Rng::seeded();
    let tag = format!("{:08x}", rng.next() as u32);
    let base = config
        .room
        .clone()
        .unwrap_or_else(|| format!("cl-{}-{tag}", scenario_name(config.scenario)));
    let room_names: Vec<String> = if rooms == 1 {
        vec![base]
    } else {
        (0..rooms).map(|r| format!("{base}-{r}")).collect()
    };
    if let Some(long) = room_names.iter().find(|n| n.chars().count() > 32) {
        bail!("room name {long:?} is over 32 characters");
    }
    let ip_header = match &config.ip_header {
        Some(h) => Some(http::HeaderName::try_from(h.as_str()).context("bad --ip-header")?),
        None => None,
    };
    // Fake IPs: a random block of 10/8 per run, so runs do not share budgets.
    let seed_ips = rooms * config.backlog.div_ceil(SEEDS_PER_IP);
    let span = (config.clients + seed_ips) as u32;
    let ip_base = (rng.next() as u32) % ((1 << 24) - span);
    let backlog: Vec<Vec<String>> = room_names
        .iter()
        .enumerate()
        .map(|(r, _)| {
            (0..config.backlog)
                .map(|k| format!("seed {tag} {r} {k}"))
                .collect()
        })
        .collect();
    let shards = || -> anyhow::Result<Vec<Mutex<Histogram<u64>>>> {
        (0..SHARDS)
            .map(|_| Ok(Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)))
            .collect()
    };
    let doors = targets.len();
    let shared = Arc::new(Shared {
        targets,
        ip_header,
        tag: tag.clone(),
        epoch: Instant::now(),
        room_sizes: OnceLock::new(),
        sent: AtomicU64::new(0),
        in_send: AtomicUsize::new(0),
        acked: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        settled: AtomicUsize::new(0),
        settled_notify: tokio::sync::Notify::new(),
        latency: shards()?,
        latency_from_send: shards()?,
        first_error: Mutex::new(None),
        connect: Semaphore::new(config.connect_concurrency.max(1)),
        connect_timeout: config.connect_timeout,
        backlog: backlog
            .iter()
            .map(|b| b[b.len().saturating_sub(SERVER_BACKLOG)..].to_vec())
            .collect(),
        ready_per_room: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
    });
    for (r, name) in room_names.iter().enumerate() {
        let first =
            ip_base + config.clients as u32 + (r * config.backlog.div_ceil(SEEDS_PER_IP)) as u32;
        tokio::time::timeout(
            Duration::from_secs(120),
            seed(&shared, name, &backlog[r], first),
        )
        .await
        .context("seeding the backlog took over 120 s")?
        .with_context(|| format!("seeding the backlog of {name}"))?;
    }

    let sends = matches!(config.scenario, Scenario::Fanout | Scenario::Rooms) && config.rate > 0.0;
    let period = sends.then(|| Duration::from_secs_f64(1.0 / config.rate));
    let (phase_tx, phase_rx) = watch::channel(JOINING);
    let mut server_cpu = ServerCpu::new(config.server_pids.clone());
    if config.scenario == Scenario::Join {
        server_cpu.start();
    }
    let ramp_start = Instant::now();
    let mut progress = Progress::new(config.progress, config.clients);
    let mut tasks = Vec::with_capacity(config.clients);
    for i in 0..config.clients {
        let r = i % rooms;
        let first_send = period.map_or(Duration::ZERO, |p| {
            p.mul_f64((rng.next() % 1_000_000) as f64 / 1_000_000.0)
        });
        let seat = Seat {
            id: i as u32,
            target: door(i, rooms, doors),
            room_index: r,
            room: room_names[r].clone(),
            ip: fake_ip(ip_base + i as u32),
            period,
            first_send,
        };
        tasks.push(tokio::spawn(client(shared.clone(), seat, phase_rx.clone())));
    }
    while shared.settled.load(Ordering::SeqCst) < config.clients {
        let notified = shared.settled_notify.notified();
        if shared.settled.load(Ordering::SeqCst) >= config.clients {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        progress.tick(&shared, "joining");
    }
    let ramp = ramp_start.elapsed();
    if config.scenario == Scenario::Join {
        server_cpu.stop();
    }
    // Room sizes: the clients that are ready. Clients that failed count as
    // connect errors, not as lost deliveries.
    let ready_per_room = shared
        .ready_per_room
        .iter()
        .map(|n| n.load(Ordering::SeqCst))
        .collect();
    let _ = shared.room_sizes.set(ready_per_room);

    let mut send_window = Duration::ZERO;
    let mut drain = Duration::ZERO;
    let mut drained = true;
    let mut sent_at_drain = 0;
    match config.scenario {
        Scenario::Join => {}
        Scenario::Idle => {
            server_cpu.start();
            let until = Instant::now() + config.duration;
            progress.sleep_until(&shared, "holding", until).await;
            server_cpu.stop();
        }
        Scenario::Fanout | Scenario::Rooms => {
            server_cpu.start();
            let send_start = Instant::now();
            phase_tx.send_replace(SENDING);
            let until = send_start + config.duration;
            progress.sleep_until(&shared, "sending", until).await;
            phase_tx.send_replace(STOP_SENDING);
            let drain_start = Instant::now();
            drained = false;
            while drain_start.elapsed() < config.drain {
                // First: no send in progress (a client that announces one
                // from now on sees the phase and does not send).
                let quiet = shared.in_send.load(Ordering::SeqCst) == 0;
                let sent = shared.sent.load(Ordering::SeqCst);
                let acked = shared.acked.load(Ordering::SeqCst);
                let expected = shared.expected.load(Ordering::SeqCst);
                let delivered = shared.delivered.load(Ordering::SeqCst);
                if quiet && acked >= sent && delivered >= expected {
                    drained = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                progress.tick(&shared, "draining");
            }
            server_cpu.stop();
            sent_at_drain = shared.sent.load(Ordering::SeqCst);
            drain = drain_start.elapsed();
            send_window = send_start.elapsed();
        }
    }
    phase_tx.send_replace(CLOSE);
    let mut all = Vec::with_capacity(tasks.len());
    for t in tasks {
        all.push(t.await.unwrap_or_default());
    }

    let mut report = Report {
        scenario: scenario_name(config.scenario).to_owned(),
        url: config.url.clone(),
        more_urls: config.more_urls.clone(),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        clients: config.clients,
        rooms,
        rate: if sends { config.rate } else { 0.0 },
        duration_s: match config.scenario {
            Scenario::Join => 0.0,
            _ => config.duration.as_secs_f64(),
        },
        connect_concurrency: config.connect_concurrency.max(1),
        ramp_s: ramp.as_secs_f64(),
        backlog_expected: config.backlog.min(SERVER_BACKLOG),
        drained,
        drain_s: drain.as_secs_f64(),
        sent_at_drain,
        first_error: shared
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
        ..Report::default()
    };
    let mut ready = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for s in &all {
        if !s.ready {
            report.connect_errors += 1;
            continue;
        }
        report.connected += 1;
        ready.saturating_record(s.ready_us.max(1));
        if s.backlog_ok {
            report.backlog_ok += 1;
        } else {
            report.backlog_bad += 1;
        }
        report.sent += s.sent;
        report.rate_limited += s.rate_limited;
        report.other_errors += s.other_errors;
        report.deliveries += s.deliveries;
        report.duplicated += s.duplicated;
        report.out_of_order += s.out_of_order;
        report.timestamp_regressions += s.timestamp_regressions;
        if s.disconnected {
            report.disconnected += 1;
        } else {
            report.alive_at_end += 1;
        }
    }
    report.ready_ms = Percentiles::of_micros(&ready);
    let (accepted, expected, lost) = losses(&all, rooms);
    report.accepted = accepted;
    report.expected_deliveries = expected;
    report.lost = lost;
    let latency = merged(&shared.latency).context("adding up the latency histograms")?;
    report.latency_ms = Percentiles::of_micros(&latency);
    let from_send =
        merged(&shared.latency_from_send).context("adding up the latency histograms")?;
    report.latency_from_send_ms = Percentiles::of_micros(&from_send);
    if send_window > Duration::ZERO {
        report.deliveries_per_s = report.deliveries as f64 / send_window.as_secs_f64();
    }
    server_cpu.fill(&mut report);
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Per room: every message anyone received from a sender counts as
/// accepted; each ready receiver should have all of them. A message sent
/// that no one received and that got no error is lost for every receiver.
fn losses(all: &[ClientStats], rooms: usize) -> (u64, u64, u64) {
    let mut accepted = 0;
    let mut expected = 0;
    let mut lost = 0;
    for r in 0..rooms {
        let members: Vec<(u32, &ClientStats)> = all
            .iter()
            .enumerate()
            .filter(|(i, s)| i % rooms == r && s.ready)
            .map(|(i, s)| (i as u32, s))
            .collect();
        let mut union: HashMap<u32, Seen> = HashMap::new();
        for (_, s) in &members {
            for (from, seen) in &s.seen {
                union.entry(*from).or_default().union(seen);
            }
        }
        let n = members.len() as u64;
        for (id, s) in &members {
            let got = union.get(id).map_or(0, Seen::count);
            accepted += got;
            expected += got * n;
            let unaccounted = s.sent.saturating_sub(got + s.errors_after_send);
            lost += unaccounted * n;
            expected += unaccounted * n;
        }
        for (_, s) in &members {
            for (from, all_seen) in &union {
                lost += s
                    .seen
                    .get(from)
                    .map_or_else(|| all_seen.count(), |mine| mine.missing_from(all_seen));
            }
        }
    }
    (accepted, expected, lost)
}

/// The front door of client `i`: clients go to rooms round robin
/// (`i % rooms`), and each room's members to the doors round robin, so
/// every room with at least `doors` members has members on every door.
fn door(i: usize, rooms: usize, doors: usize) -> usize {
    (i / rooms.max(1)) % doors.max(1)
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Join => "join",
        Scenario::Fanout => "fanout",
        Scenario::Rooms => "rooms",
        Scenario::Idle => "idle",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_its_own_texts() {
        assert_eq!(
            parse_text("cl ab12 7 3 99 120", "ab12"),
            Some(Stamp {
                client: 7,
                seq: 3,
                scheduled_us: 99,
                sent_us: 120
            })
        );
        assert_eq!(parse_text("cl other 7 3 99 120", "ab12"), None);
        assert_eq!(parse_text("cl ab12 7 3 99", "ab12"), None);
        assert_eq!(parse_text("cl ab12 7 3 99 120 5", "ab12"), None);
        assert_eq!(parse_text("hello", "ab12"), None);
    }

    /// A client held up for three periods sends the three late messages at
    /// once, each stamped with the time it should have gone: their latency
    /// includes the hold-up (no coordinated omission).
    #[tokio::test(start_paused = true)]
    async fn a_late_sender_keeps_its_schedule() {
        let period = Duration::from_millis(100);
        let start = tokio::time::Instant::now();
        let mut ticker = Some(schedule(start, period));
        assert_eq!(next_tick(&mut ticker).await, start);
        // Held up (say the client's CPU was busy) for 3.5 periods.
        tokio::time::advance(period * 7 / 2).await;
        let held_until = tokio::time::Instant::now();
        for k in 1..=3 {
            assert_eq!(next_tick(&mut ticker).await, start + period * k);
            assert_eq!(tokio::time::Instant::now(), held_until, "tick {k} waited");
        }
        // Then the schedule goes on as planned.
        assert_eq!(next_tick(&mut ticker).await, start + period * 4);
    }

    #[test]
    fn every_room_spreads_over_every_door() {
        for (clients, rooms, doors) in [(1000, 1, 3), (5000, 1000, 3), (10, 5, 2), (7, 7, 3)] {
            let mut seen = vec![std::collections::BTreeSet::new(); rooms];
            for i in 0..clients {
                let d = door(i, rooms, doors);
                assert!(d < doors);
                seen[i % rooms].insert(d);
            }
            let members = clients / rooms;
            for s in seen {
                assert_eq!(s.len(), members.min(doors), "{clients} {rooms} {doors}");
            }
        }
        assert_eq!(door(5, 1, 1), 0);
    }

    #[test]
    fn seen_sets() {
        let mut a = Seen::default();
        assert!(a.insert(3));
        assert!(!a.insert(3));
        assert!(a.insert(100));
        let mut all = a.clone();
        all.insert(5);
        assert_eq!(all.count(), 3);
        assert_eq!(a.missing_from(&all), 1);
    }

    #[test]
    fn fake_ips_are_ten_slash_eight() {
        assert_eq!(fake_ip(1), "10.0.0.1");
        assert_eq!(fake_ip(0x01_0203), "10.1.2.3");
    }

    #[tokio::test]
    async fn refuses_other_hosts() {
        assert!(target("ws://127.0.0.1:1").await.is_ok());
        assert!(target("ws://[::1]:1").await.is_ok());
        assert!(target("ws://10.0.0.1:1").await.is_err());
        assert!(target("ws://example.com:1").await.is_err());
        assert!(target("wss://127.0.0.1:1").await.is_err());
    }
}
