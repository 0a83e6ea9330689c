//! The metrics after a scripted chat session: join, send, hibernate, the
//! history-retention alarm, leave. The Prometheus recorder is process-wide,
//! so this binary holds this one test and its figures are exact.

mod common;

use std::time::Duration;

use chat_demo::AdminOptions;
use common::{PATIENCE, Server, Setup};
use http_body_util::BodyExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower::ServiceExt;

/// One sample of the Prometheus text: `name` or `name{labels}`; 0 when
/// the series does not exist (yet).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a number"))
        })
        .unwrap_or(0.0)
}

/// The sum of every series of `name` (`name` alone, or `name{...}` with
/// any labels): a counter across its namespaces.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labelled = series
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'));
            labelled.then(|| value.parse::<f64>().expect("a number"))
        })
        .sum()
}

async fn scrape(router: &axum::Router) -> String {
    let req = http::Request::get("/metrics")
        .header("authorization", "Bearer t0ken")
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("scrape");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(body.to_vec()).expect("utf-8")
}

/// Scrapes until `ok` holds (each scrape publishes fresh gauges); yields
/// between tries, bounded by PATIENCE.
async fn scrape_until(router: &axum::Router, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let wait = async {
        loop {
            let text = scrape(router).await;
            if ok(&text) {
                return text;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("metrics never showed: {what}"))
}

/// The process's own figures (Linux): present and plausible.
#[cfg(target_os = "linux")]
fn process_figures(m: &str) {
    assert!(
        m.contains("# TYPE process_cpu_seconds_total counter"),
        "{m}"
    );
    assert!(sample(m, "process_cpu_seconds_total") >= 0.0);
    assert!(sample(m, "process_resident_memory_bytes") > 0.0, "{m}");
    let open = sample(m, "process_open_fds");
    // At least stdin, stdout, stderr, the store and the listener.
    assert!(open >= 3.0, "{m}");
    assert!(sample(m, "process_max_fds") >= open, "{m}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let start = sample(m, "process_start_time_seconds");
    assert!(
        start > 0.0 && start <= now + 1.0,
        "started {start}, now {now}"
    );
}

/// Outside Linux the process's figures are left out.
#[cfg(not(target_os = "linux"))]
fn process_figures(m: &str) {
    assert!(!m.contains("process_open_fds"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_chat_session() {
    // Before the runtime opens, so its handles reach the recorder.
    let prometheus = chat_demo::install_prometheus().expect("recorder");
    let dir = tempfile::tempdir().expect("tempdir");
    let hour = 3_600_000;
    let setup = Setup {
        hibernation: Duration::from_millis(200),
        history_retention: Some(Duration::from_millis(hour)),
        ..Setup::default()
    };
    let server = Server::start(dir.path(), setup).await;
    let admin = chat_demo::admin_app(
        &server.rt,
        AdminOptions {
            token: Some("t0ken".into()),
            inspector: false,
            prometheus: Some(prometheus),
            listen: None,
            cluster: None,
        },
    )
    .expect("admin routes");
    let m = scrape(&admin).await;
    assert_eq!(total(&m, "objects_sockets_accepted_total"), 0.0);
    assert_eq!(sample(&m, r#"objects_live{namespace="rooms"}"#), 0.0);
    assert!(m.contains("# HELP objects_commit_seconds"), "{m}");
    process_figures(&m);

    // Join.
    let (mut alice, _) = server.a_named("ops", "alice").await;
    let m = scrape(&admin).await;
    assert_eq!(total(&m, "objects_sockets_accepted_total"), 1.0);
    assert_eq!(sample(&m, r#"objects_live{namespace="rooms"}"#), 1.0);
    assert_eq!(
        sample(&m, r#"objects_sockets_open{namespace="rooms"}"#),
        1.0
    );
    assert_eq!(
        total(&m, "objects_websocket_messages_in_total"),
        1.0,
        "the name frame"
    );
    // Counters are per namespace, like the gauges.
    assert_eq!(
        sample(&m, r#"objects_sockets_accepted_total{namespace="rooms"}"#),
        1.0
    );
    assert_eq!(sample(&m, r#"chat_http_responses_total{class="1xx"}"#), 1.0);
    let out_after_join = total(&m, "objects_websocket_messages_out_total");
    assert!(
        out_after_join >= 1.0,
        "at least the ready frame: {out_after_join}"
    );
    // The chat's own count of frames, by dialect: the hello in, the
    // same frames out as the runtime counted.
    let a_in = r#"chat_websocket_frames_total{dialect="a",direction="in"}"#;
    let a_out = r#"chat_websocket_frames_total{dialect="a",direction="out"}"#;
    assert_eq!(sample(&m, a_in), 1.0, "the name frame");
    assert_eq!(sample(&m, a_out), out_after_join);
    let commits_after_join = total(&m, "objects_commits_total");
    let calls_after_join = total(&m, "objects_calls_total");
    assert!(calls_after_join >= 1.0, "the front door's fetch");

    // Send: one message in, its echo out, one commit with it; the rate
    // limiter is called and comes alive, and the room reports its first
    // message to the public room directory.
    alice.say("hello").await;
    let echo = alice.json().await;
    assert_eq!(echo["message"], "hello");
    let m = scrape(&admin).await;
    assert_eq!(total(&m, "objects_websocket_messages_in_total"), 2.0);
    assert_eq!(
        total(&m, "objects_websocket_messages_out_total"),
        out_after_join + 1.0
    );
    assert_eq!(sample(&m, a_in), 2.0, "the message");
    assert_eq!(sample(&m, a_out), out_after_join + 1.0, "its echo");
    assert_eq!(
        total(&m, "chat_websocket_frames_total"),
        2.0 + out_after_join + 1.0,
        "no frame of another dialect"
    );
    assert!(total(&m, "objects_commits_total") > commits_after_join);
    assert!(sample(&m, "objects_commit_seconds_count") >= 1.0);
    assert!(sample(&m, "objects_commit_batch_size_count") >= 1.0);
    assert_eq!(
        total(&m, "objects_calls_total"),
        calls_after_join + 2.0,
        "one limiter call, one directory report"
    );
    assert_eq!(
        sample(&m, r#"objects_live{namespace="rate-limiters"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"objects_calls_total{namespace="rate-limiters"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"objects_calls_total{namespace="directory"}"#),
        2.0,
        "the join's report and the first message's"
    );
    assert_eq!(
        sample(&m, r#"objects_calls_total{namespace="rooms"}"#),
        1.0,
        "the front door's fetch"
    );
    assert_eq!(
        sample(&m, "objects_alarms_pending"),
        1.0,
        "the retention alarm"
    );
    assert!(sample(&m, "objects_store_bytes") > 0.0);

    // Hibernate: the room leaves memory, its socket stays open.
    server.hibernated().await;
    let m = scrape(&admin).await;
    assert_eq!(sample(&m, r#"objects_live{namespace="rooms"}"#), 0.0);
    assert_eq!(sample(&m, r#"objects_hibernated{namespace="rooms"}"#), 1.0);
    assert_eq!(
        sample(&m, r#"objects_sockets_open{namespace="rooms"}"#),
        1.0
    );
    assert!(total(&m, "objects_evictions_total") >= 1.0);
    let activations = total(&m, "objects_activations_total");

    // The retention alarm: an hour later the message expires.
    server.clock.advance(hour + 1);
    server.rt.wake_alarms();
    server.rt.alarms_settled().await;
    let m = scrape(&admin).await;
    assert_eq!(total(&m, "objects_alarms_fired_total"), 1.0);
    assert_eq!(
        sample(&m, "objects_alarms_pending"),
        0.0,
        "nothing left to expire"
    );
    assert_eq!(total(&m, "objects_alarms_retried_total"), 0.0);
    assert_eq!(total(&m, "objects_alarms_dropped_total"), 0.0);
    assert_eq!(
        total(&m, "objects_activations_total"),
        activations + 1.0,
        "the alarm woke the room"
    );
    let room = server.state.rooms().id_from_name("ops");
    assert!(
        server
            .state
            .rooms()
            .export(&room)
            .expect("export")
            .is_empty(),
        "the expired message is gone"
    );

    // Leave.
    alice.close().await;
    let m = scrape_until(&admin, "the socket closed", |m| {
        total(m, "objects_sockets_closed_total") == 1.0
            && sample(m, r#"objects_sockets_open{namespace="rooms"}"#) == 0.0
    })
    .await;
    assert_eq!(total(&m, "objects_sockets_cut_slow_total"), 0.0);
    assert_eq!(total(&m, "objects_resets_total"), 0.0);
    assert_eq!(total(&m, "objects_overloads_total"), 0.0);
    assert_eq!(total(&m, "objects_commit_failures_total"), 0.0);

    // The inspector's summary carries the same figures as JSON.
    let stats = server.rt.stats();
    let rooms = stats
        .namespaces
        .iter()
        .find(|n| n.name == "rooms")
        .expect("rooms namespace");
    assert_eq!(rooms.sockets_open, 0);
    assert_eq!(json!(stats)["alarms_pending"], 0);

    // The chat's own: a refused upgrade by reason, a rate-limited message,
    // responses by status class.
    let mut req = server
        .url("/api/room/ops/websocket")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().expect("header"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
    }
    let (mut bob, _) = server.a_named("spam", "bob").await;
    let mut sent = 0;
    loop {
        sent += 1;
        assert!(sent < 100, "never rate limited");
        bob.say(&format!("spam {sent}")).await;
        if bob.json().await.get("error").is_some() {
            break;
        }
    }
    bob.close().await;
    let m = scrape(&admin).await;
    assert_eq!(
        sample(&m, r#"chat_upgrades_refused_total{reason="origin"}"#),
        1.0
    );
    assert_eq!(total(&m, "chat_upgrades_refused_total"), 1.0);
    assert_eq!(
        sample(&m, r#"chat_rate_limited_total{what="message"}"#),
        1.0
    );
    assert_eq!(sample(&m, r#"chat_http_responses_total{class="4xx"}"#), 1.0);
    assert_eq!(sample(&m, r#"chat_http_responses_total{class="1xx"}"#), 2.0);
    for (name, _, _) in chat_demo::CHAT_METRICS {
        if *name != "chat_connections_refused_total" {
            assert!(m.contains(&format!("# HELP {name} ")), "{name}: {m}");
        }
    }
    server.stop().await;
}
