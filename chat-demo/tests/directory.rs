//! The public room directory: rooms report to it (coalesced), private
//! rooms never appear, `GET /api/rooms` pages through it, and it survives
//! a restart.

mod common;

use axum::body::Body;
use common::{Server, Setup, T0, chat_of};
use http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// `GET uri` through the app; the JSON body.
///
/// A room queues its report to the directory inside the event whose frames
/// the test has just read, so a listing asked for afterwards is queued
/// behind it: no waiting needed.
async fn get(server: &Server, uri: &str) -> Value {
    let req = Request::get(uri).body(Body::empty()).expect("request");
    let resp = chat_demo::app(server.state.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&body).expect("JSON")
}

fn room(name: &str, online: u32, last: u64) -> Value {
    json!({ "name": name, "online": online, "lastActivity": last })
}

#[tokio::test]
async fn rooms_report_coalesced_and_private_rooms_never_appear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    assert_eq!(
        get(&server, "/api/rooms").await,
        json!({ "rooms": [], "next": null })
    );

    let (mut alice, _) = server.a_named("lobby", "alice").await;
    assert_eq!(
        get(&server, "/api/rooms").await["rooms"],
        json!([room("lobby", 1, 0)])
    );
    alice.say("hi").await;
    assert_eq!(chat_of(&alice.json().await).2, T0);
    assert_eq!(
        get(&server, "/api/rooms").await["rooms"],
        json!([room("lobby", 1, T0)]),
        "the first message is reported at once"
    );
    server.clock.advance(1_000);
    alice.say("again").await;
    alice.json().await;
    assert_eq!(
        get(&server, "/api/rooms").await["rooms"],
        json!([room("lobby", 1, T0)]),
        "coalesced: not one report per message"
    );
    server.clock.advance(60_000);
    alice.say("later").await;
    alice.json().await;
    assert_eq!(
        get(&server, "/api/rooms").await["rooms"],
        json!([room("lobby", 1, T0 + 61_000)])
    );

    // Every dialect counts; a private room is never listed.
    let mut cat = server.c("room=lobby&name=cat").await;
    assert_eq!(alice.json().await, json!({ "joined": "cat" }));
    let _bee = server.b("other").await;
    let private = server.state.rooms().new_unique_id().expect("id").to_hex();
    let (mut secret, _) = server.a_named(&private, "spy").await;
    secret.say("hidden").await;
    secret.json().await;
    assert_eq!(
        get(&server, "/api/rooms").await,
        json!({ "rooms": [room("lobby", 2, T0 + 61_000), room("other", 1, 0)], "next": null })
    );
    // Paged in name order.
    let first = get(&server, "/api/rooms?limit=1").await;
    assert_eq!(
        first,
        json!({ "rooms": [room("lobby", 2, T0 + 61_000)], "next": "lobby" })
    );
    assert_eq!(
        get(&server, "/api/rooms?limit=1&after=lobby").await,
        json!({ "rooms": [room("other", 1, 0)], "next": null })
    );
    cat.say("bye").await;
    chat_of(&alice.json().await);
    drop(cat);
    assert_eq!(alice.json().await, json!({ "quit": "cat" }));
    assert_eq!(
        get(&server, "/api/rooms?limit=1").await["rooms"],
        json!([room("lobby", 1, T0 + 61_001)]),
        "a leave reports the count, and with it the latest activity"
    );
    server.stop().await;
    drop((alice, secret));

    // The directory is stored: after a restart it lists what it last knew.
    let server = Server::start(dir.path(), Setup::default()).await;
    assert_eq!(
        get(&server, "/api/rooms?limit=1").await["rooms"],
        json!([room("lobby", 1, T0 + 61_001)])
    );
    server.stop().await;
}
