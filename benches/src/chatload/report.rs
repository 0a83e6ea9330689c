//! What a run reports: the JSON line and the summary for people.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// p50, p90, p99, p99.9, max and mean of a distribution, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    pub(super) fn of_micros(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }

    /// `p50 1.20 ms, p90 ..., p99 ..., p99.9 ..., max ...`.
    pub fn line(&self) -> String {
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

/// The results of one run (printed as one JSON line).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Base URL.
    pub url: String,
    /// More front doors the clients were spread over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_urls: Vec<String>,
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
    /// From the time a message was *scheduled* to be sent until its
    /// receipt, per first delivery. A client that falls behind its schedule
    /// (the server pushing back, or the client's own CPU) sends its late
    /// messages at once, and their wait counts: measuring from the actual
    /// send would hide it (coordinated omission).
    pub latency_ms: Percentiles,
    /// From the actual send until receipt, for comparison with
    /// `latency_ms`: a large gap between the two means senders fell behind.
    pub latency_from_send_ms: Percentiles,
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
    /// Messages counted as sent when the drain ended. Equal to `sent` in a
    /// sound run: more in `sent` would mean a client sent after the run
    /// stopped sending, whose deliveries the closing connections then lose.
    pub sent_at_drain: u64,
    /// Whole run, seconds.
    pub elapsed_s: f64,
    /// Server process whose CPU time was measured, if any.
    pub server_pid: Option<u32>,
    /// More server processes whose CPU time is included (the other
    /// nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_server_pids: Vec<u32>,
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
        s += &format!("  ready: {}", self.ready_ms.line());
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
                "  deliveries {} of {} ({:.0}/s)\n",
                self.deliveries, self.expected_deliveries, self.deliveries_per_s,
            );
            s += &format!(
                "  latency from the scheduled send: {}\n",
                self.latency_ms.line()
            );
            s += &format!(
                "  latency from the actual send:    {}\n",
                self.latency_from_send_ms.line()
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
            let more: String = self
                .more_server_pids
                .iter()
                .map(|p| format!("+{p}"))
                .collect();
            s += &format!(
                "  server pid {pid}{more}: CPU {:.2} s (user {:.2} s, sys {:.2} s) over {:.2} s ({:.0}% of one core)",
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
