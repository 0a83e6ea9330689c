//! chat-demo in cluster mode, end to end: a real etcd on free loopback
//! ports in a temp dir, `chat-demo cluster init`, and three chat-demo
//! processes (the built binary) as nodes of one cluster. Clients of the
//! three dialects on three different nodes share a room and see one
//! order; incomplete cluster flags are refused with status 2; a room whose
//! node left answers 503 while the others serve, and a message whose
//! sender's rate limiter was on that node is refused with the reason. A
//! node drained with `chat-demo cluster drain` hands its rooms over with
//! their history.
//!
//! Without an `etcd` binary on the PATH the test says why and returns; CI
//! installs Debian's `etcd-server`.

#![cfg(feature = "cluster")]
#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use objects::testing::etcd::Etcd;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const BIN: &str = env!("CARGO_BIN_EXE_chat-demo");
/// Every wait is for an event (a line from a child, a frame, an answer);
/// this only bounds a hang.
const HANG: Duration = Duration::from_secs(60);
/// Between two attempts of a poll (each poll is bounded by [`HANG`]).
const POLL: Duration = Duration::from_millis(50);
const NODES: [&str; 3] = ["n1", "n2", "n3"];

// ----------------------------------------------------------------- nodes

/// A chat-demo node; killed when dropped. Its log is in `log`, printed if
/// the test fails.
struct Node {
    id: &'static str,
    child: tokio::process::Child,
    /// The chat address, `host:port`.
    addr: String,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- {} log (last lines, newest first):", self.id);
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// The flags of node `id` (its certificates from `certs`, its data in
/// `dir`).
fn node_args(id: &str, etcd: &str, certs: &Path, dir: &Path) -> Vec<String> {
    let path = |p: PathBuf| p.to_str().expect("UTF-8 path").to_owned();
    let mut args = [
        "--listen",
        "127.0.0.1:0",
        "--trust-client-ip-header",
        "x-forwarded-for",
        "--data-dir",
        &path(dir.join(id)),
        "--cluster-node",
        id,
        "--cluster-etcd",
        etcd,
        "--cluster-quic",
        "127.0.0.1:0",
        "--cluster-certs",
        &path(certs.join(id)),
        // A failure-domain label: accepted and published (followers are
        // placed on other zones first).
        "--cluster-zone",
        &format!("zone-{id}"),
    ]
    .map(str::to_owned)
    .to_vec();
    // The first members; a node that joins later is not among them.
    if NODES.contains(&id) {
        args.extend(["--cluster-members".to_owned(), NODES.join(",")]);
    }
    args
}

/// Starts node `id` and reads its two lines: the chat address, then the
/// cluster's (it serves its shards).
async fn start_node(id: &'static str, etcd: &str, certs: &Path, dir: &Path) -> Node {
    start_node_with(id, etcd, certs, dir, &[]).await.0
}

/// The admin token of nodes started with an admin listener.
const TOKEN: &str = "operator-secret";

/// `chat-demo cluster init` in `dir`, then n1, n2 and n3 with `extra(id)`
/// flags, each ready; with an admin listener, its address too.
async fn three_nodes(
    etcd: &Etcd,
    dir: &Path,
    extra: impl Fn(&str) -> Vec<&'static str>,
) -> Vec<(Node, Option<String>)> {
    let certs = dir.join("certs");
    let certs_arg = certs.to_str().expect("UTF-8");
    let (code, _, stderr) = run(&["cluster", "init", certs_arg, "--nodes", "n1,n2,n3"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let mut nodes = Vec::new();
    for id in NODES {
        nodes.push(start_node_with(id, etcd.url(), &certs, dir, &extra(id)).await);
    }
    for (node, _) in &nodes {
        wait_ready(&node.addr).await;
    }
    nodes
}

async fn start_node_with(
    id: &'static str,
    etcd: &str,
    certs: &Path,
    dir: &Path,
    extra: &[&str],
) -> (Node, Option<String>) {
    let log = dir.join(format!("{id}.log"));
    let mut child = tokio::process::Command::new(BIN)
        .args(node_args(id, etcd, certs, dir))
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("NODE_LOG").unwrap_or("warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chat-demo");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = async || {
        tokio::time::timeout(HANG, lines.next_line())
            .await
            .expect("a line in time")
            .expect("read stdout")
            .unwrap_or_else(|| panic!("{id} exited before it served"))
    };
    let first = next().await;
    let addr = first
        .strip_prefix("chat-demo listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_owned();
    let second = next().await;
    assert!(
        second.starts_with(&format!("chat-demo cluster node {id} (quic on 127.0.0.1:")),
        "{second}"
    );
    let admin = if extra.contains(&"--admin-listen") {
        let line = next().await;
        let addr = line
            .strip_prefix("chat-demo admin on http://")
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected admin line: {line}"));
        Some(addr.to_owned())
    } else {
        None
    };
    // Keep reading, so a later line never finds the pipe closed.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let node = Node {
        id,
        child,
        addr,
        log,
    };
    (node, admin)
}

// --------------------------------------------------------------- clients

static NEXT_IP: AtomicU32 = AtomicU32::new(1);

/// A fresh client IP, so no per-IP budget is shared between clients.
fn next_ip() -> String {
    let [_, b, c, d] = NEXT_IP.fetch_add(1, Ordering::SeqCst).to_be_bytes();
    format!("10.{b}.{c}.{d}")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `url`; while the room's node is not serving it yet (the
/// cluster is still claiming its shards) the upgrade answers 503, and this
/// tries again, until [`HANG`].
async fn connect(url: &str) -> Ws {
    let poll = async {
        loop {
            let mut req = url.into_client_request().expect("request");
            req.headers_mut()
                .insert("x-forwarded-for", next_ip().parse().expect("header"));
            match tokio_tungstenite::connect_async(req).await {
                Ok((ws, _)) => return ws,
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) if resp.status() == 503 => {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => panic!("connect {url}: {e}"),
            }
        }
    };
    tokio::time::timeout(HANG, poll)
        .await
        .unwrap_or_else(|_| panic!("{url} still unavailable after {HANG:?}"))
}

/// The next text frame (pings and pongs skipped).
async fn text(ws: &mut Ws) -> String {
    let next = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(HANG, next)
        .await
        .expect("a frame in time")
}

async fn send(ws: &mut Ws, text: String) {
    tokio::time::timeout(HANG, ws.send(Message::text(text)))
        .await
        .expect("sent in time")
        .expect("send");
}

/// The chat message a frame carries, if it is one: dialects A and C send
/// JSON with `message` and `timestamp` (notices have no timestamp);
/// dialect B sends `name: message`, or the message alone from a B client.
fn chat_message(frame: &str, expected: &[String]) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<Value>(frame) {
        return match (&v["message"], &v["timestamp"]) {
            (Value::String(m), Value::Number(_)) => Some(m.clone()),
            _ => None,
        };
    }
    expected
        .iter()
        .find(|m| frame == m.as_str() || frame.ends_with(&format!(": {m}")))
        .cloned()
}

/// Reads `ws` until it has seen `expected.len()` chat messages; returns
/// them in the order they came.
async fn messages(ws: &mut Ws, expected: &[String]) -> Vec<String> {
    let read = async {
        let mut seen = Vec::new();
        while seen.len() < expected.len() {
            let frame = text(ws).await;
            if let Some(m) = chat_message(&frame, expected) {
                seen.push(m);
            }
        }
        seen
    };
    tokio::time::timeout(HANG, read)
        .await
        .unwrap_or_else(|_| panic!("not every message of {expected:?} in time"))
}

/// An upgrade sent by hand to `addr`: the status and the body.
async fn upgrade(addr: &str, path: &str) -> (u16, String) {
    let headers = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    request(addr, path, headers).await
}

/// Polls `/readyz` on `addr` until it answers 200 (bounded by [`HANG`]).
async fn wait_ready(addr: &str) {
    let poll = async {
        loop {
            match request(addr, "/readyz", "Connection: close\r\n").await {
                (200, _) => return,
                (503, _) => tokio::time::sleep(POLL).await,
                other => panic!("/readyz on {addr}: {other:?}"),
            }
        }
    };
    tokio::time::timeout(HANG, poll)
        .await
        .unwrap_or_else(|_| panic!("{addr} not ready after {HANG:?}"));
}

/// A GET sent by hand to `addr` with `headers` (each ending in CRLF): the
/// status and the body.
async fn request(addr: &str, path: &str, headers: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}X-Forwarded-For: {}\r\n\r\n",
        next_ip()
    );
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(HANG, tcp.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let status: u16 = head[9..12].parse().expect("status");
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if status == 101 || body.len() >= length {
                return (status, body.to_owned());
            }
        }
        assert!(n > 0, "connection closed mid-answer: {text}");
    }
}

/// Stops `node` with SIGTERM; it must exit cleanly, in time.
async fn terminate(mut node: Node) {
    let pid = node.child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(HANG, node.child.wait())
        .await
        .expect("the node exits in time")
        .expect("wait");
    assert!(exit.success(), "{}: {exit}", node.id);
}

/// Runs the binary to completion with `args`: status, stdout, stderr.
async fn run(args: &[&str]) -> (Option<i32>, String, String) {
    common::run_binary(args, HANG).await
}

// ----------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_dialects_on_three_nodes_share_a_room_in_one_order() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let certs_arg = certs.to_str().expect("UTF-8");

    // The certificates: a CA and a dir per node, keys private.
    let (code, stdout, stderr) = run(&["cluster", "init", certs_arg, "--nodes", "n1,n2,n3"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("n1, n2, n3"), "{stdout}");
    for key in ["ca.key", "n1/node.key", "n2/node.key", "n3/node.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.join(key))
            .expect(key)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    // A second init would replace the CA the nodes trust: refused.
    let (code, _, stderr) = run(&["cluster", "init", certs_arg, "--nodes", "n4"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("already holds a cluster CA"), "{stderr}");

    // Incomplete or wrong cluster flags: status 2, nothing started.
    let data = dir.path().join("refused");
    let data = data.to_str().expect("UTF-8");
    let base = ["--listen", "127.0.0.1:0", "--data-dir", data];
    let n2 = certs.join("n2");
    let n2 = n2.to_str().expect("UTF-8");
    // Every flag a node needs, as node `node` with n2's certificates.
    let complete = |node: &'static str| -> Vec<&str> {
        vec![
            "--cluster-node",
            node,
            "--cluster-etcd",
            etcd.url(),
            "--cluster-quic",
            "127.0.0.1:0",
            "--cluster-certs",
            n2,
        ]
    };
    for (extra, reason) in [
        (
            vec!["--cluster-node", "n1"],
            "the following required arguments were not provided",
        ),
        (
            vec!["--cluster-etcd", etcd.url()],
            "the following required arguments were not provided",
        ),
        (
            complete("n1"),
            "these certificates are for node n2, not --cluster-node n1",
        ),
        (
            [complete("n2"), vec!["--cluster-zone", "Rack A"]].concat(),
            "--cluster-zone \"Rack A\": use 1 to 32 of a-z, 0-9 and -",
        ),
        (
            complete("N2"),
            "--cluster-node \"N2\": use 1 to 32 of a-z, 0-9 and -",
        ),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra).collect();
        let (code, stdout, stderr) = run(&args).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
        assert!(!Path::new(data).exists(), "{args:?} created the data dir");
    }

    // Three nodes, each ready: it knows an owner for every shard (until
    // every node has claimed its shards and this one has read the claims,
    // a room or rate limiter elsewhere would be "unavailable") and its
    // own storage commits.
    let mut nodes = Vec::new();
    for id in NODES {
        nodes.push(start_node(id, etcd.url(), &certs, dir.path()).await);
    }
    for node in &nodes {
        wait_ready(&node.addr).await;
    }

    // One room, a client of each dialect, each on another node.
    let room = "lobby";
    let mut alice = connect(&format!("ws://{}/api/room/{room}/websocket", nodes[0].addr)).await;
    send(&mut alice, json!({ "name": "alice" }).to_string()).await;
    let ready = async { while text(&mut alice).await != r#"{"ready":true}"# {} };
    tokio::time::timeout(HANG, ready)
        .await
        .expect("alice is ready in time");
    let mut bee = connect(&format!("ws://{}/room/{room}/websocket", nodes[1].addr)).await;
    let mut cat = connect(&format!("ws://{}/ws?room={room}&name=cat", nodes[2].addr)).await;

    // Three messages each, interleaved across the nodes.
    let mut expected = Vec::new();
    for i in 0..3 {
        for (who, ws) in [("a", &mut alice), ("b", &mut bee), ("c", &mut cat)] {
            let message = format!("{who}{i}");
            let frame = if who == "b" {
                message.clone()
            } else {
                json!({ "message": message }).to_string()
            };
            send(ws, frame).await;
            expected.push(message);
        }
    }
    let at_alice = messages(&mut alice, &expected).await;
    let at_bee = messages(&mut bee, &expected).await;
    // Dialect C does not echo a sender's own messages.
    let others: Vec<String> = expected
        .iter()
        .filter(|m| !m.starts_with('c'))
        .cloned()
        .collect();
    let at_cat = messages(&mut cat, &others).await;
    let mut sorted = at_alice.clone();
    sorted.sort();
    let mut all = expected.clone();
    all.sort();
    assert_eq!(sorted, all, "every message, once: {at_alice:?}");
    assert_eq!(at_bee, at_alice, "B on n2 sees A's order (on n1)");
    let not_cat: Vec<String> = at_alice
        .iter()
        .filter(|m| !m.starts_with('c'))
        .cloned()
        .collect();
    assert_eq!(
        at_cat, not_cat,
        "C on n3 sees A's order (on n1), without its own"
    );
    for who in ["a", "b", "c"] {
        let own: Vec<&String> = at_alice.iter().filter(|m| m.starts_with(who)).collect();
        assert_eq!(
            own,
            [&format!("{who}0"), &format!("{who}1"), &format!("{who}2")]
        );
    }
    drop((alice, bee, cat));

    // A node that joins later, with certificates issued then from the same
    // CA, is a front door at once (it owns no shard): its client and one
    // on n1 chat in the same room.
    let (code, _, stderr) = run(&["cluster", "issue", certs_arg, "--nodes", "n4"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let n4 = start_node("n4", etcd.url(), &certs, dir.path()).await;
    wait_ready(&n4.addr).await;
    let mut dee = connect(&format!("ws://{}/api/room/{room}/websocket", n4.addr)).await;
    let mut ann = connect(&format!("ws://{}/api/room/{room}/websocket", nodes[0].addr)).await;
    for (ws, name) in [(&mut dee, "dee"), (&mut ann, "ann")] {
        send(ws, json!({ "name": name }).to_string()).await;
        let ready = async { while text(ws).await != r#"{"ready":true}"# {} };
        tokio::time::timeout(HANG, ready)
            .await
            .expect("ready in time");
    }
    send(&mut dee, json!({ "message": "d0" }).to_string()).await;
    let late = vec!["d0".to_string()];
    assert_eq!(messages(&mut ann, &late).await, late, "n4's message on n1");
    assert_eq!(messages(&mut dee, &late).await, late, "and its echo on n4");
    drop((dee, ann, n4));

    // n3 stops (SIGTERM): it leaves the cluster and exits cleanly.
    terminate(nodes.pop().expect("n3")).await;

    // Rooms on n3 now answer 503 with the reason, on n1; the others still
    // take sockets. Polled until n1 has noticed n3 left.
    let rooms: Vec<String> = (0..64).map(|i| format!("r{i}")).collect();
    let poll = async {
        loop {
            let mut answers = Vec::new();
            for room in &rooms {
                let path = format!("/api/room/{room}/websocket");
                answers.push(upgrade(&nodes[0].addr, &path).await);
            }
            if answers.iter().any(|(status, _)| *status == 503) {
                return answers;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    let answers = tokio::time::timeout(HANG, poll)
        .await
        .expect("n1 notices that n3 left");
    for (room, (status, body)) in rooms.iter().zip(&answers) {
        match status {
            101 => {}
            503 => assert_eq!(body, chat_demo::ROOM_UNAVAILABLE, "{room}"),
            other => panic!("{room}: {other} {body}"),
        }
    }
    let (live_room, _) = rooms
        .iter()
        .zip(&answers)
        .find(|(_, (status, _))| *status == 101)
        .expect("rooms on n1 and n2 still serve");

    // In a room that serves, a client whose IP's rate limiter lives on n3
    // is refused with the reason (the limit fails closed); the others
    // chat. Each client is another IP, so about a third of them land there.
    let url = format!("ws://{}/api/room/{live_room}/websocket", nodes[0].addr);
    let (mut refused, mut chatted) = (0, 0);
    for i in 0..100 {
        if refused > 0 && chatted > 0 {
            break;
        }
        let mut ws = connect(&url).await;
        let name = format!("u{i}");
        send(&mut ws, json!({ "name": name }).to_string()).await;
        send(&mut ws, json!({ "message": "hello" }).to_string()).await;
        let outcome = async {
            loop {
                let frame: Value = serde_json::from_str(&text(&mut ws).await).expect("JSON");
                if let Some(error) = frame["error"].as_str() {
                    return Err(error.to_owned());
                }
                if frame["name"] == name.as_str() && frame["message"] == "hello" {
                    return Ok(());
                }
            }
        };
        match tokio::time::timeout(HANG, outcome)
            .await
            .expect("an answer in time")
        {
            Ok(()) => chatted += 1,
            Err(error) => {
                assert_eq!(
                    error,
                    "The rate limiter for your IP is not available right now; please try again shortly."
                );
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0 && chatted > 0,
        "refused {refused}, chatted {chatted}"
    );
}

/// Joins `room` on `addr` as `name` (dialect A) and returns the socket and
/// the chat messages it was sent before `ready` (the room's history).
async fn join(addr: &str, room: &str, name: &str) -> (Ws, Vec<String>) {
    let mut ws = connect(&format!("ws://{addr}/api/room/{room}/websocket")).await;
    send(&mut ws, json!({ "name": name }).to_string()).await;
    let mut history = Vec::new();
    let read = async {
        loop {
            let frame = text(&mut ws).await;
            if frame == r#"{"ready":true}"# {
                return;
            }
            if let Some(m) = chat_message(&frame, &[]) {
                history.push(m);
            }
        }
    };
    tokio::time::timeout(HANG, read)
        .await
        .expect("ready in time");
    (ws, history)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_its_rooms_over_with_their_history() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = |_: &str| vec!["--admin-listen", "127.0.0.1:0", "--admin-token", TOKEN];
    let (mut nodes, admins): (Vec<Node>, Vec<String>) = three_nodes(&etcd, dir.path(), admin)
        .await
        .into_iter()
        .map(|(node, admin)| (node, admin.expect("the admin line")))
        .unzip();
    // 24 rooms (about a third of them on n3: none there has a chance of
    // (2/3)^24, under 1 in 10,000), three messages each,
    // every one seen by its sender.
    let rooms: Vec<String> = (0..24).map(|i| format!("drain{i}")).collect();
    // Each room has a member through each node (ann on n1, cy on n2, di
    // on n3): when a room moves, one of them is the old owner's own
    // client, one may be the new owner's, one another node's.
    let mut anns = Vec::new();
    let mut others = Vec::new();
    for room in &rooms {
        let (mut ws, _) = join(&nodes[0].addr, room, "ann").await;
        let sent: Vec<String> = (0..3).map(|i| format!("{room}-m{i}")).collect();
        for m in &sent {
            send(&mut ws, json!({ "message": m }).to_string()).await;
        }
        assert_eq!(messages(&mut ws, &sent).await, sent);
        anns.push(ws);
        let (cy, history) = join(&nodes[1].addr, room, "cy").await;
        assert_eq!(history, sent);
        let (di, history) = join(&nodes[2].addr, room, "di").await;
        assert_eq!(history, sent);
        others.push([cy, di]);
    }
    // A wrong token is refused and moves nothing.
    let n3_admin = admins[2].as_str();
    let (code, stdout, stderr) = run(&[
        "cluster",
        "drain",
        "--admin",
        n3_admin,
        "--admin-token",
        "wrong",
    ])
    .await;
    assert_eq!(code, Some(1), "{stdout} {stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    // A fourth node joins (it owns nothing until shards move to it).
    let certs = dir.path().join("certs");
    let certs_arg = certs.to_str().expect("UTF-8");
    let (code, _, stderr) = run(&["cluster", "issue", certs_arg, "--nodes", "n4"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let n4 = start_node("n4", etcd.url(), &certs, dir.path()).await;
    wait_ready(&n4.addr).await;
    // Until n3 has drained, every room keeps hearing messages: each from
    // a newcomer through n1 (a fresh client, so no rate limit stops it),
    // sent once the one before was echoed.
    let drained = Arc::new(AtomicBool::new(false));
    let talkers: Vec<_> = rooms
        .iter()
        .map(|room| {
            let (room, drained, n1) = (room.clone(), drained.clone(), nodes[0].addr.clone());
            tokio::spawn(async move {
                let mut said = Vec::new();
                for k in 0..40 {
                    if k > 0 && drained.load(Ordering::SeqCst) {
                        break;
                    }
                    let (mut ws, _) = join(&n1, &room, &format!("eve{k}")).await;
                    let m = vec![format!("{room}-d{k}")];
                    send(&mut ws, json!({ "message": m[0] }).to_string()).await;
                    assert_eq!(messages(&mut ws, &m).await, m, "{room}");
                    said.extend(m);
                }
                said
            })
        })
        .collect();
    // Meanwhile n3 drains (each of its shards goes to n1, n2 or n4) and
    // n1 rebalances (the shards rendezvous hashing now gives n4 go there).
    let drain_args = [
        "cluster",
        "drain",
        "--admin",
        n3_admin,
        "--admin-token",
        TOKEN,
    ];
    let rebalance_args = [
        "cluster",
        "rebalance",
        "--admin",
        &admins[0],
        "--admin-token",
        TOKEN,
    ];
    let (drain, rebalance) = tokio::join!(run(&drain_args), run(&rebalance_args));
    let (code, drained_out, stderr) = drain;
    assert_eq!(code, Some(0), "{drained_out} {stderr}");
    assert!(drained_out.contains("shards moved"), "{drained_out}");
    let (code, rebalanced_out, stderr) = rebalance;
    assert_eq!(code, Some(0), "{rebalanced_out} {stderr}");
    // (Each of n3's and n1's shards may go to n4: none going is under one
    // chance in a million.)
    assert!(
        format!("{drained_out}{rebalanced_out}").contains(" to n4 "),
        "{drained_out}{rebalanced_out}"
    );
    drained.store(true, Ordering::SeqCst);
    let mut saids = Vec::new();
    for ((talker, members), ann) in talkers.into_iter().zip(&mut others).zip(&mut anns) {
        let said = talker.await.expect("talker");
        // The sockets stayed open through the move, and every message
        // reached every member once, in order.
        for ws in members.iter_mut().chain([ann]) {
            assert_eq!(messages(ws, &said).await, said);
        }
        saids.push(said);
    }
    // n3's metrics count the moves.
    let auth = format!("Authorization: Bearer {TOKEN}\r\nConnection: close\r\n");
    let (status, metrics) = request(n3_admin, "/metrics", &auth).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("objects_shard_handoffs_total{outcome=\"moved\"}"),
        "{metrics}"
    );
    // Rebalancing from n1 afterwards moves nothing to the draining n3.
    let (code, stdout, stderr) = run(&rebalance_args).await;
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    assert!(!stdout.contains(" to n3 "), "{stdout}");
    // Every room keeps its history and takes new messages, through every
    // node, n3 included (a front door now).
    for (i, room) in rooms.iter().enumerate() {
        let via = &nodes[i % 3].addr;
        let (mut ws, history) = join(via, room, "bo").await;
        let sent: Vec<String> = (0..3)
            .map(|i| format!("{room}-m{i}"))
            .chain(saids[i].iter().cloned())
            .collect();
        assert_eq!(history, sent, "{room} through {via}");
        let after = vec![format!("{room}-after")];
        send(&mut ws, json!({ "message": after[0] }).to_string()).await;
        assert_eq!(messages(&mut ws, &after).await, after, "{room}");
        // The members from before the move hear it, and are heard.
        let [cy, di] = &mut others[i];
        for member in [&mut anns[i], cy, di] {
            assert_eq!(messages(member, &after).await, after, "{room}");
        }
        let late = vec![format!("{room}-late")];
        send(di, json!({ "message": late[0] }).to_string()).await;
        for member in [&mut ws, &mut anns[i], cy, di] {
            assert_eq!(messages(member, &late).await, late, "{room}");
        }
    }
    // A drained node serves no room: with n3 stopped, every room still
    // takes sockets (once n1 has read the new owners from etcd: until
    // then, an upgrade it sends to n3 gets 503 and `connect` retries).
    let mut n3 = nodes.pop().expect("n3");
    n3.child.kill().await.expect("kill n3");
    drop((anns, others));
    for room in &rooms {
        connect(&format!("ws://{}/api/room/{room}/websocket", nodes[0].addr)).await;
    }
    drop(n4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_drain_on_stop_leaves_its_rooms_available() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Only n3 drains when it stops.
    let extra = |id: &str| match id {
        "n3" => vec!["--cluster-drain-on-stop"],
        _ => Vec::new(),
    };
    let mut nodes: Vec<Node> = three_nodes(&etcd, dir.path(), extra)
        .await
        .into_iter()
        .map(|(node, _)| node)
        .collect();
    // 24 rooms with a message each (about a third of them on n3).
    let rooms: Vec<String> = (0..24).map(|i| format!("stop{i}")).collect();
    for room in &rooms {
        let (mut ws, _) = join(&nodes[0].addr, room, "ann").await;
        let sent = vec![format!("{room}-m")];
        send(&mut ws, json!({ "message": sent[0] }).to_string()).await;
        assert_eq!(messages(&mut ws, &sent).await, sent);
    }
    // SIGTERM n3: it hands its rooms over, then stops cleanly.
    terminate(nodes.pop().expect("n3")).await;
    // Every room is still there, with its message, while n3 is down (a
    // room left on n3 would answer 503 until it returned, and `connect`
    // would give up).
    for room in &rooms {
        let (_ws, history) = join(&nodes[1].addr, room, "bo").await;
        assert_eq!(history, [format!("{room}-m")], "{room}");
    }
}

/// Polls `GET /cluster/status` on `admin` until every shard the node
/// leads has `n` followers (bounded by [`HANG`]).
async fn replicated(admin: &str, n: usize) {
    let auth = format!("Authorization: Bearer {TOKEN}\r\nConnection: close\r\n");
    let poll = async {
        loop {
            let (status, body) = request(admin, "/cluster/status", &auth).await;
            assert_eq!(status, 200, "{body}");
            let leading: Vec<&str> = body.lines().filter(|l| l.starts_with("leading ")).collect();
            let full = leading.iter().all(|l| {
                l.split_once(" followers")
                    .is_some_and(|(_, f)| f.split_whitespace().count() == n)
            });
            if !leading.is_empty() && full {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(HANG, poll)
        .await
        .unwrap_or_else(|_| panic!("{admin}: shards without {n} followers after {HANG:?}"));
}

/// A member (joined with `seen` as its history) that says up to `count`
/// messages in `room`, each once the one before was echoed or refused,
/// and records every chat message its socket carried. Once `over` says
/// the failover is over (a message in flight when its room's node died
/// may never be echoed: the member stops waiting for it), it says one more
/// and waits for its echo, saying it again (numbered) after a refusal (a
/// node may still reach the lost node for a moment, and the room fails
/// closed when it cannot ask the sender's rate limiter). Returns why it
/// was cut short, if it was: its socket closed, or no echo came.
async fn talker(
    (mut ws, mut seen): (Ws, Vec<String>),
    room: String,
    name: String,
    count: usize,
    echoed: Arc<AtomicU32>,
    mut over: tokio::sync::watch::Receiver<bool>,
) -> (Vec<String>, Option<String>) {
    // Sends `mine`; then every chat message read is recorded, until its
    // echo (`Ok(true)`), a refusal or `over` (`Ok(false)`), or the end of
    // the socket or `HANG` without a frame (`Err`).
    async fn say(
        ws: &mut Ws,
        seen: &mut Vec<String>,
        mine: &str,
        over: Option<&mut tokio::sync::watch::Receiver<bool>>,
    ) -> Result<bool, String> {
        ws.send(Message::text(json!({ "message": mine }).to_string()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        let ended = async {
            match over {
                Some(o) => drop(o.wait_for(|o| *o).await),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(ended);
        loop {
            let frame = tokio::select! {
                f = tokio::time::timeout(HANG, ws.next()) => f,
                () = &mut ended => return Ok(false),
            };
            let frame = match frame {
                Ok(Some(Ok(Message::Text(t)))) => t.as_str().to_owned(),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => return Err(format!("{other:?}")),
            };
            if frame.contains("\"error\"") {
                return Ok(false);
            }
            if let Some(m) = chat_message(&frame, &[]) {
                let done = m == mine;
                seen.push(m);
                if done {
                    return Ok(true);
                }
            }
        }
    }
    for k in 0..count {
        if *over.borrow() {
            break;
        }
        match say(
            &mut ws,
            &mut seen,
            &format!("{room}-{name}-{k}"),
            Some(&mut over),
        )
        .await
        {
            Ok(true) => drop(echoed.fetch_add(1, Ordering::SeqCst)),
            Ok(false) => {}
            Err(why) => return (seen, Some(why)),
        }
    }
    let _ = over.wait_for(|o| *o).await;
    let last = async {
        for k in 0.. {
            match say(&mut ws, &mut seen, &format!("{room}-{name}-after{k}"), None).await {
                Ok(true) => return None,
                Ok(false) => tokio::time::sleep(POLL).await,
                Err(why) => return Some(why),
            }
        }
        None
    };
    let cut = tokio::time::timeout(HANG, last)
        .await
        .unwrap_or_else(|_| Some(format!("no echo in {HANG:?}")));
    (seen, cut)
}

/// Waits until each node of `admins` (their admin listeners) sees every
/// shard owned, none by `lost`.
async fn failed_over(admins: &[String], lost: &str) {
    let auth = format!("Authorization: Bearer {TOKEN}\r\nConnection: close\r\n");
    let poll = async {
        loop {
            let mut done = true;
            for admin in admins {
                let (status, body) = request(admin, "/cluster/status", &auth).await;
                assert_eq!(status, 200, "{body}");
                let owners = body
                    .lines()
                    .find_map(|l| l.strip_prefix("owners "))
                    .unwrap_or_else(|| panic!("no owners line: {body}"));
                done &= owners.split_whitespace().all(|o| o != "-" && o != lost);
            }
            if done {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(HANG, poll)
        .await
        .unwrap_or_else(|_| panic!("shards still {lost}'s after {HANG:?}"));
}

/// Joins `room` through `addr` and returns its history as (message,
/// timestamp) pairs.
async fn stamped_history(addr: &str, room: &str) -> Vec<(String, u64)> {
    let mut ws = connect(&format!("ws://{addr}/api/room/{room}/websocket")).await;
    send(&mut ws, json!({ "name": "auditor" }).to_string()).await;
    let mut out = Vec::new();
    loop {
        let frame = text(&mut ws).await;
        if frame == r#"{"ready":true}"# {
            return out;
        }
        let v: Value = serde_json::from_str(&frame).expect("JSON");
        if let (Value::String(m), Some(t)) = (&v["message"], v["timestamp"].as_u64()) {
            out.push((m.clone(), t));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_room_primary_loses_nothing_any_client_saw() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = |_: &str| {
        vec![
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-token",
            TOKEN,
            "--cluster-replicas",
            "1",
        ]
    };
    let (mut nodes, admins): (Vec<Node>, Vec<String>) = three_nodes(&etcd, dir.path(), flags)
        .await
        .into_iter()
        .map(|(node, admin)| (node, admin.expect("the admin line")))
        .unzip();
    for admin in &admins {
        replicated(admin, 1).await;
    }
    // 24 rooms (about a third on n3: none there has a chance under 1 in
    // 10,000), each with a member through every node, all talking.
    let rooms: Vec<String> = (0..24).map(|i| format!("fail{i}")).collect();
    let echoed = Arc::new(AtomicU32::new(0));
    let mut members = Vec::new();
    for room in &rooms {
        for (node, who) in nodes.iter().zip(["ann", "cy", "di"]) {
            members.push((join(&node.addr, room, who).await, room.clone(), who));
        }
    }
    let (over_tx, over) = tokio::sync::watch::channel(false);
    let talkers: Vec<_> = members
        .into_iter()
        .map(|(joined, room, who)| {
            let (echoed, over) = (echoed.clone(), over.clone());
            tokio::spawn(talker(joined, room, who.to_owned(), 5, echoed, over))
        })
        .collect();
    // n3 is killed (SIGKILL) in the middle of the burst.
    let poll = async {
        while echoed.load(Ordering::SeqCst) < 60 {
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(HANG, poll).await.expect("a burst");
    let mut n3 = nodes.pop().expect("n3");
    n3.child.kill().await.expect("kill n3");
    // Once n1 and n2 see every shard owned by one of them, each member
    // still connected says one more message.
    failed_over(&admins[..2], "n3").await;
    over_tx.send_replace(true);
    let mut seen: Vec<Vec<String>> = vec![Vec::new(); rooms.len()];
    let mut cut_elsewhere = Vec::new();
    for (i, t) in talkers.into_iter().enumerate() {
        let (said, cut) = t.await.expect("talker");
        seen[i / 3].extend(said);
        // Members on n1 and n2 keep their sockets, whichever node their
        // room was on: those whose room was on n3 are adopted by its
        // follower, name and all, and are heard there.
        if let Some(why) = cut
            && i % 3 != 2
        {
            cut_elsewhere.push((&rooms[i / 3], why));
        }
    }
    assert!(
        cut_elsewhere.is_empty(),
        "members on n1 or n2 cut: {cut_elsewhere:?}"
    );
    // Every room is served again (its follower took over where n3 led),
    // and its history holds every message any member saw, once, with
    // timestamps strictly increasing.
    for (room, seen) in rooms.iter().zip(&seen) {
        let history = stamped_history(&nodes[0].addr, room).await;
        let said: Vec<&String> = history.iter().map(|(m, _)| m).collect();
        for m in seen {
            assert!(said.contains(&m), "{room}: {m} was seen, then lost");
        }
        let unique: std::collections::HashSet<&String> = said.iter().copied().collect();
        assert_eq!(unique.len(), said.len(), "{room}: a duplicate");
        assert!(
            history.windows(2).all(|w| w[0].1 < w[1].1),
            "{room}: timestamps out of order: {history:?}"
        );
        // And it takes new messages.
        let (mut ws, _) = join(&nodes[1].addr, room, "bo").await;
        let after = vec![format!("{room}-after")];
        send(&mut ws, json!({ "message": after[0] }).to_string()).await;
        assert_eq!(messages(&mut ws, &after).await, after, "{room}");
    }
    drop(n3);
}
