//! The operator's flags of `chat-demo serve`, run as the real binary:
//! `--log-format` and `--admin-token-file` refuse bad values with a clear
//! error and exit code 2 before anything starts, and do what they say with
//! good ones; `/healthz` and `/readyz` answer on the chat address. The JSON
//! log test reads every line the server wrote during a chat and a
//! shutdown.

#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

const PATIENCE: Duration = Duration::from_secs(20);
const BIN: &str = env!("CARGO_BIN_EXE_chat-demo");

/// Runs the binary to completion with `args`: status, stdout, stderr.
async fn run(args: &[&str]) -> (Option<i32>, String, String) {
    common::run_binary(args, PATIENCE).await
}

/// A refused start: exit code 2, the reason on stderr, nothing on stdout
/// (no "listening" line), and no data dir created.
async fn refused(dir: &Path, args: &[&str], reason: &str) {
    let data = dir.join("data");
    let data = data.to_str().expect("UTF-8 path");
    let mut all = vec!["--listen", "127.0.0.1:0", "--data-dir", data];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run(&all).await;
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(reason),
        "{args:?}: expected {reason:?} in {stderr}"
    );
    assert_eq!(stdout, "", "{args:?}");
    assert!(!dir.join("data").exists(), "{args:?} created the data dir");
}

#[tokio::test]
async fn bad_log_formats_and_token_files_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    refused(
        dir.path(),
        &["--log-format", "xml"],
        "invalid value 'xml' for '--log-format <LOG_FORMAT>'",
    )
    .await;
    let missing = dir.path().join("no-such-token");
    let missing = missing.to_str().expect("UTF-8");
    refused(
        dir.path(),
        &["--admin-token-file", missing],
        "for '--admin-token-file <PATH>': cannot read it: No such file",
    )
    .await;
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").expect("write");
    let empty = empty.to_str().expect("UTF-8");
    refused(dir.path(), &["--admin-token-file", empty], "it is empty").await;
    let spaced = dir.path().join("spaced-token");
    std::fs::write(&spaced, "two words\n").expect("write");
    let spaced = spaced.to_str().expect("UTF-8");
    refused(
        dir.path(),
        &["--admin-token-file", spaced],
        "holds spaces or characters other than visible ASCII",
    )
    .await;
    let good = dir.path().join("good-token");
    std::fs::write(&good, "s3cret\n").expect("write");
    let good = good.to_str().expect("UTF-8");
    refused(
        dir.path(),
        &["--admin-token", "x", "--admin-token-file", good],
        "the argument '--admin-token <ADMIN_TOKEN>' cannot be used with '--admin-token-file <PATH>'",
    )
    .await;
}

#[tokio::test]
async fn timeouts_must_be_whole_seconds_of_at_least_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    for flag in [
        "--http-header-timeout-secs",
        "--http-keepalive-timeout-secs",
        "--shutdown-sockets-timeout-secs",
        "--shutdown-http-timeout-secs",
        "--shutdown-runtime-timeout-secs",
    ] {
        refused(
            dir.path(),
            &[flag, "0"],
            &format!("invalid value '0' for '{flag} <"),
        )
        .await;
        refused(
            dir.path(),
            &[flag, "soon"],
            &format!("invalid value 'soon' for '{flag} <"),
        )
        .await;
    }
}

/// A running `chat-demo`, its addresses, and its stderr.
struct Server {
    child: Child,
    addr: String,
    admin: Option<String>,
}

async fn start(dir: &Path, args: &[&str], rust_log: &str) -> Server {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = async || {
        tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("prints in time")
            .expect("read stdout")
            .expect("a line")
    };
    let first = next().await;
    let addr = first
        .strip_prefix("chat-demo listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_owned();
    let admin = if args.contains(&"--admin-listen") {
        let second = next().await;
        let rest = second
            .strip_prefix("chat-demo admin on http://")
            .unwrap_or_else(|| panic!("unexpected second line: {second}"));
        Some(rest.split(' ').next().expect("address").to_owned())
    } else {
        None
    };
    // Keep reading: the server prints more lines, and a closed pipe would
    // fail its prints.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server { child, addr, admin }
}

impl Server {
    /// SIGTERM, then the exit status and everything written to stderr.
    async fn stop(mut self) -> String {
        let mut stderr = self.child.stderr.take().expect("stderr");
        let pid = self.child.id().expect("pid").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let mut text = String::new();
        tokio::time::timeout(PATIENCE, stderr.read_to_string(&mut text))
            .await
            .expect("stderr closes in time")
            .expect("read stderr");
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("exits in time")
            .expect("wait");
        assert!(status.success(), "{status}: {text}");
        text
    }
}

/// One HTTP/1.1 request; the status code and the body.
async fn http(addr: &str, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n{headers}Connection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("request");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.expect("answer");
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {answer}"));
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_token_file_guards_the_admin_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-from-file\n").expect("write");
    let data = dir.path().join("data");
    let server = start(
        &data,
        &[
            "--admin-listen",
            "127.0.0.1:0",
            "--inspector",
            "--admin-token-file",
            token.to_str().expect("UTF-8"),
        ],
        "error",
    )
    .await;
    let admin = server.admin.clone().expect("admin address");
    assert_eq!(http(&admin, "GET", "/metrics", "").await.0, 401);
    let wrong = "Authorization: Bearer s3cret\r\n";
    assert_eq!(http(&admin, "GET", "/metrics", wrong).await.0, 401);
    let right = "Authorization: Bearer s3cret-from-file\r\n";
    assert_eq!(http(&admin, "GET", "/metrics", right).await.0, 200);
    // The health routes are on the chat address, without a token.
    assert_eq!(
        http(&server.addr, "GET", "/healthz", "").await,
        (200, "ok".into())
    );
    assert_eq!(
        http(&server.addr, "GET", "/readyz", "").await,
        (200, "ready".into())
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line_with_the_object_spans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &["--log-format", "json"], "debug").await;
    let (status, private) = http(&server.addr, "POST", "/api/room", "").await;
    assert_eq!(status, 200);
    let private = private.trim().to_owned();
    assert_eq!(private.len(), 64);

    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/api/room/{private}/websocket",
        server.addr
    ))
    .await
    .expect("connect");
    ws.send(Message::text(r#"{"name":"alice"}"#))
        .await
        .expect("hello");
    ws.send(Message::text(r#"{"message":"hi"}"#))
        .await
        .expect("message");
    tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains(r#""message":"hi""#) => break,
                Some(Ok(_)) => {}
                other => panic!("socket ended before the echo: {other:?}"),
            }
        }
    })
    .await
    .expect("echo in time");
    let _ = ws.close(None).await;
    let logs = server.stop().await;

    let mut lines = 0;
    let mut object_spans = 0;
    for line in logs.lines() {
        lines += 1;
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target"] {
            assert!(v[key].is_string(), "no {key} in {line}");
        }
        assert!(v["fields"]["message"].is_string(), "no message in {line}");
        let spans = v["spans"].as_array().map(Vec::as_slice).unwrap_or_default();
        if let Some(object) = spans.iter().find(|s| s["name"] == "object") {
            object_spans += 1;
            assert_eq!(object["namespace"], "rooms", "{line}");
            assert_eq!(object["id"], &private[..12], "{line}");
            assert!(v["span"].is_object(), "{line}");
        }
    }
    assert!(lines > 3, "{logs}");
    assert!(object_spans > 0, "no line inside an object span:\n{logs}");
    // The private room's whole id is a capability: no line may hold it.
    assert!(!logs.contains(&private), "{logs}");
    assert!(logs.contains(r#""fields":{"message":"stopped"}"#), "{logs}");
}
