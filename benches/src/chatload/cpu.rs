//! The server's CPU time over a run's measured window, from
//! `/proc/<pid>/stat`.

use std::time::Instant;

use anyhow::Context as _;

use super::Report;

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`,
/// 100 on Linux).
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// CPU time a process has used so far, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct CpuTimes {
    user_ticks: u64,
    sys_ticks: u64,
}

impl CpuTimes {
    /// Reads `/proc/<pid>/stat`.
    pub(super) fn of_pid(pid: u32) -> anyhow::Result<CpuTimes> {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {path} (--server-pid)"))?;
        CpuTimes::parse(&text).with_context(|| format!("parsing {path}"))
    }

    /// The sum over several processes (the nodes of a cluster).
    pub(super) fn of_pids(pids: &[u32]) -> anyhow::Result<CpuTimes> {
        let mut sum = CpuTimes::default();
        for pid in pids {
            let t = CpuTimes::of_pid(*pid)?;
            sum.user_ticks += t.user_ticks;
            sum.sys_ticks += t.sys_ticks;
        }
        Ok(sum)
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

/// The server's CPU time over the measured window, summed over its
/// processes (nothing without a pid).
pub(super) struct ServerCpu {
    pids: Vec<u32>,
    start: Option<(Instant, CpuTimes)>,
    end: Option<Result<(Instant, CpuTimes), String>>,
}

impl ServerCpu {
    pub(super) fn new(pids: Vec<u32>) -> ServerCpu {
        ServerCpu {
            pids,
            start: None,
            end: None,
        }
    }

    /// Starts the window. A failure (the server exited) is reported, not
    /// returned: the clients are running by now.
    pub(super) fn start(&mut self) {
        if !self.pids.is_empty() {
            let now = Instant::now();
            match CpuTimes::of_pids(&self.pids) {
                Ok(times) => self.start = Some((now, times)),
                Err(e) => self.end = Some(Err(format!("{e:#}"))),
            }
        }
    }

    /// Ends the window; a failure (the server exited) is reported, not
    /// returned.
    pub(super) fn stop(&mut self) {
        if !self.pids.is_empty() && self.start.is_some() {
            let now = Instant::now();
            self.end = Some(
                CpuTimes::of_pids(&self.pids)
                    .map(|t| (now, t))
                    .map_err(|e| format!("{e:#}")),
            );
        }
    }

    pub(super) fn fill(&self, report: &mut Report) {
        report.server_pid = self.pids.first().copied();
        report.more_server_pids = self.pids.iter().skip(1).copied().collect();
        if self.pids.is_empty() {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
        let mut cpu = ServerCpu::new(Vec::new());
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
            pids: vec![1],
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
}
