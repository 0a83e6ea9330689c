//! `/healthz` and `/readyz` as documented: ready on a working store; not
//! ready once the store cannot commit a write (a full LMDB map here, as a
//! full disk would be), and not ready once shutdown begins, whether the
//! server said so first or the runtime already refuses events.

use std::sync::Arc;

use axum::body::Body;
use chat_demo::{AppState, ChatOptions, app};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use objects::{Context, Object, Runtime, RuntimeOptions, StoreOptions};
use tower::ServiceExt;

async fn get(state: &AppState, uri: &str) -> (StatusCode, String) {
    let req = Request::get(uri).body(Body::empty()).expect("request");
    let resp = app(state.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8(bytes.to_vec()).expect("UTF-8"))
}

fn open(dir: &std::path::Path, options: RuntimeOptions) -> (Runtime, AppState) {
    let rt = Runtime::builder()
        .data_dir(dir)
        .options(options)
        .open()
        .expect("runtime");
    let state = AppState::new(&rt, ChatOptions::default()).expect("namespaces");
    (rt, state)
}

#[tokio::test]
async fn a_working_server_is_healthy_and_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, state) = open(dir.path(), RuntimeOptions::default());
    assert_eq!(get(&state, "/healthz").await, (StatusCode::OK, "ok".into()));
    assert_eq!(
        get(&state, "/readyz").await,
        (StatusCode::OK, "ready".into())
    );
    // The probe wrote through an object: it has committed data.
    let page = rt.list_objects("health", None, 10).expect("list");
    let probes: Vec<_> = page
        .objects
        .iter()
        .map(|o| (o.name.as_deref(), o.stored))
        .collect();
    assert_eq!(probes, [(Some("readyz"), true)]);
    rt.shutdown().await;
}

#[tokio::test]
async fn readyz_is_503_once_shutdown_begins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, state) = open(dir.path(), RuntimeOptions::default());
    assert_eq!(get(&state, "/readyz").await.0, StatusCode::OK);
    // The server says so first: the answer changes at once, even though a
    // ready verdict was just cached.
    state.begin_shutdown();
    assert_eq!(
        get(&state, "/readyz").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down".into()
        )
    );
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    rt.shutdown().await;
}

#[tokio::test]
async fn readyz_is_503_when_the_runtime_already_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, state) = open(dir.path(), RuntimeOptions::default());
    rt.shutdown().await;
    assert_eq!(
        get(&state, "/readyz").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down".into()
        )
    );
}

/// Writes `size` bytes under key `n` and waits until they are durable.
struct Filler;

impl Object for Filler {
    type Env = ();
    type Call = (u32, usize);
    type Reply = ();
    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, objects::BoxError> {
        Ok(Filler)
    }
    async fn call(
        &mut self,
        ctx: &mut Context,
        (n, size): (u32, usize),
    ) -> Result<(), objects::BoxError> {
        ctx.storage()
            .put_bytes(&format!("k{n:06}"), &vec![0x5a; size])?;
        ctx.storage().sync().await?;
        Ok(())
    }
}

#[tokio::test]
async fn readyz_is_503_when_the_store_cannot_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        RuntimeOptions::default().with_store(StoreOptions::default().with_max_size(1 << 20));
    let (rt, state) = open(dir.path(), options);
    let filler = rt
        .namespace::<Filler>("filler", ())
        .expect("ns")
        .get_by_name("f");
    // Fill the 1 MiB map with big values, then smaller ones, until not even
    // a 16-byte write commits.
    let mut n = 0u32;
    for size in [64 * 1024, 4 * 1024, 256, 16] {
        loop {
            assert!(n < 100_000, "a 1 MiB store took {n} writes");
            n += 1;
            match filler.call((n, size)).await {
                Ok(()) => {}
                Err(e) => {
                    assert!(e.to_string().contains("storage full"), "{e}");
                    break;
                }
            }
        }
    }
    let (status, body) = get(&state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.starts_with("not ready: storage is not writable:") && body.contains("storage full"),
        "{body}"
    );
    // Alive all the same: restarting would not free space.
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    rt.shutdown().await;
}
