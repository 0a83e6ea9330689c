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
//! Every message text is `cl <run> <client> <seq> <µs since run start>`, so
//! each receiver can measure latency and check, per sender, that every
//! sequence number arrives once and in order. Each client sends a distinct
//! fake client IP (`10.x.y.z`) in a header (`--ip-header`) so that a server
//! that trusts it gives each client its own rate budget; that IP is header
//! text only: every connection goes to the loopback address of `url`.
//!
//! With [`Config::server_pid`], the server process's CPU time (user and
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
use serde::{Deserialize, Serialize};
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
/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`,
/// 100 on Linux).
const CLOCK_TICKS_PER_S: f64 = 100.0;

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
    /// Process id of the server (same machine): its CPU time over the
    /// measured window goes into the report.
    pub server_pid: Option<u32>,
}

impl Config {
    /// Settings with the defaults of the command line.
    pub fn new(url: impl Into<String>, scenario: Scenario) -> Config {
        Config {
            url: url.into(),
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
            server_pid: None,
        }
    }
}

/// p50, p99, max and mean of a distribution, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    fn of_micros(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// The results of one run (printed as one JSON line).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Base URL.
    pub url: String,
    /// Logical cores of this machine (client and server share them).
    pub cores: usize,
    /// Clients asked for.
    pub clients: usize,
    /// Rooms.
    pub rooms: usize,
    /// Messages per second per client.
    pub rate: f64,
    /// Load phase, seconds.
    pub duration_s: f64,
    /// Connections opened at once during the ramp.
    pub connect_concurrency: usize,
    /// Clients that reached `ready`.
    pub connected: usize,
    /// Clients that failed to connect or to reach `ready`.
    pub connect_errors: usize,
    /// The first connect error, if any.
    pub first_error: Option<String>,
    /// Ramp: first connect until every client is ready or failed, seconds.
    pub ramp_s: f64,
    /// Connect until `ready`, per client.
    pub ready_ms: Percentiles,
    /// Backlog messages each client should get before `ready`.
    pub backlog_expected: usize,
    /// Clients whose backlog was exactly the seeded messages, in order.
    pub backlog_ok: usize,
    /// Clients whose backlog was not.
    pub backlog_bad: usize,
    /// Messages sent.
    pub sent: u64,
    /// Messages the server relayed (seen by anyone).
    pub accepted: u64,
    /// Rate-limit errors received.
    pub rate_limited: u64,
    /// Other error frames received.
    pub other_errors: u64,
    /// Chat frames of this run received after `ready` (all receivers).
    pub deliveries: u64,
    /// Deliveries expected: each accepted message times its room's clients.
    pub expected_deliveries: u64,
    /// Deliveries per second over the send window plus drain.
    pub deliveries_per_s: f64,
    /// Send until receipt, per first delivery.
    pub latency_ms: Percentiles,
    /// Deliveries that never arrived.
    pub lost: u64,
    /// Deliveries that arrived more than once.
    pub duplicated: u64,
    /// Deliveries that arrived after a later message of the same sender.
    pub out_of_order: u64,
    /// Chat frames whose timestamp did not increase (per receiver).
    pub timestamp_regressions: u64,
    /// Clients whose connection ended before the run closed it.
    pub disconnected: usize,
    /// Clients still connected when the run closed them.
    pub alive_at_end: usize,
    /// Whether every expected delivery arrived within the drain time.
    pub drained: bool,
    /// Time from the end of sending until drained (or the drain limit).
    pub drain_s: f64,
    /// Whole run, seconds.
    pub elapsed_s: f64,
    /// Server process whose CPU time was measured, if any.
    pub server_pid: Option<u32>,
    /// Wall time of the window the server's CPU was measured over, seconds
    /// (fanout, rooms: start of sending until drained; join: the ramp;
    /// idle: the hold).
    pub server_window_s: f64,
    /// Server CPU time (user + system) in the window, seconds.
    pub server_cpu_s: f64,
    /// Server user CPU time in the window, seconds.
    pub server_user_s: f64,
    /// Server system (kernel) CPU time in the window, seconds.
    pub server_sys_s: f64,
    /// Deliveries per second of server CPU (0 without a pid or deliveries).
    pub deliveries_per_server_cpu_s: f64,
    /// Server CPU seconds per million deliveries (0 without a pid or
    /// deliveries).
    pub server_cpu_s_per_million_deliveries: f64,
    /// Why the server's CPU time could not be read at the end, if so.
    pub server_cpu_error: Option<String>,
}

impl Report {
    /// A few lines for people.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "chatload {} against {} ({} cores): {} clients in {} room(s), {}/{} connected ({} errors), ramp {:.2} s\n",
            self.scenario,
            self.url,
            self.cores,
            self.clients,
            self.rooms,
            self.connected,
            self.clients,
            self.connect_errors,
            self.ramp_s
        );
        s += &format!(
            "  ready: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.ready_ms.p50, self.ready_ms.p99, self.ready_ms.max
        );
        if self.backlog_expected > 0 {
            s += &format!(
                "; backlog of {}: {} ok, {} bad",
                self.backlog_expected, self.backlog_ok, self.backlog_bad
            );
        }
        s += "\n";
        if self.sent > 0 {
            s += &format!(
                "  sent {} at {}/s per client for {:.0} s; accepted {}, rate-limited {}, other errors {}\n",
                self.sent,
                self.rate,
                self.duration_s,
                self.accepted,
                self.rate_limited,
                self.other_errors
            );
            s += &format!(
                "  deliveries {} of {} ({:.0}/s); latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
                self.deliveries,
                self.expected_deliveries,
                self.deliveries_per_s,
                self.latency_ms.p50,
                self.latency_ms.p99,
                self.latency_ms.max
            );
            s += &format!(
                "  lost {}, duplicated {}, out of order {}, timestamp regressions {}; drained {} in {:.2} s\n",
                self.lost,
                self.duplicated,
                self.out_of_order,
                self.timestamp_regressions,
                self.drained,
                self.drain_s
            );
        }
        if let Some(pid) = self.server_pid {
            s += &format!(
                "  server pid {pid}: CPU {:.2} s (user {:.2} s, sys {:.2} s) over {:.2} s ({:.0}% of one core)",
                self.server_cpu_s,
                self.server_user_s,
                self.server_sys_s,
                self.server_window_s,
                if self.server_window_s > 0.0 {
                    100.0 * self.server_cpu_s / self.server_window_s
                } else {
                    0.0
                }
            );
            if self.deliveries > 0 && self.server_cpu_s > 0.0 {
                s += &format!(
                    "; {:.0} deliveries per CPU second, {:.2} CPU s per million deliveries",
                    self.deliveries_per_server_cpu_s, self.server_cpu_s_per_million_deliveries
                );
            } else if self.connected > 0 && self.server_window_s > 0.0 {
                s += &format!(
                    "; {:.3} ms CPU per connected client",
                    1000.0 * self.server_cpu_s / self.connected as f64
                );
            }
            if let Some(e) = &self.server_cpu_error {
                s += &format!("; not measured: {e}");
            }
            s += "\n";
        }
        s += &format!(
            "  disconnected early {}, alive at end {}; {:.1} s in all",
            self.disconnected, self.alive_at_end, self.elapsed_s
        );
        s
    }
}

mod client;
use client::*;

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
    if let Some(pid) = config.server_pid {
        // Fail early, before any connection, if the pid cannot be read.
        CpuTimes::of_pid(pid)?;
    }
    let rooms = config.rooms.clamp(1, config.clients);
    let target = target(&config.url).await?;
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
    let mut histogram_shards = Vec::with_capacity(SHARDS);
    for _ in 0..SHARDS {
        histogram_shards.push(Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3)?));
    }
    let shared = Arc::new(Shared {
        target,
        ip_header,
        tag: tag.clone(),
        epoch: Instant::now(),
        room_sizes: OnceLock::new(),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        settled: AtomicUsize::new(0),
        settled_notify: tokio::sync::Notify::new(),
        latency: histogram_shards,
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
    let mut server_cpu = ServerCpu::new(config.server_pid);
    if config.scenario == Scenario::Join {
        server_cpu.start();
    }
    let ramp_start = Instant::now();
    let mut tasks = Vec::with_capacity(config.clients);
    for i in 0..config.clients {
        let r = i % rooms;
        let first_send = period.map_or(Duration::ZERO, |p| {
            p.mul_f64((rng.next() % 1_000_000) as f64 / 1_000_000.0)
        });
        let seat = Seat {
            id: i as u32,
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
    match config.scenario {
        Scenario::Join => {}
        Scenario::Idle => {
            server_cpu.start();
            tokio::time::sleep(config.duration).await;
            server_cpu.stop();
        }
        Scenario::Fanout | Scenario::Rooms => {
            server_cpu.start();
            let send_start = Instant::now();
            phase_tx.send_replace(SENDING);
            tokio::time::sleep(config.duration).await;
            phase_tx.send_replace(STOP_SENDING);
            let drain_start = Instant::now();
            drained = false;
            while drain_start.elapsed() < config.drain {
                let sent = shared.sent.load(Ordering::SeqCst);
                let acked = shared.acked.load(Ordering::SeqCst);
                let expected = shared.expected.load(Ordering::SeqCst);
                let delivered = shared.delivered.load(Ordering::SeqCst);
                if acked >= sent && delivered >= expected {
                    drained = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            server_cpu.stop();
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
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for shard in &shared.latency {
        latency.add(&*shard.lock().unwrap_or_else(PoisonError::into_inner))?;
    }
    report.latency_ms = Percentiles::of_micros(&latency);
    if send_window > Duration::ZERO {
        report.deliveries_per_s = report.deliveries as f64 / send_window.as_secs_f64();
    }
    server_cpu.fill(&mut report);
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// CPU time a process has used so far, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CpuTimes {
    user_ticks: u64,
    sys_ticks: u64,
}

impl CpuTimes {
    /// Reads `/proc/<pid>/stat`.
    fn of_pid(pid: u32) -> anyhow::Result<CpuTimes> {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {path} (--server-pid)"))?;
        CpuTimes::parse(&text).with_context(|| format!("parsing {path}"))
    }

    /// `utime` and `stime`, fields 14 and 15 of a `/proc/<pid>/stat` line.
    /// Field 2 (the command, in parentheses) may hold spaces and
    /// parentheses, so the count starts after its last `)`.
    fn parse(stat: &str) -> anyhow::Result<CpuTimes> {
        let close = stat.rfind(')').context("no ')' after the command")?;
        // After the command come fields 3 (state), 4, ...: utime is the
        // 12th of those, stime the 13th.
        let mut rest = stat[close + 1..].split_ascii_whitespace().skip(11);
        let mut field = |name: &str| -> anyhow::Result<u64> {
            rest.next()
                .with_context(|| format!("no {name} field"))?
                .parse()
                .with_context(|| format!("bad {name} field"))
        };
        let user_ticks = field("utime")?;
        let sys_ticks = field("stime")?;
        Ok(CpuTimes {
            user_ticks,
            sys_ticks,
        })
    }
}

/// The server's CPU time over the measured window (nothing without a pid).
struct ServerCpu {
    pid: Option<u32>,
    start: Option<(Instant, CpuTimes)>,
    end: Option<Result<(Instant, CpuTimes), String>>,
}

impl ServerCpu {
    fn new(pid: Option<u32>) -> ServerCpu {
        ServerCpu {
            pid,
            start: None,
            end: None,
        }
    }

    /// Starts the window. A failure (the server exited) is reported, not
    /// returned: the clients are running by now.
    fn start(&mut self) {
        if let Some(pid) = self.pid {
            let now = Instant::now();
            match CpuTimes::of_pid(pid) {
                Ok(times) => self.start = Some((now, times)),
                Err(e) => self.end = Some(Err(format!("{e:#}"))),
            }
        }
    }

    /// Ends the window; a failure (the server exited) is reported, not
    /// returned.
    fn stop(&mut self) {
        if let (Some(pid), Some(_)) = (self.pid, self.start) {
            let now = Instant::now();
            self.end = Some(
                CpuTimes::of_pid(pid)
                    .map(|t| (now, t))
                    .map_err(|e| format!("{e:#}")),
            );
        }
    }

    fn fill(&self, report: &mut Report) {
        report.server_pid = self.pid;
        if self.pid.is_none() {
            return;
        }
        let ((t0, c0), (t1, c1)) = match (self.start, &self.end) {
            (_, Some(Err(e))) => {
                report.server_cpu_error = Some(e.clone());
                return;
            }
            (Some(start), Some(Ok(end))) => (start, *end),
            _ => {
                report.server_cpu_error = Some("the window was never closed".to_owned());
                return;
            }
        };
        let secs = |ticks: u64| ticks as f64 / CLOCK_TICKS_PER_S;
        report.server_window_s = t1.duration_since(t0).as_secs_f64();
        report.server_user_s = secs(c1.user_ticks.saturating_sub(c0.user_ticks));
        report.server_sys_s = secs(c1.sys_ticks.saturating_sub(c0.sys_ticks));
        report.server_cpu_s = report.server_user_s + report.server_sys_s;
        if report.deliveries > 0 && report.server_cpu_s > 0.0 {
            report.deliveries_per_server_cpu_s = report.deliveries as f64 / report.server_cpu_s;
            report.server_cpu_s_per_million_deliveries =
                report.server_cpu_s * 1e6 / report.deliveries as f64;
        }
    }
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
        assert_eq!(parse_text("cl ab12 7 3 99", "ab12"), Some((7, 3, 99)));
        assert_eq!(parse_text("cl other 7 3 99", "ab12"), None);
        assert_eq!(parse_text("hello", "ab12"), None);
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

    #[test]
    fn parses_proc_stat() {
        // A command with a space and a parenthesis; utime 1234, stime 56.
        let line = "4242 (chat (demo) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 56 0 0 20 0 3 0 100 1000 200 18446744073709551615";
        assert_eq!(
            CpuTimes::parse(line).expect("parse"),
            CpuTimes {
                user_ticks: 1234,
                sys_ticks: 56
            }
        );
        assert!(CpuTimes::parse("4242 (x) S 1 2").is_err());
        assert!(CpuTimes::parse("no parenthesis").is_err());
    }

    #[test]
    fn reads_own_cpu_times() {
        let t = CpuTimes::of_pid(std::process::id()).expect("own /proc stat");
        let u = CpuTimes::of_pid(std::process::id()).expect("own /proc stat");
        assert!(u.user_ticks >= t.user_ticks && u.sys_ticks >= t.sys_ticks);
    }

    #[test]
    fn server_cpu_fills_the_report() {
        let mut cpu = ServerCpu::new(None);
        let mut report = Report {
            deliveries: 1000,
            ..Report::default()
        };
        cpu.fill(&mut report);
        assert_eq!(report.server_pid, None);
        assert_eq!(report.server_cpu_s, 0.0);
        assert!(!report.summary().contains("server pid"));

        let t0 = Instant::now();
        cpu = ServerCpu {
            pid: Some(1),
            start: Some((
                t0,
                CpuTimes {
                    user_ticks: 100,
                    sys_ticks: 10,
                },
            )),
            end: Some(Ok((
                t0 + Duration::from_secs(2),
                CpuTimes {
                    user_ticks: 250,
                    sys_ticks: 60,
                },
            ))),
        };
        cpu.fill(&mut report);
        assert_eq!(report.server_pid, Some(1));
        assert!((report.server_user_s - 1.5).abs() < 1e-9);
        assert!((report.server_sys_s - 0.5).abs() < 1e-9);
        assert!((report.server_cpu_s - 2.0).abs() < 1e-9);
        assert!((report.server_window_s - 2.0).abs() < 1e-9);
        assert!((report.deliveries_per_server_cpu_s - 500.0).abs() < 1e-9);
        assert!((report.server_cpu_s_per_million_deliveries - 2000.0).abs() < 1e-9);
        assert!(report.summary().contains("server pid 1: CPU 2.00 s"));
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
