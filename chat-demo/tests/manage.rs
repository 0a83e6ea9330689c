//! Extension `manage`: claiming a room, its topic, deleting it; ownership,
//! topic and deletion survive a restart, and a deleted room's name starts
//! empty.

mod common;

use axum::body::Body;
use common::{Client, Ending, Server, Setup, chat_of};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The names `GET /api/rooms` lists.
async fn listed(server: &Server) -> Vec<String> {
    let req = http::Request::get("/api/rooms")
        .body(Body::empty())
        .expect("request");
    let resp = chat_demo::app(server.state.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let page: Value = serde_json::from_slice(&body).expect("JSON");
    page["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_owned())
        .collect()
}

fn error(text: &str) -> Value {
    json!({ "error": text })
}

fn room(owned: bool, topic: &str) -> Value {
    json!({ "room": { "owned": owned, "topic": topic, "password": false } })
}

/// A manager joining `owned`: its hello, then the `room` frame.
async fn manager(server: &Server, name: &str) -> (Client, Vec<Value>, Value) {
    let (mut client, before) = server.a_named_ext("owned", name, &["manage"]).await;
    let state = client.json().await;
    (client, before, state)
}

#[tokio::test]
async fn claim_topic_delete_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, _, state) = manager(&server, "alice").await;
    assert_eq!(state, room(false, ""), "unclaimed, as every room starts");
    let (mut bob, _, _) = manager(&server, "bob").await;
    let (mut carl, _) = server.a_named("owned", "carl").await;
    assert_eq!(alice.json().await, json!({ "joined": "bob" }));
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.json().await, json!({ "joined": "carl" }));
    }

    alice.send_json(json!({ "claim": true })).await;
    let owner = alice.json().await;
    let token = owner["owner"]["token"].as_str().expect("token").to_owned();
    assert_eq!(token.len(), 64);
    assert_eq!(alice.json().await, room(true, ""));
    assert_eq!(bob.json().await, room(true, ""), "told, without the token");

    bob.send_json(json!({ "claim": true })).await;
    assert_eq!(bob.json().await, error("This room already has an owner."));
    bob.send_json(json!({ "topic": { "token": "guess", "topic": "mine" } }))
        .await;
    assert_eq!(bob.json().await, error("Wrong owner token."));
    alice
        .send_json(json!({ "topic": { "token": token, "topic": "Weekly <b>sync</b>" } }))
        .await;
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.json().await, room(true, "Weekly <b>sync</b>"));
    }
    carl.send_json(json!({ "claim": true })).await;
    assert_eq!(
        carl.json().await,
        error(r#"Expected an object with a "message" field."#),
        "not opted in: not understood"
    );
    alice.say("before the restart").await;
    for c in [&mut alice, &mut bob, &mut carl] {
        assert_eq!(
            chat_of(&c.json().await).1,
            "before the restart",
            "nothing else came"
        );
    }
    server.stop().await;
    drop((alice, bob, carl));

    // Ownership and topic are stored.
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, backlog, state) = manager(&server, "alice").await;
    assert_eq!(state, room(true, "Weekly <b>sync</b>"));
    assert_eq!(backlog.len(), 1);
    let (mut bob, _, _) = manager(&server, "bob").await;
    assert_eq!(alice.json().await, json!({ "joined": "bob" }));
    let mut cat = server.c("room=owned&name=cat").await;
    assert_eq!(cat.json().await["message"], "before the restart", "history");
    let mut bee = server.b("owned").await;
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.json().await, json!({ "joined": "cat" }));
    }
    bob.send_json(json!({ "delete": { "token": "guess" } }))
        .await;
    assert_eq!(bob.json().await, error("Wrong owner token."));

    // The owner deletes the room: every socket of every dialect is closed
    // with the reason; the history and the directory entry are gone.
    alice
        .send_json(json!({ "delete": { "token": token } }))
        .await;
    let deleted = Ending::Close(4001, "This room was deleted by its owner.".into());
    for c in [&mut alice, &mut bob, &mut cat, &mut bee] {
        assert_eq!(c.ending().await, deleted);
    }
    assert_eq!(
        listed(&server).await,
        Vec::<String>::new(),
        "out of the directory"
    );
    let (mut fresh, backlog, state) = manager(&server, "fresh").await;
    assert_eq!(backlog, Vec::<Value>::new(), "no roster, no history");
    assert_eq!(state, room(false, ""), "the name is free again");
    fresh.say("a new start").await;
    assert_eq!(chat_of(&fresh.json().await).1, "a new start");
    assert_eq!(listed(&server).await, ["owned"], "listed again once used");
    server.stop().await;
    drop(fresh);

    // After a restart the deleted history stays deleted.
    let server = Server::start(dir.path(), Setup::default()).await;
    let (_, backlog, state) = manager(&server, "later").await;
    assert_eq!(
        backlog.iter().map(|f| chat_of(f).1).collect::<Vec<_>>(),
        ["a new start"]
    );
    assert_eq!(state, room(false, ""));
    server.stop().await;
}
