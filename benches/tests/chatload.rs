//! `chatload`'s fanout scenario, briefly, against the floor relay and the
//! chat demo, both in process on 127.0.0.1:0. No timing assertions: only
//! that messages were delivered, none lost, duplicated or reordered, that
//! the latency figures are consistent, and that the binary reports its
//! progress while it runs.

use std::time::Duration;

use benches::chatload::{self, Config, Report, Scenario};
use chat_demo::{AppState, ChatOptions, ClientIpHeader};

fn fanout(url: String) -> Config {
    let mut config = Config::new(url, Scenario::Fanout);
    config.clients = 20;
    // 4 messages per client: within the chat demo's burst of 5 per IP.
    config.rate = 2.0;
    config.duration = Duration::from_secs(2);
    config.drain = Duration::from_secs(10);
    config
}

fn check(report: &Report) {
    eprintln!("{}", report.summary());
    assert_eq!(report.connected, 20, "{report:?}");
    assert!(report.sent > 0, "{report:?}");
    assert_eq!(report.accepted, report.sent, "{report:?}");
    assert!(report.deliveries > 0, "{report:?}");
    assert_eq!(report.deliveries, report.expected_deliveries, "{report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.duplicated, 0, "{report:?}");
    assert_eq!(report.out_of_order, 0, "{report:?}");
    assert_eq!(report.timestamp_regressions, 0, "{report:?}");
    assert_eq!(report.rate_limited, 0, "{report:?}");
    assert_eq!(report.other_errors, 0, "{report:?}");
    assert!(report.drained, "{report:?}");
    assert_eq!(report.disconnected, 0, "{report:?}");
    // One latency sample per first delivery, in both measures; the
    // percentiles in order; and the wait from the scheduled send at least
    // the wait from the actual send, quantile by quantile (a message is
    // never sent before its time).
    let first_deliveries = report.deliveries - report.duplicated;
    for p in [report.latency_ms, report.latency_from_send_ms] {
        assert_eq!(p.count, first_deliveries, "{report:?}");
        assert!(
            0.0 < p.p50 && p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max,
            "{p:?}"
        );
    }
    let (s, a) = (report.latency_ms, report.latency_from_send_ms);
    for (scheduled, actual) in [
        (s.p50, a.p50),
        (s.p90, a.p90),
        (s.p99, a.p99),
        (s.p999, a.p999),
        (s.max, a.max),
    ] {
        assert!(scheduled >= actual, "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_against_the_relay() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(benches::relay::serve(listener));
    let report = chatload::run(fanout(format!("ws://{addr}")))
        .await
        .expect("run");
    server.abort();
    check(&report);
}

/// The chat demo in this process, on a fresh data dir, behind `doors`
/// front doors (listeners) sharing one runtime.
struct Demo {
    rt: objects::Runtime,
    urls: Vec<String>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    servers: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Demo {
    async fn start(doors: usize) -> Demo {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = objects::Runtime::builder()
            .data_dir(dir.path())
            .open()
            .expect("runtime");
        let options = ChatOptions {
            client_ip_header: ClientIpHeader::XForwardedFor,
            ..ChatOptions::default()
        };
        let state = AppState::new(&rt, options).expect("namespaces");
        let mut demo = Demo {
            rt,
            urls: Vec::new(),
            stops: Vec::new(),
            servers: Vec::new(),
            _dir: dir,
        };
        for _ in 0..doors {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            demo.urls
                .push(format!("ws://{}", listener.local_addr().expect("addr")));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            demo.stops.push(stop);
            demo.servers.push(tokio::spawn(chat_demo::serve(
                listener,
                state.clone(),
                async move {
                    let _ = stopped.await;
                },
            )));
        }
        demo
    }

    async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        self.rt.shutdown().await;
        for server in self.servers {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_against_the_chat_demo() {
    let demo = Demo::start(1).await;
    let report = chatload::run(fanout(demo.urls[0].clone()))
        .await
        .expect("run");
    demo.stop().await;
    check(&report);
}

/// Two front doors on one runtime (as the nodes of a cluster are): the
/// clients are spread over both, and every message reaches every member,
/// whichever door it came through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_spread_over_two_front_doors() {
    let demo = Demo::start(2).await;
    let mut config = fanout(demo.urls[0].clone());
    config.more_urls = vec![demo.urls[1].clone()];
    config.server_pids = vec![std::process::id(), std::process::id()];
    let report = chatload::run(config).await.expect("run");
    let second = demo.urls[1].clone();
    demo.stop().await;
    check(&report);
    assert_eq!(report.more_urls, [second]);
    assert_eq!(report.more_server_pids, [std::process::id()]);
    assert!(
        report
            .summary()
            .contains(&format!("+{}", std::process::id()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_sees_the_backlog_of_the_chat_demo() {
    let demo = Demo::start(1).await;
    let mut config = Config::new(demo.urls[0].clone(), Scenario::Join);
    config.clients = 10;
    config.backlog = 20;
    let report = chatload::run(config).await.expect("run");
    demo.stop().await;
    eprintln!("{}", report.summary());
    assert_eq!(report.connected, 10, "{report:?}");
    assert_eq!(report.backlog_ok, 10, "{report:?}");
}

/// The `chatload` binary prints a progress line every `--progress-secs`
/// while it sends, then the JSON report with every percentile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reports_progress_while_it_runs() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(benches::relay::serve(listener));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatload"))
        .args(["--url", &format!("ws://{addr}")])
        .args(["--clients", "5", "--rate", "2", "--duration", "3"])
        .args(["--progress-secs", "1", "--ip-header", "none"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run chatload");
    server.abort();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // 3 s of sending at one line a second: lines at about 1 s and 2 s (and
    // maybe 3 s) into it.
    let sending: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" sending: "))
        .collect();
    assert!(sending.len() >= 2, "{stderr}");
    assert!(sending.iter().all(|l| l.contains("ready 5/5")), "{stderr}");
    assert!(
        stderr.contains("latency from the scheduled send: p50 "),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Report = serde_json::from_str(stdout.trim()).expect("one JSON report");
    assert!(report.latency_ms.count > 0, "{report:?}");
    assert!(
        report.latency_ms.p999 >= report.latency_ms.p99,
        "{report:?}"
    );
}
