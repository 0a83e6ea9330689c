//! The process's own figures in `/metrics`, named as Prometheus's client
//! libraries name them: resident memory, CPU time, open and allowed file
//! descriptors, start time. Read from `/proc` (Linux only) when scraped,
//! so they cost nothing between scrapes. The parsers below are pure and
//! tested on sample text; [`render`] does the reading.

use std::fmt::Write as _;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`): the kernel
/// reports 100 on every architecture Rust targets on Linux, whatever its
/// internal tick rate (Prometheus's own procfs reader fixes it the same
/// way rather than asking `sysconf`).
const USER_HZ: f64 = 100.0;

/// What the scrape shows; `None` for a figure that could not be read.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub(crate) cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub(crate) resident_bytes: Option<u64>,
    /// File descriptors open now.
    pub(crate) open_fds: Option<u64>,
    /// The soft limit of open files (`RLIMIT_NOFILE`).
    pub(crate) max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub(crate) start_time_seconds: Option<f64>,
}

/// The times in `/proc/<pid>/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatTimes {
    /// `utime + stime`.
    pub(crate) cpu_ticks: u64,
    /// `starttime`: ticks after boot.
    pub(crate) start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last `)`: field 3 (`state`) comes first after it.
pub(crate) fn parse_stat(text: &str) -> Option<StatTimes> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field n (1-based, as in proc(5)) is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatTimes {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
    })
}

/// The resident set size from `/proc/<pid>/status` (`VmRSS:  2096 kB`),
/// in bytes.
pub(crate) fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut words = line.split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// The soft limit of open files from `/proc/<pid>/limits` (the row `Max
/// open files`, its first number); `None` when unlimited.
pub(crate) fn parse_max_fds(limits: &str) -> Option<u64> {
    let row = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    row.split_whitespace().next()?.parse().ok()
}

/// The boot time from `/proc/stat` (`btime`), in seconds since the epoch.
pub(crate) fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The figures from the texts of `/proc/self/stat`, `/proc/self/status`,
/// `/proc/self/limits` and `/proc/stat`, and the count of `/proc/self/fd`.
pub(crate) fn stats_from(
    stat: Option<&str>,
    status: Option<&str>,
    limits: Option<&str>,
    system_stat: Option<&str>,
    open_fds: Option<u64>,
) -> ProcessStats {
    let times = stat.and_then(parse_stat);
    let btime = system_stat.and_then(parse_btime);
    ProcessStats {
        cpu_seconds: times.map(|t| t.cpu_ticks as f64 / USER_HZ),
        resident_bytes: status.and_then(parse_rss),
        open_fds,
        max_fds: limits.and_then(parse_max_fds),
        start_time_seconds: times
            .zip(btime)
            .map(|(t, boot)| boot as f64 + t.start_ticks as f64 / USER_HZ),
    }
}

/// The Prometheus text of `stats`: `# HELP`, `# TYPE` and the sample of
/// each figure that was read.
pub(crate) fn exposition(stats: &ProcessStats) -> String {
    let rows: [(&str, &str, &str, Option<f64>); 5] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            stats.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            stats.resident_bytes.map(|v| v as f64),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            stats.open_fds.map(|v| v as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            stats.max_fds.map(|v| v as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            stats.start_time_seconds,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        if let Some(value) = value {
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
    }
    out
}

/// Reads this process's figures from `/proc` (a figure that cannot be
/// read is left out) and renders them.
pub(crate) fn render() -> String {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    // The directory's own descriptor, open while it is listed, counts too.
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as u64);
    let stats = stats_from(
        read("/proc/self/stat").as_deref(),
        read("/proc/self/status").as_deref(),
        read("/proc/self/limits").as_deref(),
        read("/proc/stat").as_deref(),
        open_fds,
    );
    exposition(&stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `stat` line whose command name holds a space and a parenthesis.
    const STAT: &str = "12293 (chat (demo) R 12290 12290 8377 0 -1 4194304 103 0 0 0 \
        250 75 0 0 20 0 1 0 28650 3133440 417 18446744073709551615 0 0 0 0\n";

    const STATUS: &str =
        "Name:\tchat-demo\nVmPeak:\t  10000 kB\nVmRSS:\t    2096 kB\nThreads:\t4\n";

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max open files            1024                 1048576              files     
Max locked memory         8388608              8388608              bytes     
";

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        assert_eq!(
            parse_stat(STAT),
            Some(StatTimes {
                cpu_ticks: 325,
                start_ticks: 28650
            })
        );
        assert_eq!(parse_stat("12 (x) R 1 2"), None, "too short");
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn rss_is_read_in_kib() {
        assert_eq!(parse_rss(STATUS), Some(2096 * 1024));
        assert_eq!(parse_rss("Name:\tx\n"), None);
        assert_eq!(parse_rss("VmRSS:\t12 pages\n"), None, "an unknown unit");
    }

    #[test]
    fn max_fds_is_the_soft_limit() {
        assert_eq!(parse_max_fds(LIMITS), Some(1024));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(parse_max_fds(""), None);
    }

    #[test]
    fn btime_is_read_from_the_system_stat() {
        let stat = "cpu  1 2 3 4\nintr 5\nbtime 1796578291\nprocesses 9\n";
        assert_eq!(parse_btime(stat), Some(1_796_578_291));
        assert_eq!(parse_btime("cpu 1\n"), None);
    }

    #[test]
    fn figures_and_their_exposition() {
        let stats = stats_from(
            Some(STAT),
            Some(STATUS),
            Some(LIMITS),
            Some("btime 1000\n"),
            Some(7),
        );
        assert_eq!(
            stats,
            ProcessStats {
                cpu_seconds: Some(3.25),
                resident_bytes: Some(2096 * 1024),
                open_fds: Some(7),
                max_fds: Some(1024),
                start_time_seconds: Some(1286.5),
            }
        );
        let text = exposition(&stats);
        assert!(
            text.contains(
                "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.25\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\nprocess_resident_memory_bytes 2146304\n"),
            "{text}"
        );
        assert!(text.contains("\nprocess_open_fds 7\n"), "{text}");
        assert!(
            text.contains("# TYPE process_max_fds gauge\nprocess_max_fds 1024\n"),
            "{text}"
        );
        assert!(
            text.contains("\nprocess_start_time_seconds 1286.5\n"),
            "{text}"
        );
    }

    #[test]
    fn unread_figures_are_left_out() {
        let text = exposition(&stats_from(None, Some(STATUS), None, None, None));
        assert_eq!(
            text,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes 2146304\n"
        );
    }

    #[test]
    fn this_process_reads() {
        let text = render();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name}: {text}");
        }
    }
}
