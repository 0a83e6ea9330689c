//! One test per resource attack: each asserts the bound that stops it (the
//! socket cut, the connection refused or closed, nothing activated) and
//! that a well-behaved user in another room still joins and gets the echo
//! of a message while the attack is on.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chat_demo::protocol::limit::RateLimitOptions;
use chat_demo::{ClientIpHeader, HttpLimits};
use common::{Client, Ending, PATIENCE, Server, Setup, chat_of};
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A rate limit that never bites, for tests that must store many messages.
fn no_rate_limit() -> RateLimitOptions {
    RateLimitOptions {
        per_message_ms: 1,
        grace_ms: 1 << 40,
    }
}

/// A user in `room` says something and must get its own echo back.
async fn calm_user_chats(server: &Server, room: &str) {
    let (mut calm, _) = server.a_named(room, "calm").await;
    calm.say("still here").await;
    let echo = calm.json().await;
    assert_eq!(
        chat_of(&echo).1,
        "still here",
        "the well-behaved user's echo"
    );
    calm.close().await;
}

/// A dialect-A client asks for page after page of escaped-heavy history
/// and never reads: its replies pile up on the server until the send
/// queue's byte bound cuts the socket, long before the replies asked for
/// are all sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_to_a_reader_that_never_reads_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        rate_limit: no_rate_limit(),
        ..Setup::default()
    };
    let server = Server::start(dir.path(), setup).await;

    // 100 messages of 256 × U+0001: each escapes to about 1.5 KB of JSON,
    // so one page of 100 is about 150 KB.
    let (mut filler, _) = server.a_named("big", "filler").await;
    let heavy = "\u{1}".repeat(256);
    for _ in 0..100 {
        filler.say(&heavy).await;
        assert_eq!(chat_of(&filler.json().await).1, heavy);
    }
    filler.close().await;

    let (mut eve, _) = server.a_named_ext("big", "eve", &["history"]).await;
    let request = json!({ "history": { "before": u64::MAX, "limit": 100 } }).to_string();
    // 300 pages are about 46 MB: more than the socket buffers of both ends
    // and the server's bound together.
    const PAGES: usize = 300;
    for _ in 0..PAGES {
        let sent = tokio::time::timeout(PATIENCE, eve.ws.send(Message::text(request.clone())))
            .await
            .expect("send in time");
        if sent.is_err() {
            break; // already cut
        }
    }

    calm_user_chats(&server, "calm").await;

    // Now read what reached us: some pages, then the end without a Close
    // frame (a slow reader's buffers are full, so none is sent).
    let mut pages = 0;
    let ending = loop {
        match eve.next().await {
            Some(Message::Text(t)) if t.as_str().contains("\"history\"") => pages += 1,
            Some(Message::Text(_)) => {}
            Some(Message::Close(frame)) => break Some(frame),
            Some(other) => panic!("unexpected frame {other:?}"),
            None => break None,
        }
    };
    assert!(
        ending.is_none()
            || ending
                .as_ref()
                .is_some_and(|f| f.as_ref().is_some_and(|f| u16::from(f.code) == 1008)),
        "cut as a slow reader: {ending:?}"
    );
    assert!(
        pages < PAGES,
        "the socket was cut before all {PAGES} pages went out (got {pages})"
    );
    calm_user_chats(&server, "calm2").await;
    server.stop().await;
}

/// A TCP connection from `source` (any 127.x.y.z works on Linux), so tests
/// can stand for several client IPs without a trusted header.
async fn tcp_from(source: [u8; 4], server: &Server) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind the source address");
    tokio::time::timeout(PATIENCE, socket.connect(server.addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// A dialect-A user from `source` (no trusted header: the peer address is
/// the client IP) joins `room`, says something and gets its echo.
async fn calm_user_from(source: [u8; 4], server: &Server, room: &str) {
    let stream = tcp_from(source, server).await;
    let url = server.url(&format!("/api/room/{room}/websocket"));
    let (ws, resp) = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    assert_eq!(resp.status(), 101);
    let mut calm = Client { ws };
    calm.send_json(json!({ "name": "calm" })).await;
    calm.json_until_ready().await;
    calm.say("still here").await;
    assert_eq!(chat_of(&calm.json().await).1, "still here");
    calm.close().await;
}

/// Reads until the server closes the connection; true if it did (EOF or
/// reset) rather than sending bytes.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("the server closes the connection in time")
    {
        Ok(0) | Err(_) => true,
        Ok(_) => false,
    }
}

/// Waits (on yields) until the server counts `n` TCP connections.
async fn tcp_count_is(server: &Server, n: usize) {
    let wait = async {
        while server.state.tcp_connections() != n {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("never {n} TCP connections"));
}

/// Connections that never send a byte: one IP gets at most its cap and
/// the next is closed at once (never queued, long before any timeout);
/// other IPs chat meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_per_ip() {
    let dir = tempfile::tempdir().expect("tempdir");
    const CAP: usize = 8;
    let setup = Setup {
        client_ip_header: ClientIpHeader::None,
        http: HttpLimits {
            // Far beyond PATIENCE: only the cap can close them here.
            header_timeout: Duration::from_secs(3600),
            max_connections_per_ip: CAP,
            ..HttpLimits::default()
        },
        ..Setup::default()
    };
    let server = Server::start(dir.path(), setup).await;
    let mut idle = Vec::new();
    for _ in 0..CAP {
        idle.push(tcp_from([127, 0, 0, 1], &server).await);
    }
    tcp_count_is(&server, CAP).await;
    let mut over = tcp_from([127, 0, 0, 1], &server).await;
    assert!(
        closed_by_server(&mut over).await,
        "one over the cap is closed"
    );
    assert_eq!(server.state.tcp_connections(), CAP, "and never counted");

    // Another IP is not affected by the first one's cap.
    calm_user_from([127, 0, 0, 2], &server, "calm").await;
    tcp_count_is(&server, CAP).await;

    // Closing one gives its place back.
    drop(idle.pop());
    tcp_count_is(&server, CAP - 1).await;
    calm_user_from([127, 0, 0, 1], &server, "calm").await;
    drop(idle);
    server.stop().await;
}

/// The total cap holds across IPs: past it every new connection is closed,
/// whoever it comes from; one closing frees a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_connections_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    const CAP: usize = 6;
    let setup = Setup {
        client_ip_header: ClientIpHeader::None,
        http: HttpLimits {
            header_timeout: Duration::from_secs(3600),
            max_connections: CAP,
            max_connections_per_ip: 0,
            ..HttpLimits::default()
        },
        ..Setup::default()
    };
    let server = Server::start(dir.path(), setup).await;
    let mut held = Vec::new();
    for i in 0..CAP - 1 {
        held.push(tcp_from([127, 0, 1, u8::try_from(i).expect("small")], &server).await);
    }
    tcp_count_is(&server, CAP - 1).await;
    // One place left: a well-behaved user takes it and chats.
    calm_user_from([127, 0, 0, 9], &server, "calm").await;
    tcp_count_is(&server, CAP - 1).await;
    held.push(tcp_from([127, 0, 2, 1], &server).await);
    tcp_count_is(&server, CAP).await;
    let mut over = tcp_from([127, 0, 3, 1], &server).await;
    assert!(closed_by_server(&mut over).await, "over the total cap");
    drop(held.pop());
    tcp_count_is(&server, CAP - 1).await;
    calm_user_from([127, 0, 0, 9], &server, "calm").await;
    server.stop().await;
}

/// Requests that say `Upgrade: websocket` but are no complete handshake
/// (no key), many on one keep-alive connection: each gets 400 and no room
/// is ever activated, so none of them costs a storage read or memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_upgrades_activate_no_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let mut stream = tcp_from([127, 0, 0, 1], &server).await;
    const REQUESTS: usize = 500;
    let mut responses = 0;
    let mut pending = Vec::new();
    for i in 0..REQUESTS {
        let request = format!(
            "GET /ws?room=flood{i}&name=x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-For: 10.200.0.1\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("request");
        // Read what has come so far, without waiting.
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::ZERO, stream.read(&mut buf)).await {
            assert!(n > 0, "the server closed the connection");
            pending.extend_from_slice(&buf[..n]);
        }
        responses = count(&pending, b"HTTP/1.1 400");
    }
    while responses < REQUESTS {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("responses in time")
            .expect("read");
        assert!(n > 0, "closed after {responses} responses");
        pending.extend_from_slice(&buf[..n]);
        responses = count(&pending, b"HTTP/1.1 400");
    }
    assert_eq!(
        server.state.rooms().live_count(),
        0,
        "no room activated by {REQUESTS} incomplete upgrades"
    );
    calm_user_chats(&server, "calm").await;
    assert_eq!(server.state.rooms().live_count(), 1, "only the calm room");
    server.stop().await;
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Frames are limited per dialect to what the protocol needs: a B or C
/// frame over 2 KiB and an A frame over 4 KiB close the socket with 1009
/// (the A one at the runtime's read limit, before it is buffered whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_limited_per_dialect() {
    use chat_demo::protocol::{MAX_FRAME_BYTES_A, MAX_FRAME_BYTES_TEXT};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let big = Ending::Close(1009, "message too big".into());

    let mut b = server.b("frames").await;
    b.send_text(&"b".repeat(MAX_FRAME_BYTES_TEXT)).await;
    assert_eq!(
        b.text().await,
        "Message too long.",
        "at the limit: the error"
    );
    b.send_text(&"b".repeat(MAX_FRAME_BYTES_TEXT + 1)).await;
    assert_eq!(b.ending().await, big, "B over its limit");

    let mut c = server.c("room=frames&name=cee").await;
    c.send_text(&" ".repeat(MAX_FRAME_BYTES_TEXT + 1)).await;
    assert_eq!(c.ending().await, big, "C over its limit");

    let (mut a, _) = server.a_named("frames-a", "ann").await;
    let message = json!({ "message": "a".repeat(MAX_FRAME_BYTES_A) }).to_string();
    a.send_text(&message).await;
    assert_eq!(a.ending().await, big, "A over its limit");

    calm_user_chats(&server, "calm").await;
    server.stop().await;
}

/// Connect/close churn in a room: the members hear a burst of join/leave
/// notices, then nothing more until the room's notice budget refills,
/// however many sockets come and go; the presence roster catches up then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_churn_is_throttled_per_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut watcher, _) = server.a_named_ext("churn", "watcher", &["presence"]).await;
    // Its own arrival.
    assert!(watcher.json().await.get("presence").is_some());
    const CYCLES: usize = 100;
    for i in 0..CYCLES {
        // Each from its own IP, so the per-IP join budget is not what
        // stops them.
        let churner = server.c(&format!("room=churn&name=churner{i}")).await;
        churner.close().await;
    }
    calm_user_chats(&server, "calm").await;
    // A message marks the end: count what the watcher got before it.
    let mut sayer = server.c("room=churn&name=sayer").await;
    sayer.say("the end").await;
    let mut notices = 0;
    loop {
        let frame = watcher.json().await;
        if frame.get("message").and_then(|m| m.as_str()) == Some("the end") {
            break;
        }
        notices += 1;
    }
    // 200 joins and leaves, each a notice and a roster: without the
    // budget 400 frames.
    assert!(
        notices <= 2 * 22,
        "at most a burst of notices (with their rosters): {notices}"
    );
    assert!(notices >= 10, "the burst itself goes out: {notices}");

    // A minute on, the budget has refilled: the next change is announced,
    // and the roster is current.
    server.clock.advance(60_000);
    let late = server.c("room=churn&name=late").await;
    let mut frames = [watcher.json().await, watcher.json().await];
    frames.sort_by_key(|f| f.get("presence").is_some());
    assert_eq!(frames[0], json!({ "joined": "late" }));
    assert_eq!(frames[1]["presence"]["count"], 3, "{}", frames[1]);
    drop(late);
    server.stop().await;
}

/// Joins are charged to the client IP before any room is reached: past
/// the per-minute budget the next upgrade gets 429; other IPs join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_per_ip_are_budgeted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let ip = "10.201.0.1";
    let url = server.url("/room/joins/websocket");
    for _ in 0..chat_demo::DEFAULT_JOINS_PER_MINUTE {
        Client::connect(&url, ip).await.close().await;
    }
    let mut req = url.clone().into_client_request().expect("request");
    req.headers_mut()
        .insert("x-forwarded-for", ip.parse().expect("header"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 429);
        }
        other => panic!("expected 429, got {other:?}"),
    }
    calm_user_chats(&server, "calm").await;
    server.stop().await;
}

/// History pages are charged to the client IP's history budget: past it
/// the rate limit error, and the socket stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_are_budgeted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut reader, _) = server.a_named_ext("pages", "reader", &["history"]).await;
    let request = json!({ "history": { "before": u64::MAX } });
    for _ in 0..chat_demo::DEFAULT_HISTORY_PAGES_PER_MINUTE {
        reader.send_json(request.clone()).await;
        assert!(reader.json().await.get("history").is_some());
    }
    reader.send_json(request.clone()).await;
    assert_eq!(
        reader.json().await,
        json!({ "error": chat_demo::protocol::limit::RATE_LIMITED })
    );
    calm_user_chats(&server, "calm").await;
    server.clock.advance(1_000);
    reader.send_json(request).await;
    assert!(reader.json().await.get("history").is_some(), "refilled");
    server.stop().await;
}

/// The server's own origin is its scheme, host and port: a page on
/// another port of the same host (Host without a port) or on HTTPS when
/// the server was reached by plain HTTP is refused; a trusted proxy's
/// `X-Forwarded-Proto: https` makes HTTPS the server's scheme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_compare_scheme_host_and_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let status = |origin: &'static str, proto: Option<&'static str>| {
        let mut req = server
            .url("/room/origins/websocket")
            .into_client_request()
            .expect("request");
        let h = req.headers_mut();
        h.insert("host", "chat.example".parse().expect("host"));
        h.insert("origin", origin.parse().expect("origin"));
        h.insert("x-forwarded-for", common::next_ip().parse().expect("ip"));
        if let Some(proto) = proto {
            h.insert("x-forwarded-proto", proto.parse().expect("proto"));
        }
        async move {
            match tokio_tungstenite::connect_async(req).await {
                Ok((_, resp)) => resp.status().as_u16(),
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
                Err(other) => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(status("http://chat.example", None).await, 101);
    assert_eq!(status("http://chat.example:80", None).await, 101);
    assert_eq!(status("http://chat.example:8081", None).await, 403, "port");
    assert_eq!(status("https://chat.example", None).await, 403, "scheme");
    assert_eq!(status("https://chat.example", Some("https")).await, 101);
    assert_eq!(status("http://chat.example", Some("https")).await, 403);
    calm_user_chats(&server, "calm").await;
    server.stop().await;
}

/// Backups (live and stopped) and exports hold the id secret and every
/// private room id: they are created readable by the owner only. An import
/// line longer than any key and value can take is refused with its line
/// number, before more than the limit of it is held.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_and_exports_are_private_and_import_lines_are_bounded() {
    use std::os::unix::fs::PermissionsExt;
    const BIN: &str = env!("CARGO_BIN_EXE_chat-demo");
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let tool = |args: &[&str], stdin: Option<Vec<u8>>| {
        use std::io::Write;
        let mut child = std::process::Command::new(BIN)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(bytes) = stdin {
            // The tool may stop reading early (a refused line): ignore
            // a broken pipe.
            let _ = input.write_all(&bytes);
        }
        drop(input);
        child.wait_with_output().expect("tool ran")
    };
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let data_s = data.to_str().expect("utf-8").to_owned();

    // A live backup while the server runs and a user chats.
    let (child, addr) = common::start_binary(&data).await;
    let url = format!("ws://{addr}/api/room/secret/websocket");
    let mut calm = Client::connect(&url, &common::next_ip()).await;
    calm.send_json(json!({ "name": "calm" })).await;
    calm.json_until_ready().await;
    calm.say("before the backup").await;
    assert_eq!(chat_of(&calm.json().await).1, "before the backup");
    let live = root.path().join("live");
    let live_s = live.to_str().expect("utf-8").to_owned();
    let out = tool(&["backup", "--data-dir", &data_s, "--to", &live_s], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&live.join("data.mdb")), 0o600, "live backup file");
    assert_eq!(mode(&live), 0o700, "live backup dir");
    calm.say("after the backup").await;
    assert_eq!(chat_of(&calm.json().await).1, "after the backup");
    calm.close().await;
    let mut child = child;
    child.kill().await.expect("kill and reap the server");

    // A stopped backup, and an export to a file.
    let stopped = root.path().join("stopped");
    let stopped_s = stopped.to_str().expect("utf-8").to_owned();
    let out = tool(&["backup", "--data-dir", &data_s, "--to", &stopped_s], None);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("copied the stopped data dir"),
        "{out:?}"
    );
    assert_eq!(
        mode(&stopped.join("data.mdb")),
        0o600,
        "stopped backup file"
    );
    let export = root.path().join("export.jsonl");
    let export_s = export.to_str().expect("utf-8").to_owned();
    let out = tool(
        &["export", "--data-dir", &data_s, "--output", &export_s],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&export), 0o600, "export file");
    let out = tool(
        &["export", "--data-dir", &data_s, "--output", &export_s],
        None,
    );
    assert!(!out.status.success(), "an existing file is not overwritten");

    // Import: the export's first line, then one over the line limit.
    let first = std::fs::read_to_string(&export)
        .expect("export")
        .lines()
        .next()
        .expect("a line")
        .to_owned();
    let mut input = format!("{first}\n").into_bytes();
    input.extend(std::iter::repeat_n(b'x', objects::MAX_LINE_BYTES + 10));
    input.push(b'\n');
    let target = root.path().join("imported");
    let target_s = target.to_str().expect("utf-8").to_owned();
    let out = tool(&["import", "--data-dir", &target_s], Some(input));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("longer than"),
        "{stderr}"
    );
}

/// The admin routes: the cookie holds a session id, not the token, and
/// signing out revokes it on the server; sign-in attempts are budgeted; a
/// `Host` that does not name the admin address (DNS rebinding) is refused
/// even with the token. Chat goes on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_sessions_sign_in_budget_and_host_check() {
    use axum::body::Body;
    use http::{Request, StatusCode, header};
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    const TOKEN: &str = "correct-horse-battery";
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let listen: SocketAddr = "127.0.0.1:8788".parse().expect("addr");
    let admin = chat_demo::admin_app(
        &server.rt,
        chat_demo::AdminOptions {
            token: Some(TOKEN.into()),
            inspector: true,
            prometheus: None,
            listen: Some(listen),
            cluster: None,
        },
    )
    .expect("admin");
    let send = |req: Request<Body>| {
        let admin = admin.clone();
        async move {
            let resp = admin.oneshot(req).await.expect("response");
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (status, headers, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let get = |path: &str, host: &str| Request::get(path).header(header::HOST, host);
    let login = |token: &str| {
        Request::post("/inspector/login")
            .header(header::HOST, "localhost:8788")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .expect("request")
    };
    let summary = "/inspector/api/summary";

    // Host: the token does not help a request for another host.
    for host in ["evil.example:8788", "127.0.0.1:9999", "rebind.example"] {
        let req = get(summary, host)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request");
        assert_eq!(send(req).await.0, StatusCode::MISDIRECTED_REQUEST, "{host}");
    }
    let req = get(summary, "127.0.0.1:8788")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(req).await.0, StatusCode::OK);

    // Sign in: a random session id, with an expiry, in the cookie.
    let (status, headers, _) = send(login(TOKEN)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        !cookie.contains(TOKEN),
        "the token is not in the cookie: {cookie}"
    );
    assert!(cookie.contains("Max-Age="), "{cookie}");
    let pair = cookie.split(';').next().expect("pair").to_owned();
    let with_cookie = |path: &str| {
        get(path, "localhost:8788")
            .header(header::COOKIE, &pair)
            .body(Body::empty())
            .expect("request")
    };
    assert_eq!(send(with_cookie(summary)).await.0, StatusCode::OK);

    calm_user_chats(&server, "calm").await;

    // Sign out revokes the session: the same cookie no longer opens it.
    let logout = Request::post("/inspector/logout")
        .header(header::HOST, "localhost:8788")
        .header(header::COOKIE, &pair)
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(logout).await.0, StatusCode::SEE_OTHER);
    assert_eq!(send(with_cookie(summary)).await.0, StatusCode::UNAUTHORIZED);

    // Sign-in attempts: a burst (one spent above), then 429 even for the
    // right token, so guessing is slow.
    let mut refused = 0;
    for _ in 0..20 {
        let (status, _, _) = send(login("guess")).await;
        match status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused >= 10, "attempts past the burst refused: {refused}");
    assert_eq!(send(login(TOKEN)).await.0, StatusCode::TOO_MANY_REQUESTS);
    server.stop().await;
}

/// `--admin-allow-remote` without a token is refused at start: the admin
/// routes would be open to the network.
#[tokio::test]
async fn remote_admin_needs_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-demo"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .arg("--admin-allow-remote")
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("CHAT_ADMIN_TOKEN")
        .output();
    let out = tokio::time::timeout(PATIENCE, out)
        .await
        .expect("exits in time")
        .expect("ran");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--admin-allow-remote needs --admin-token"),
        "{stderr}"
    );
}

/// A room that fills the store: once less than the reserve is left, each
/// message gets the storage-full error frame (no silent reset), the room
/// keeps serving joins and its history, nothing echoed is lost, and
/// retention's deletes still run and make room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_refuses_messages_with_an_error_and_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hour = 3_600_000;
    let setup = Setup {
        rate_limit: no_rate_limit(),
        store_max_bytes: Some(1 << 20),
        history_retention: Some(Duration::from_millis(hour)),
        ..Setup::default()
    };
    let server = Server::start(dir.path(), setup).await;
    let full = json!({ "error": "Storage full, message not sent." });
    let (mut writer, _) = server.a_named("filling", "writer").await;
    let heavy = "\u{1}".repeat(256);
    let mut echoed = Vec::new();
    loop {
        assert!(echoed.len() < 5_000, "the store never filled");
        let text = format!("{}{heavy}", echoed.len());
        let text: String = text.chars().take(256).collect();
        writer.say(&text).await;
        let frame = writer.json().await;
        if frame == full {
            break;
        }
        assert_eq!(chat_of(&frame).1, text);
        echoed.push(text);
    }
    assert!(echoed.len() > 50, "some fit first: {}", echoed.len());
    // Still refused, still with the error, and the socket stays open.
    writer.say("one more").await;
    assert_eq!(writer.json().await, full);

    // Reads keep working: a newcomer joins and gets the newest 100, all
    // of them echoed before.
    let (_reader, before) = server.a_named("filling", "reader").await;
    let backlog: Vec<String> = before
        .iter()
        .filter(|f| f.get("timestamp").is_some())
        .map(|f| chat_of(f).1)
        .collect();
    assert_eq!(backlog, echoed[echoed.len() - 100..].to_vec());
    // Another room: the user joins and hears why its message is refused.
    let (mut calm, _) = server.a_named("calm", "calm").await;
    calm.say("hello").await;
    assert_eq!(calm.json().await, full);

    // Retention deletes run (they need no new space) and make room.
    server.clock.advance(2 * hour);
    server.rt.wake_alarms();
    let wait = async {
        loop {
            calm.say("room again").await;
            let frame = calm.json().await;
            if frame != full {
                return frame;
            }
            tokio::task::yield_now().await;
        }
    };
    let frame = tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("retention freed space");
    assert_eq!(chat_of(&frame).1, "room again");
    server.stop().await;
}

/// A room keeps at most its cap of messages: past it, its alarm deletes
/// the oldest, so one room cannot grow without end; the newest stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_keeps_at_most_its_cap_of_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    const CAP: u64 = 10;
    let setup = Setup {
        rate_limit: no_rate_limit(),
        history_max_messages: Some(CAP),
        ..Setup::default()
    };
    let server = Server::start(dir.path(), setup).await;
    let (mut writer, _) = server.a_named("capped", "writer").await;
    for n in 0..25 {
        writer.say(&format!("m{n}")).await;
        assert_eq!(chat_of(&writer.json().await).1, format!("m{n}"));
    }
    calm_user_chats(&server, "calm").await;
    // The trim runs on the room's alarm; a newcomer's backlog shows what
    // is stored once it has.
    let wait = async {
        loop {
            server.rt.wake_alarms();
            let (reader, before) = server.a_named("capped", "reader").await;
            let stored: Vec<String> = before
                .iter()
                .filter(|f| f.get("timestamp").is_some())
                .map(|f| chat_of(f).1)
                .collect();
            reader.close().await;
            if stored.len() as u64 <= CAP {
                return stored;
            }
            tokio::task::yield_now().await;
        }
    };
    let stored = tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("trimmed to the cap");
    let newest: Vec<String> = (15..25).map(|n| format!("m{n}")).collect();
    assert_eq!(stored, newest, "the newest {CAP} stay");
    server.stop().await;
}

/// Keys per client: IPv6 addresses of one /64 are one client, and so are
/// requests whose `X-Forwarded-For` differ only left of what the trusted
/// proxy appended; so rotating addresses or forging entries buys no extra
/// connection slots. Other /64s, and other real clients, are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_per_64_and_rightmost_forwarded_for_share_one_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        max_connections_per_ip: Some(2),
        ..Setup::default()
    };
    let server = Server::start(dir.path(), setup).await;
    let url = server.url("/room/keys/websocket");
    let status = |xff: &'static str| {
        let mut req = url.clone().into_client_request().expect("request");
        req.headers_mut()
            .insert("x-forwarded-for", xff.parse().expect("header"));
        async move {
            match tokio_tungstenite::connect_async(req).await {
                Ok((ws, resp)) => (resp.status().as_u16(), Some(ws)),
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                    (resp.status().as_u16(), None)
                }
                Err(other) => panic!("{other:?}"),
            }
        }
    };
    // Two addresses of one /64 take its two slots; a third is refused.
    let (a, _keep_a) = status("2001:db8:1:2::1").await;
    let (b, _keep_b) = status("2001:db8:1:2:ffff::9").await;
    assert_eq!((a, b), (101, 101));
    assert_eq!(status("2001:db8:1:2:1234::1").await.0, 429, "same /64");
    assert_eq!(status("2001:db8:1:3::1").await.0, 101, "the next /64");
    // Forged entries left of the proxy's: still the same client.
    let (c, _keep_c) = status("6.6.6.6, 10.20.0.1").await;
    let (d, _keep_d) = status("7.7.7.7, 10.20.0.1").await;
    assert_eq!((c, d), (101, 101));
    assert_eq!(status("8.8.8.8, 10.20.0.1").await.0, 429, "rightmost");
    assert_eq!(
        status("10.20.0.1, 10.20.0.2").await.0,
        101,
        "another client"
    );
    calm_user_chats(&server, "calm").await;
    server.stop().await;
}

/// A room stored before the message count existed (its messages, no
/// `count` key) is counted once when it next needs the count, and then
/// held to the cap like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_from_before_the_count_is_counted_and_capped() {
    let root = tempfile::tempdir().expect("tempdir");
    let old = root.path().join("old");
    let setup = Setup {
        rate_limit: no_rate_limit(),
        history_max_messages: None,
        ..Setup::default()
    };
    let server = Server::start(&old, setup.clone()).await;
    let (mut writer, _) = server.a_named("legacy", "writer").await;
    for n in 0..15 {
        writer.say(&format!("m{n}")).await;
        assert_eq!(chat_of(&writer.json().await).1, format!("m{n}"));
    }
    writer.close().await;
    server.stop().await;

    // The same store without any `count` key: what an older server left.
    let fresh = root.path().join("fresh");
    {
        let source = objects::Admin::open(&old).expect("open");
        let entries: Vec<objects::Entry> = source
            .export(&objects::ExportFilter::default())
            .expect("export")
            .map(|e| e.expect("entry"))
            .filter(|e| !matches!(e, objects::Entry::Key { key, .. } if key == "count"))
            .collect();
        let mut target = objects::Admin::create(&fresh).expect("create");
        target
            .import(entries.into_iter().map(Ok::<_, objects::Error>), |_| {})
            .expect("import");
    }

    const CAP: u64 = 10;
    let server = Server::start(
        &fresh,
        Setup {
            history_max_messages: Some(CAP),
            ..setup
        },
    )
    .await;
    let (mut writer, _) = server.a_named("legacy", "writer").await;
    writer.say("m15").await;
    assert_eq!(chat_of(&writer.json().await).1, "m15");
    calm_user_chats(&server, "calm").await;
    let wait = async {
        loop {
            server.rt.wake_alarms();
            let (reader, before) = server.a_named("legacy", "reader").await;
            let stored: Vec<String> = before
                .iter()
                .filter(|f| f.get("timestamp").is_some())
                .map(|f| chat_of(f).1)
                .collect();
            reader.close().await;
            if stored.len() as u64 <= CAP {
                return stored;
            }
            tokio::task::yield_now().await;
        }
    };
    let stored = tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("trimmed to the cap");
    let newest: Vec<String> = (6..16).map(|n| format!("m{n}")).collect();
    assert_eq!(
        stored, newest,
        "counted 15 + 1, trimmed to the newest {CAP}"
    );
    server.stop().await;
}
