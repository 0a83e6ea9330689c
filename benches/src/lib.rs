//! Helpers shared by the benchmarks: reporting and memory readings.
//!
//! Timings of repeatable operations run on criterion (`runtime`, `storage`,
//! `micro`), which gives their spread and compares with the last run. What
//! criterion cannot measure (memory, one large burst, sockets in a child
//! process) stays in plain programs (`alarms`, `sockets`); each prints one
//! line per figure with the machine's core count, so `docs/performance.md`
//! can quote them with the command that produced them.

/// Prints a figure as `name: value unit`.
pub fn report(name: &str, value: f64, unit: &str) {
    println!("{name:<58} {value:>14.2} {unit}");
}

/// Prints the machine line every benchmark starts with.
pub fn header(what: &str) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# {what} (cores: {cores}, {})", std::env::consts::ARCH);
}

/// Resident set size of this process in bytes (Linux), if readable.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The tokio runtime the criterion benches run on: two workers (the
/// development machine has two cores), every driver enabled.
///
/// # Panics
///
/// If the runtime cannot be built.
pub fn bench_tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub mod chatload;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod relay;
