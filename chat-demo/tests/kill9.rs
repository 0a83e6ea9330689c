//! Kill -9 under load: the chat server is driven by dialect-A clients and
//! killed with SIGKILL at a pseudo-random moment, several rounds on one data
//! dir. Afterwards every message any client received is in the history,
//! none twice, and timestamps still increase: what a client saw survived
//! the crash (the output gate).

#![cfg(unix)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::process::Child;
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Safety net only; a passing round needs a fraction of it.
const PATIENCE: Duration = Duration::from_secs(20);
const ROUNDS: u64 = 4;
const CLIENTS: u64 = 24;
/// Within the rate limit's burst of five per IP.
const PER_CLIENT: u64 = 4;

type Seen = Arc<Mutex<Vec<(String, String, u64)>>>;
type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn start(dir: &std::path::Path) -> (Child, String) {
    common::start_binary(dir).await
}

async fn join(addr: &str, ip: &str, hello: Value) -> Client {
    let mut req = format!("ws://{addr}/api/room/crash/websocket")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("x-forwarded-for", ip.parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    ws.send(Message::text(hello.to_string()))
        .await
        .expect("hello");
    ws
}

/// Reads until `ready`, returning the chat messages before it.
async fn until_ready(ws: &mut Client) -> Vec<(String, String, u64)> {
    let mut backlog = Vec::new();
    loop {
        let frame = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("ready in time")
            .expect("open")
            .expect("frame");
        let Message::Text(t) = frame else { continue };
        let v: Value = serde_json::from_str(t.as_str()).expect("json");
        if v.get("ready").is_some() {
            return backlog;
        }
        if let Some(m) = chat(&v) {
            backlog.push(m);
        }
    }
}

fn chat(v: &Value) -> Option<(String, String, u64)> {
    Some((
        v.get("name")?.as_str()?.to_owned(),
        v.get("message")?.as_str()?.to_owned(),
        v.get("timestamp")?.as_u64()?,
    ))
}

/// A small deterministic generator for the kill moments.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_a_client_saw_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen: Seen = Arc::default();
    let mut seed = 0x5eed_u64;
    for round in 0..ROUNDS {
        let (mut server, addr) = start(dir.path()).await;
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let ip = format!("10.9.{round}.{i}");
            let mut ws = join(
                &addr,
                &ip,
                serde_json::json!({ "name": format!("c{round}-{i}") }),
            )
            .await;
            until_ready(&mut ws).await;
            clients.push(ws);
        }
        // Kill early, after this many deliveries (of CLIENTS * CLIENTS *
        // PER_CLIENT), while most messages are still in flight.
        let kill_after = 1 + lcg(&mut seed) % (CLIENTS * PER_CLIENT);
        let (delivered, mut deliveries) = mpsc::unbounded_channel::<()>();
        let mut tasks = Vec::new();
        for (i, mut ws) in clients.into_iter().enumerate() {
            let seen = seen.clone();
            let delivered = delivered.clone();
            tasks.push(tokio::spawn(async move {
                for j in 0..PER_CLIENT {
                    let text = format!("r{round}c{i}m{j}");
                    let msg = serde_json::json!({ "message": text }).to_string();
                    if ws.send(Message::text(msg)).await.is_err() {
                        break;
                    }
                }
                // Read until the server dies.
                while let Ok(Some(Ok(frame))) = tokio::time::timeout(PATIENCE, ws.next()).await {
                    let Message::Text(t) = frame else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                        continue;
                    };
                    if let Some(m) = chat(&v) {
                        seen.lock().await.push(m);
                        let _ = delivered.send(());
                    }
                }
            }));
        }
        drop(delivered);
        let mut count = 0;
        while count < kill_after && deliveries.recv().await.is_some() {
            count += 1;
        }
        server.start_kill().expect("SIGKILL");
        server.wait().await.expect("reaped");
        for t in tasks {
            t.await.expect("client task");
        }
    }

    // Restart and read the whole history, paging back past the last 100.
    let (mut server, addr) = start(dir.path()).await;
    let mut ws = join(
        &addr,
        "10.9.255.1",
        serde_json::json!({ "name": "auditor", "ext": ["history"] }),
    )
    .await;
    let mut history = until_ready(&mut ws).await;
    while let Some(oldest) = history.first().map(|m| m.2) {
        let req = serde_json::json!({ "history": { "before": oldest, "limit": 100 } });
        ws.send(Message::text(req.to_string())).await.expect("page");
        let page = loop {
            let frame = tokio::time::timeout(PATIENCE, ws.next())
                .await
                .expect("page in time")
                .expect("open")
                .expect("frame");
            let Message::Text(t) = frame else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("json");
            if let Some(h) = v.get("history") {
                break h.clone();
            }
        };
        let older: Vec<_> = page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(chat)
            .collect();
        let more = page["more"].as_bool().expect("more");
        history.splice(0..0, older);
        if !more {
            break;
        }
    }
    server.start_kill().expect("kill");

    assert!(
        history.windows(2).all(|w| w[0].2 < w[1].2),
        "timestamps strictly increase"
    );
    let mut texts = HashSet::new();
    for m in &history {
        assert!(texts.insert(m.1.clone()), "stored twice: {m:?}");
    }
    let stored: HashSet<_> = history.iter().cloned().collect();
    let seen = seen.lock().await;
    assert!(!seen.is_empty(), "clients saw messages");
    for m in seen.iter() {
        assert!(
            stored.contains(m),
            "a client saw {m:?}, but it is not in the history"
        );
    }
    println!(
        "{} rounds: clients saw {} deliveries of {} distinct messages; {} stored",
        ROUNDS,
        seen.len(),
        seen.iter().map(|m| &m.1).collect::<HashSet<_>>().len(),
        history.len()
    );
}
