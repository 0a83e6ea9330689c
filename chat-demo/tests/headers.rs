//! What every answer of the chat router carries: the page's security
//! headers and compression, `nosniff` and `no-referrer` everywhere, the
//! request body limit. Through `oneshot`, and once through a real socket.

use std::io::Read;

use axum::body::Body;
use chat_demo::{AppState, ChatOptions, app};
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

async fn send(state: &AppState, req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let resp = app(state.clone()).oneshot(req).await.expect("infallible");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, bytes.to_vec())
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .to_str()
        .expect("visible ASCII")
}

#[tokio::test]
async fn the_page_forbids_framing_and_runs_only_its_own_code() {
    let f = fixture();
    let (status, headers, body) = send(
        &f.state,
        Request::get("/").body(Body::empty()).expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.get(header::CONTENT_ENCODING).is_none(),
        "{headers:?}"
    );
    let policy = header_text(&headers, header::CONTENT_SECURITY_POLICY);
    for directive in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "connect-src 'self'",
        "base-uri 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} missing: {policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    // One hash per inline script of the page as served.
    let page = String::from_utf8(body).expect("UTF-8 page");
    let script_src = policy
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src "))
        .expect("script-src");
    assert_eq!(
        script_src.matches("'sha256-").count(),
        page.matches("<script>").count(),
        "{script_src}"
    );
    assert!(page.contains("<script>"), "the page has no inline script");
    assert_eq!(header_text(&headers, header::X_FRAME_OPTIONS), "DENY");
    assert_eq!(
        header_text(&headers, header::X_CONTENT_TYPE_OPTIONS),
        "nosniff"
    );
    assert_eq!(
        header_text(&headers, header::REFERRER_POLICY),
        "no-referrer"
    );
    assert_eq!(header_text(&headers, header::CACHE_CONTROL), "no-cache");
    f.rt.shutdown().await;
}

#[tokio::test]
async fn the_page_is_gzipped_for_clients_that_take_it() {
    let f = fixture();
    let plain = send(
        &f.state,
        Request::get("/").body(Body::empty()).expect("request"),
    )
    .await;
    let req = Request::get("/")
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::empty())
        .expect("request");
    let (status, headers, gzipped) = send(&f.state, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header_text(&headers, header::CONTENT_ENCODING), "gzip");
    assert!(
        gzipped.len() < plain.2.len() / 2,
        "{} of {}",
        gzipped.len(),
        plain.2.len()
    );
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(gzipped.as_slice())
        .read_to_end(&mut inflated)
        .expect("valid gzip");
    assert_eq!(inflated, plain.2);
    // The compressed answer keeps the page's headers.
    assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
    f.rt.shutdown().await;
}

#[tokio::test]
async fn every_answer_says_nosniff_and_no_referrer() {
    let f = fixture();
    let requests = [
        Request::get("/nowhere")
            .body(Body::empty())
            .expect("request"),
        Request::post("/api/room")
            .body(Body::empty())
            .expect("request"),
        Request::get("/api/room/general/websocket")
            .body(Body::empty())
            .expect("request"),
        Request::get("/ws?room=general")
            .body(Body::empty())
            .expect("request"),
    ];
    let mut statuses = Vec::new();
    for req in requests {
        let (status, headers, _) = send(&f.state, req).await;
        statuses.push(status.as_u16());
        assert_eq!(
            header_text(&headers, header::X_CONTENT_TYPE_OPTIONS),
            "nosniff"
        );
        assert_eq!(
            header_text(&headers, header::REFERRER_POLICY),
            "no-referrer"
        );
        // Only the page needs a policy; the API answers are not documents.
        assert!(!headers.contains_key(header::CONTENT_SECURITY_POLICY));
    }
    assert_eq!(statuses, [404, 200, 400, 426]);
    f.rt.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_any_handler() {
    let f = fixture();
    let big = vec![b'x'; chat_demo::MAX_BODY_BYTES + 1];
    // POST /api/room does not read its body, so only the layer can refuse
    // it, from the declared length.
    let req = Request::post("/api/room")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big))
        .expect("request");
    let (status, headers, _) = send(&f.state, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        header_text(&headers, header::X_CONTENT_TYPE_OPTIONS),
        "nosniff"
    );
    let fits = vec![b'x'; chat_demo::MAX_BODY_BYTES];
    let req = Request::post("/api/room")
        .header(header::CONTENT_LENGTH, fits.len())
        .body(Body::from(fits))
        .expect("request");
    assert_eq!(send(&f.state, req).await.0, StatusCode::OK);
    f.rt.shutdown().await;
}

#[tokio::test]
async fn a_real_server_sends_the_same_headers() {
    let f = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chat_demo::serve(listener, f.state.clone(), async {
        let _ = stopped.await;
    }));
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: chat\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.expect("read");
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&answer[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    for line in [
        "content-encoding: gzip",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
        "x-frame-options: deny",
    ] {
        assert!(head.contains(line), "{line} missing:\n{head}");
    }
    assert!(head.contains("frame-ancestors 'none'"), "{head}");
    let _ = stop.send(());
    server.await.expect("server task").expect("serve");
    f.rt.shutdown().await;
}
