//! The admin routes' doors: the inspector refuses requests without the
//! token, cannot be enabled without one, and is not there when off; its
//! API reads objects without waking them and answers bad ids with 404.

mod common;

use chat_demo::{AdminOptions, admin_app};
use common::{Server, Setup};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "correct-horse-battery";

fn options(inspector: bool, token: Option<&str>) -> AdminOptions {
    AdminOptions {
        token: token.map(str::to_owned),
        inspector,
        prometheus: None,
        listen: None,
        cluster: None,
    }
}

async fn send(
    router: &axum::Router,
    req: Request<axum::body::Body>,
) -> (StatusCode, http::HeaderMap, String) {
    let resp = router.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> http::request::Builder {
    Request::get(path)
}

fn empty(b: http::request::Builder) -> Request<axum::body::Body> {
    b.body(axum::body::Body::empty()).expect("request")
}

#[tokio::test]
async fn inspector_needs_a_token_to_be_enabled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    assert!(admin_app(&server.rt, options(true, None)).is_err());
    assert!(admin_app(&server.rt, options(true, Some(""))).is_err());
    server.stop().await;
}

#[tokio::test]
async fn inspector_is_not_there_when_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let admin = admin_app(&server.rt, options(false, Some(TOKEN))).expect("admin");
    for path in ["/inspector", "/inspector/login", "/inspector/api/summary"] {
        let auth = get(path).header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        let (status, _, _) = send(&admin, empty(auth)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    // Nor on the public chat router, whatever the admin settings.
    let public = chat_demo::app(server.state.clone());
    for path in ["/inspector", "/inspector/api/summary", "/metrics"] {
        let (status, _, _) = send(&public, empty(get(path))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} on the chat port");
    }
    server.stop().await;
}

#[tokio::test]
async fn every_admin_route_refuses_requests_without_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let admin = admin_app(&server.rt, options(true, Some(TOKEN))).expect("admin");
    let id = server.state.rooms().id_from_name("lobby").to_hex();
    let api = [
        "/metrics".to_owned(),
        "/inspector/api/summary".to_owned(),
        "/inspector/api/objects?ns=rooms".to_owned(),
        format!("/inspector/api/object?ns=rooms&id={id}"),
    ];
    for path in &api {
        let (status, headers, body) = send(&admin, empty(get(path))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a token");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(!body.contains("rooms\""), "{path} leaked {body}");
        for wrong in [
            format!("Bearer {TOKEN}x"),
            "Bearer ".to_owned(),
            TOKEN.to_owned(),
            format!("Basic {TOKEN}"),
        ] {
            let req = get(path).header(header::AUTHORIZATION, wrong.clone());
            let (status, _, _) = send(&admin, empty(req)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with {wrong:?}");
        }
        let req = get(path).header(header::COOKIE, "chat_admin_token=nope");
        let (status, _, _) = send(&admin, empty(req)).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong cookie"
        );
    }
    // The page sends strangers to the sign-in form, which holds no data.
    let (status, headers, _) = send(&admin, empty(get("/inspector"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/inspector/login");

    // A wrong sign-in sets no cookie.
    let wrong = Request::post("/inspector/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(axum::body::Body::from("token=guess"))
        .expect("request");
    let (status, headers, _) = send(&admin, wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get(header::SET_COOKIE).is_none());

    // The right one does; the cookie then opens the page and the API.
    let right = Request::post("/inspector/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(format!("token={TOKEN}")))
        .expect("request");
    let (status, headers, _) = send(&admin, right).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    let (status, _, body) = send(
        &admin,
        empty(get("/inspector").header(header::COOKIE, &pair)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("<html") || body.contains("<!doctype"),
        "the page"
    );
    for path in &api[1..] {
        let (status, _, body) = send(&admin, empty(get(path).header(header::COOKIE, &pair))).await;
        assert_eq!(status, StatusCode::OK, "{path} with the cookie: {body}");
        let req = get(path).header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        let (status, _, _) = send(&admin, empty(req)).await;
        assert_eq!(status, StatusCode::OK, "{path} with the bearer token");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_api_shows_a_room_without_waking_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let admin = admin_app(&server.rt, options(true, Some(TOKEN))).expect("admin");
    let authed =
        |path: &str| empty(get(path).header(header::AUTHORIZATION, format!("Bearer {TOKEN}")));
    let (mut alice, _) = server.a_named("ops-room", "alice").await;
    alice.say("<b>not bold</b>").await;
    let _echo = alice.json().await;

    let (status, _, body) = send(&admin, authed("/inspector/api/summary")).await;
    assert_eq!(status, StatusCode::OK);
    let summary: Value = serde_json::from_str(&body).expect("json");
    let names: Vec<&str> = summary["stats"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["directory", "health", "rate-limiters", "rooms"]);

    let (status, _, body) = send(&admin, authed("/inspector/api/objects?ns=rooms")).await;
    assert_eq!(status, StatusCode::OK);
    let page: Value = serde_json::from_str(&body).expect("json");
    let rooms = page["objects"].as_array().expect("objects");
    assert_eq!(rooms.len(), 1, "{page}");
    assert_eq!(rooms[0]["name"], "ops-room");
    assert_eq!(rooms[0]["stored"], true);
    assert_eq!(rooms[0]["sockets"], 1);
    let id = rooms[0]["id"].as_str().expect("id").to_owned();

    let live_before = server.state.rooms().live_count();
    let (status, _, body) = send(
        &admin,
        authed(&format!(
            "/inspector/api/object?ns=rooms&id={id}&prefix=msg/"
        )),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(view["name"], "ops-room");
    let entries = view["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0][1]["kind"], "json");
    assert_eq!(entries[0][1]["value"]["message"], "<b>not bold</b>");
    let sockets = view["sockets"].as_array().expect("sockets");
    assert_eq!(sockets.len(), 1);
    assert_eq!(sockets[0]["open"], true);
    assert!(sockets[0]["attachment"].is_object(), "the session: {view}");
    assert_eq!(
        server.state.rooms().live_count(),
        live_before,
        "looking woke nothing"
    );

    // Paging: one entry per page.
    let (_, _, body) = send(
        &admin,
        authed(&format!("/inspector/api/object?ns=rooms&id={id}&limit=1")),
    )
    .await;
    let first: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(first["entries"].as_array().expect("entries").len(), 1);

    // Wrong ids and namespaces: 404, and the server keeps serving.
    let forged = "0".repeat(64);
    let other = server.state.rooms().id_from_name("x").to_hex();
    for path in [
        format!("/inspector/api/object?ns=rooms&id={forged}"),
        "/inspector/api/object?ns=rooms&id=nothex".to_owned(),
        format!("/inspector/api/object?ns=nowhere&id={other}"),
        "/inspector/api/objects?ns=nowhere".to_owned(),
        format!("/inspector/api/object?ns=rate-limiters&id={other}"),
    ] {
        let (status, _, body) = send(&admin, authed(&path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (status, _, _) = send(&admin, authed("/inspector/api/objects?ns=rooms&after=zz")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a malformed cursor");
    alice.say("still here").await;
    assert_eq!(alice.json().await["message"], "still here");
    server.stop().await;
}

/// A raw HTTP/1.1 GET; answers the status line and the body.
async fn http_get(addr: &str, path: &str, auth: Option<&str>) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn the_binary_serves_admin_routes_only_when_asked() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let bin = env!("CARGO_BIN_EXE_chat-demo");
    let dir = tempfile::tempdir().expect("tempdir");
    // Refused setups: the inspector without a token; a public address
    // without saying so.
    for (args, expect) in [
        (
            vec!["--admin-listen", "127.0.0.1:0", "--inspector"],
            "token",
        ),
        (vec!["--admin-listen", "0.0.0.0:0"], "loopback"),
        (vec!["--inspector"], "admin-listen"),
    ] {
        let out = tokio::process::Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(&args)
            .env_remove("CHAT_ADMIN_TOKEN")
            .output()
            .await
            .expect("run");
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    // Enabled: metrics behind the token on its own loopback address.
    let mut child = tokio::process::Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args([
            "--admin-listen",
            "127.0.0.1:0",
            "--inspector",
            "--admin-token",
            TOKEN,
        ])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut admin = None;
    while admin.is_none() {
        let line = tokio::time::timeout(common::PATIENCE, lines.next_line())
            .await
            .expect("prints in time")
            .expect("stdout")
            .expect("a line");
        admin = line
            .strip_prefix("chat-demo admin on http://")
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_owned);
    }
    let admin = admin.expect("admin address");
    let (status, _) = http_get(&admin, "/metrics", None).await;
    assert!(status.contains("401"), "{status}");
    let (status, body) = http_get(&admin, "/metrics", Some(TOKEN)).await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("objects_alarms_pending"), "{body}");
    let (status, _) = http_get(&admin, "/inspector/api/summary", None).await;
    assert!(status.contains("401"), "{status}");
    child.kill().await.expect("kill");
}

/// Records which operation ran; answers a fixed report (the operations
/// themselves run on real nodes in `tests/cluster.rs`).
#[derive(Default)]
struct Ops(std::sync::Mutex<Vec<String>>);

impl chat_demo::ClusterOps for Ops {
    fn drain(&self) -> chat_demo::OpFuture {
        self.0.lock().expect("lock").push("drain".into());
        Box::pin(async { Ok("0 shards moved\n".to_owned()) })
    }
    fn rebalance(&self) -> chat_demo::OpFuture {
        self.0.lock().expect("lock").push("rebalance".into());
        Box::pin(async { Err("no live member to move to".to_owned()) })
    }
    fn restore_shard(&self, shard: u32, backup: std::path::PathBuf) -> chat_demo::OpFuture {
        self.0
            .lock()
            .expect("lock")
            .push(format!("restore {shard} {}", backup.display()));
        Box::pin(async { Ok("restored\n".to_owned()) })
    }
    fn status(&self) -> chat_demo::OpFuture {
        self.0.lock().expect("lock").push("status".into());
        Box::pin(async { Ok("node n1\n".to_owned()) })
    }
}

#[tokio::test]
async fn cluster_operations_need_the_token_as_a_bearer_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let ops = std::sync::Arc::new(Ops::default());
    let with = |token: Option<&str>| AdminOptions {
        cluster: Some(ops.clone()),
        ..options(true, token)
    };
    let post = |path: &str| Request::post(path);
    // No token configured: refused, even though every other admin route
    // would be open.
    let open = admin_app(&server.rt, options(false, None)).expect("admin");
    let open_ops = admin_app(
        &server.rt,
        AdminOptions {
            cluster: Some(ops.clone()),
            ..options(false, None)
        },
    )
    .expect("admin");
    let (status, _, _) = send(&open, empty(post("/cluster/drain"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not a cluster node");
    let (status, _, body) = send(&open_ops, empty(post("/cluster/drain"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // A token: the inspector's session cookie is not enough.
    let admin = admin_app(&server.rt, with(Some(TOKEN))).expect("admin");
    let login = Request::post("/inspector/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(format!("token={TOKEN}")))
        .expect("request");
    let (_, headers, _) = send(&admin, login).await;
    let cookie = headers[header::SET_COOKIE].to_str().expect("ascii");
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    let (status, _, _) = send(
        &admin,
        empty(post("/cluster/drain").header(header::COOKIE, &pair)),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a cookie alone");
    let bearer = |path: &str, token: &str| {
        empty(post(path).header(header::AUTHORIZATION, format!("Bearer {token}")))
    };
    let (status, _, _) = send(&admin, bearer("/cluster/drain", "guess")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a wrong token");
    assert!(ops.0.lock().expect("lock").is_empty(), "nothing ran so far");
    // The bearer token runs them: a report, or 409 with the reason.
    let (status, _, body) = send(&admin, bearer("/cluster/drain", TOKEN)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "0 shards moved\n")
    );
    let (status, _, body) = send(&admin, bearer("/cluster/rebalance", TOKEN)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body, "no live member to move to");
    let path = "/cluster/restore-shard?shard=12&backup=%2Ftmp%2Fn3%20copy";
    let (status, _, _) = send(&admin, bearer(path, TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&admin, bearer("/cluster/restore-shard?shard=x", TOKEN)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a bad query");
    let (status, _, _) = send(
        &admin,
        empty(get("/cluster/drain").header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::METHOD_NOT_ALLOWED,
        "a GET moves nothing"
    );
    // The status is read with a GET, with the token too.
    let status_get = |token: &str| {
        empty(get("/cluster/status").header(header::AUTHORIZATION, format!("Bearer {token}")))
    };
    let (status, _, _) = send(&admin, status_get("guess")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = send(&admin, status_get(TOKEN)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "node n1\n"));
    assert_eq!(
        *ops.0.lock().expect("lock"),
        ["drain", "rebalance", "restore 12 /tmp/n3 copy", "status"]
    );
    server.stop().await;
}
