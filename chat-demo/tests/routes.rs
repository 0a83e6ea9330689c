//! The front door's routes, driven with `oneshot` (no server, no sockets).

use axum::body::Body;
use chat_demo::{AppState, ChatOptions, app};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Fixture {
    rt: objects::Runtime,
    state: AppState,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = objects::Runtime::builder()
        .data_dir(dir.path())
        .open()
        .expect("runtime");
    let state = AppState::new(&rt, ChatOptions::default()).expect("namespaces");
    Fixture {
        rt,
        state,
        _dir: dir,
    }
}

/// Sends a request; returns the status, the headers and the body text.
async fn send(state: &AppState, req: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let resp = app(state.clone()).oneshot(req).await.expect("infallible");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
    )
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, String) {
    let req = Request::get(uri).body(Body::empty()).expect("request");
    let (status, _, body) = send(state, req).await;
    (status, body)
}

/// A request that looks like a WebSocket upgrade (but `oneshot` cannot
/// actually upgrade, so the front door answers 400 for lack of the
/// connection, before any room is reached).
fn upgrade(uri: &str, body: Body) -> Request<Body> {
    Request::get(uri)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(body)
        .expect("request")
}

async fn create_room(state: &AppState) -> String {
    let req = Request::post("/api/room")
        .body(Body::empty())
        .expect("request");
    let (status, headers, body) = send(state, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(&b"*"[..])
    );
    body
}

#[tokio::test]
async fn the_page_is_served_at_the_root() {
    let f = fixture();
    let req = Request::get("/").body(Body::empty()).expect("request");
    let (status, headers, body) = send(&f.state, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/html;charset=UTF-8"[..])
    );
    assert!(
        body.contains("/api/room/") && body.contains("<html"),
        "the chat page"
    );
    f.rt.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_are_404_not_found() {
    let f = fixture();
    for uri in [
        "/nowhere",
        "/api",
        "/api/room/general",
        "/api/room/general/websocket/x",
        "/room/general",
        "/ws/x",
    ] {
        assert_eq!(
            get(&f.state, uri).await,
            (StatusCode::NOT_FOUND, "Not Found".to_owned()),
            "{uri}"
        );
    }
    f.rt.shutdown().await;
}

#[tokio::test]
async fn get_api_room_is_405() {
    let f = fixture();
    assert_eq!(
        get(&f.state, "/api/room").await,
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed".to_owned()
        )
    );
    f.rt.shutdown().await;
}

#[tokio::test]
async fn socket_routes_without_an_upgrade_are_refused_per_dialect() {
    let f = fixture();
    assert_eq!(
        get(&f.state, "/api/room/general/websocket").await,
        (StatusCode::BAD_REQUEST, "expected websocket".to_owned())
    );
    for uri in [
        "/room/general/websocket",
        "/ws?room=general&name=bob",
        "/ws",
    ] {
        assert_eq!(
            get(&f.state, uri).await,
            (
                StatusCode::UPGRADE_REQUIRED,
                "Expected WebSocket".to_owned()
            ),
            "{uri}"
        );
    }
    f.rt.shutdown().await;
}

#[tokio::test]
async fn private_rooms_are_64_lowercase_hex_and_unique() {
    let f = fixture();
    let first = create_room(&f.state).await;
    let second = create_room(&f.state).await;
    for id in [&first, &second] {
        assert_eq!(id.len(), 64, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id}"
        );
    }
    assert_ne!(first, second);
    // The minted id passes the id check and reaches the upgrade check.
    assert_eq!(
        get(&f.state, &format!("/api/room/{first}/websocket")).await,
        (StatusCode::BAD_REQUEST, "expected websocket".to_owned())
    );
    f.rt.shutdown().await;
}

#[tokio::test]
async fn forged_and_foreign_ids_are_refused() {
    let f = fixture();
    let other = fixture();
    let foreign = create_room(&other.state).await;
    let mut flipped = create_room(&f.state).await.into_bytes();
    flipped[63] = if flipped[63] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).expect("hex");
    for id in [
        "0".repeat(64),
        "0123456789abcdef".repeat(4),
        foreign,
        flipped,
    ] {
        for uri in [
            format!("/api/room/{id}/websocket"),
            format!("/room/{id}/websocket"),
            format!("/ws?room={id}"),
        ] {
            let (status, body) = get(&f.state, &uri).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert!(body.starts_with("Unknown room id"), "{uri}: {body}");
        }
    }
    f.rt.shutdown().await;
    other.rt.shutdown().await;
}

#[tokio::test]
async fn room_names_up_to_32_characters() {
    let f = fixture();
    let ok = "n".repeat(32);
    let long = "n".repeat(33);
    // 32 two-byte characters, percent-encoded: still 32 characters.
    let accents = "%C3%A9".repeat(32);
    assert_eq!(
        get(&f.state, &format!("/api/room/{ok}/websocket")).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&f.state, &format!("/api/room/{accents}/websocket"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&f.state, &format!("/room/{ok}/websocket")).await.0,
        StatusCode::UPGRADE_REQUIRED
    );
    assert_eq!(
        get(&f.state, &format!("/ws?room={ok}")).await.0,
        StatusCode::UPGRADE_REQUIRED
    );
    let too_long = (StatusCode::NOT_FOUND, "Name too long".to_owned());
    assert_eq!(
        get(&f.state, &format!("/api/room/{long}/websocket")).await,
        too_long
    );
    assert_eq!(
        get(&f.state, &format!("/room/{long}/websocket")).await,
        too_long
    );
    assert_eq!(get(&f.state, &format!("/ws?room={long}")).await, too_long);
    // Uppercase hex is not an id: it is a 64-character name.
    let upper = "0123456789ABCDEF".repeat(4);
    assert_eq!(
        get(&f.state, &format!("/api/room/{upper}/websocket")).await,
        too_long
    );
    f.rt.shutdown().await;
}

#[tokio::test]
async fn c_names_over_32_characters_are_refused_before_the_upgrade() {
    let f = fixture();
    let ok = "c".repeat(32);
    let (status, _, body) = send(
        &f.state,
        upgrade(&format!("/ws?room=r&name=%20{ok}%20"), Body::empty()),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "passes the name check; refused as not upgradable under oneshot"
    );
    assert_ne!(body, "Name too long.");
    let (status, _, body) = send(
        &f.state,
        upgrade(&format!("/ws?room=r&name={ok}c"), Body::empty()),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_REQUEST, "Name too long.")
    );
    f.rt.shutdown().await;
}

#[tokio::test]
async fn request_bodies_are_bounded() {
    let f = fixture();
    let big = Body::from(vec![b'x'; chat_demo::MAX_BODY_BYTES + 1]);
    let (status, _, _) = send(&f.state, upgrade("/api/room/general/websocket", big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Within the bound, the request passes, and is refused only because
    // `oneshot` has no connection to upgrade.
    let small = Body::from(vec![b'x'; 16]);
    let (status, _, body) = send(&f.state, upgrade("/api/room/general/websocket", small)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    f.rt.shutdown().await;
}

#[tokio::test]
async fn no_room_is_activated_before_a_complete_handshake() {
    let f = fixture();
    let partial = |headers: &[(&str, &str)]| {
        let mut req = Request::get("/api/room/general/websocket");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Body::empty()).expect("request")
    };
    let cases = [
        partial(&[("upgrade", "websocket")]),
        partial(&[("upgrade", "websocket"), ("connection", "upgrade")]),
        partial(&[
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-version", "8"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]),
        partial(&[
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "short"),
        ]),
        // Complete, but `oneshot` has no connection to upgrade.
        upgrade("/api/room/general/websocket", Body::empty()),
        upgrade("/room/general/websocket", Body::empty()),
        upgrade("/ws?room=general&name=bob", Body::empty()),
    ];
    for req in cases {
        let what = format!("{:?}", req.headers());
        let (status, _, body) = send(&f.state, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
        assert!(body.starts_with("Bad WebSocket handshake: "), "{body}");
    }
    assert_eq!(f.state.rooms().live_count(), 0, "no room was activated");
    f.rt.shutdown().await;
}
