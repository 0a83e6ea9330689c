//! The operations subcommands of the `chat-demo` binary on real data dirs:
//! chat through the running binary, back it up live and stopped, wipe the
//! original, serve the backup and find the history; `export | import` into
//! a fresh dir gives the same `list` and the same export; the tools refuse
//! a dir in use and say which line of an import is malformed.

#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

const PATIENCE: Duration = Duration::from_secs(20);
const BIN: &str = env!("CARGO_BIN_EXE_chat-demo");

/// Starts `chat-demo` (no subcommand: the default `serve`) on `dir`.
async fn start(dir: &Path) -> (Child, String) {
    common::start_binary(dir).await
}

async fn stop(mut child: Child) {
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert!(status.success(), "{status}");
}

/// Runs a tool subcommand, with `stdin` piped in.
async fn tool(args: &[&str], dirs: &[&Path], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    // Dirs go after their flags: `args` ends with the flags that take them.
    for d in dirs {
        cmd.arg(d);
    }
    let mut child = cmd
        .env_remove("CHAT_DATA_DIR")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tool");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = tokio::spawn(async move {
        // A tool that does not read stdin closes it early: ignore that.
        let _ = input.write_all(&data).await;
    });
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("tool finishes in time")
        .expect("tool output");
    writer.await.expect("stdin writer");
    out
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "tool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

fn failed(out: Output) -> String {
    assert!(!out.status.success(), "tool should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn export(dir: &Path) -> String {
    ok(tool(&["export", "--data-dir"], &[dir], b"").await)
}

async fn list(dir: &Path) -> String {
    ok(tool(&["list", "--data-dir"], &[dir], b"").await)
}

/// `POST /api/room` by hand (no HTTP client among the dev-dependencies).
async fn new_private_room(addr: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        b"POST /api/room HTTP/1.1\r\nHost: chat\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("request");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let id = answer
        .rsplit("\r\n")
        .next()
        .expect("body")
        .trim()
        .to_owned();
    assert_eq!(id.len(), 64, "{answer}");
    id
}

/// Joins `room` as `name` (dialect A), returns the frames up to `ready`,
/// then sends `messages` and waits for each to come back (so it is stored).
async fn chat(addr: &str, room: &str, name: &str, messages: &[&str]) -> Vec<String> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/room/{room}/websocket"))
            .await
            .expect("connect");
    ws.send(Message::text(format!(r#"{{"name":"{name}"}}"#)))
        .await
        .expect("hello");
    let mut before_ready = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains(r#""ready""#) => break,
                Some(Ok(Message::Text(t))) => before_ready.push(t.to_string()),
                Some(Ok(_)) => {}
                other => panic!("socket ended before ready: {other:?}"),
            }
        }
    })
    .await
    .expect("ready in time");
    for m in messages {
        ws.send(Message::text(format!(r#"{{"message":"{m}"}}"#)))
            .await
            .expect("send");
        let echo = format!(r#""message":"{m}""#);
        tokio::time::timeout(PATIENCE, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.contains(&echo) => break,
                    Some(Ok(_)) => {}
                    other => panic!("socket ended before the echo: {other:?}"),
                }
            }
        })
        .await
        .expect("echo in time");
    }
    let _ = ws.close(None).await;
    before_ready
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_wipe_restore_and_export_import_round_trip() {
    let root = tempfile::tempdir().expect("tempdir");
    let original = root.path().join("original");
    let live = root.path().join("live-backup");
    let stopped = root.path().join("stopped-backup");
    let imported = root.path().join("imported");

    // Chat a little on the running binary.
    let (server, addr) = start(&original).await;
    chat(&addr, "general", "alice", &["first", "second"]).await;
    let private = new_private_room(&addr).await;
    chat(&addr, &private, "bob", &["secret plans"]).await;

    // While it runs: backup copies beside it; export and import refuse.
    let out = tool(
        &["backup", "--to"],
        &[&live, Path::new("--data-dir"), &original],
        b"",
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    assert!(stderr.contains("in use by a running server"), "{stderr}");
    let err = failed(tool(&["export", "--data-dir"], &[&original], b"").await);
    assert!(err.contains("in use by a running server"), "{err}");
    let err = failed(tool(&["import", "--data-dir"], &[&original], b"").await);
    assert!(err.contains("in use by a running server"), "{err}");
    stop(server).await;

    // Stopped: the ordinary copy.
    ok(tool(
        &["backup", "--data-dir"],
        &[&original, Path::new("--to"), &stopped],
        b"",
    )
    .await);
    let err = failed(
        tool(
            &["backup", "--data-dir"],
            &[&original, Path::new("--to"), &stopped],
            b"",
        )
        .await,
    );
    assert!(err.contains("already exists"), "{err}");

    let listing = list(&original).await;
    let rooms: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("rooms\t"))
        .collect();
    assert_eq!(rooms.len(), 2, "{listing}");
    assert!(rooms.iter().any(|l| l.ends_with("\tgeneral")), "{listing}");
    assert!(
        rooms
            .iter()
            .any(|l| l.contains(&private) && l.ends_with('\t')),
        "{listing}"
    );
    let ns_only = ok(tool(
        &["list", "--namespace", "rooms", "--data-dir"],
        &[&original],
        b"",
    )
    .await);
    assert_eq!(ns_only.lines().count(), 2, "{ns_only}");

    let exported = export(&original).await;
    assert_eq!(
        export(&live).await,
        exported,
        "the live backup holds everything"
    );
    assert_eq!(export(&stopped).await, exported);

    // export | import into a fresh dir: same list, same export.
    let out = tool(&["import", "--data-dir"], &[&imported], exported.as_bytes()).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    // Two rooms and the public room directory; three messages, each
    // room's message count and search marker (`idx-through`: the messages
    // wait for a batch of 16 before they are indexed) and the directory's
    // entry for `general`.
    assert!(stderr.contains("3 objects, 8 keys"), "{stderr}");
    assert_eq!(list(&imported).await, listing);
    assert_eq!(export(&imported).await, exported);

    // One room by name; one by id.
    let general = ok(tool(
        &[
            "export",
            "--namespace",
            "rooms",
            "--name",
            "general",
            "--data-dir",
        ],
        &[&original],
        b"",
    )
    .await);
    // The store, the room, its count, its search marker and its two
    // messages (not indexed yet: fewer than a batch).
    assert_eq!(general.lines().count(), 1 + 1 + 1 + 1 + 2, "{general}");
    assert!(general.contains(r#""key":"idx-through""#), "{general}");
    let by_id = ok(tool(
        &["export", "--id", &private, "--data-dir"],
        &[&original],
        b"",
    )
    .await);
    assert!(by_id.contains("secret plans"), "{by_id}");

    // Wipe the original; serve the backup: the history is back, and the
    // private room's id is still valid there.
    std::fs::remove_dir_all(&original).expect("wipe");
    let (server, addr) = start(&stopped).await;
    let history = chat(&addr, "general", "carol", &[]).await;
    assert!(
        history.iter().any(|f| f.contains(r#""message":"first""#)),
        "{history:?}"
    );
    assert!(
        history.iter().any(|f| f.contains(r#""message":"second""#)),
        "{history:?}"
    );
    let history = chat(&addr, &private, "carol", &[]).await;
    assert!(
        history.iter().any(|f| f.contains("secret plans")),
        "{history:?}"
    );
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_give_clear_errors() {
    let root = tempfile::tempdir().expect("tempdir");
    let missing = root.path().join("missing");
    for sub in ["list", "export"] {
        let err = failed(tool(&[sub, "--data-dir"], &[&missing], b"").await);
        assert!(err.contains("no data.mdb"), "{sub}: {err}");
    }
    assert!(!missing.exists(), "reading tools create nothing");
    let err = failed(
        tool(
            &["backup", "--to"],
            &[&root.path().join("b"), Path::new("--data-dir"), &missing],
            b"",
        )
        .await,
    );
    assert!(err.contains("no data.mdb"), "{err}");

    let target = root.path().join("target");
    let input = "\n{\"type\":\"object\",\"namespace\":\"rooms\",\"id\":\"00\"}\n";
    let err = failed(tool(&["import", "--data-dir"], &[&target], input.as_bytes()).await);
    assert!(err.contains("line 2: malformed entry"), "{err}");
    assert!(err.contains("64 hex"), "{err}");
    let err = failed(tool(&["export", "--id", "xyz", "--data-dir"], &[&target], b"").await);
    assert!(err.contains("64 hex digits"), "{err}");
}

/// One chatter under load: reconnects with a fresh IP every three
/// messages (the rate limit's burst), sends `m0`, `m1`, ... to `room` and
/// records each number once its echo came back (so it is stored), until
/// told to stop or `max` messages are out.
async fn chatter(
    addr: String,
    room: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    progress: std::sync::Arc<tokio::sync::Notify>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max: u32,
) {
    use std::sync::atomic::Ordering;
    let url = format!("ws://{addr}/api/room/{room}/websocket");
    let mut client: Option<common::Client> = None;
    for k in 0..max {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if k % 3 == 0 {
            if let Some(old) = client.take() {
                old.close().await;
            }
            let mut c = common::Client::connect(&url, &common::next_ip()).await;
            c.send_json(serde_json::json!({ "name": format!("load-{room}") }))
                .await;
            c.json_until_ready().await;
            client = Some(c);
        }
        let c = client.as_mut().expect("connected");
        let text = format!("m{k}");
        c.say(&text).await;
        loop {
            let frame = c.json().await;
            assert!(frame.get("error").is_none(), "{frame}");
            if frame["message"] == text.as_str() {
                break;
            }
        }
        seen.lock().expect("seen").push(k);
        progress.notify_one();
    }
    if let Some(c) = client {
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_under_load_restores_rooms_and_history() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let root = tempfile::tempdir().expect("tempdir");
    let original = root.path().join("original");
    let backup = root.path().join("backup");
    let (server, addr) = start(&original).await;

    // Four rooms, each with a chatter sending as fast as its echoes come.
    let rooms: Vec<String> = (0..4).map(|r| format!("load-{r}")).collect();
    let seen: Vec<Arc<Mutex<Vec<u32>>>> = rooms.iter().map(|_| Arc::default()).collect();
    let progress = Arc::new(tokio::sync::Notify::new());
    let halt = Arc::new(AtomicBool::new(false));
    let chatters: Vec<_> = rooms
        .iter()
        .zip(&seen)
        .map(|(room, seen)| {
            tokio::spawn(chatter(
                addr.clone(),
                room.clone(),
                seen.clone(),
                progress.clone(),
                halt.clone(),
                90,
            ))
        })
        .collect();
    let total = || {
        seen.iter()
            .map(|s| s.lock().expect("seen").len())
            .sum::<usize>()
    };
    tokio::time::timeout(PATIENCE, async {
        while total() < 24 {
            progress.notified().await;
        }
    })
    .await
    .expect("the load gets going");

    // Back up in the middle of it: everything echoed before is in the copy.
    let before: Vec<Vec<u32>> = seen
        .iter()
        .map(|s| s.lock().expect("seen").clone())
        .collect();
    ok(tool(
        &["backup", "--to"],
        &[&backup, Path::new("--data-dir"), &original],
        b"",
    )
    .await);
    let during = total();
    halt.store(true, Ordering::SeqCst);
    for c in chatters {
        c.await.expect("chatter");
    }
    stop(server).await;
    assert!(
        total() > before.iter().map(Vec::len).sum::<usize>(),
        "the load went on during the backup ({during} echoed when it returned)"
    );

    // Restore: serve the copy; every room's history is a gap-free prefix
    // of what its chatter sent, holding at least what was echoed before.
    let (restored, addr) = start(&backup).await;
    for (room, before) in rooms.iter().zip(&before) {
        let url = format!("ws://{addr}/api/room/{room}/websocket");
        let mut c = common::Client::connect(&url, &common::next_ip()).await;
        c.send_json(serde_json::json!({ "name": "auditor" })).await;
        let history: Vec<u32> = c
            .json_until_ready()
            .await
            .iter()
            .filter_map(|f| f["message"].as_str()?.strip_prefix('m')?.parse().ok())
            .collect();
        let prefix: Vec<u32> = (0..u32::try_from(history.len()).expect("small")).collect();
        assert_eq!(history, prefix, "{room}: in order, no gaps");
        assert!(
            history.len() >= before.len(),
            "{room}: {} stored, but {} were echoed before the backup",
            history.len(),
            before.len()
        );
        c.close().await;
    }
    stop(restored).await;
}
