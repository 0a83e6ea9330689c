//! Extensions `threads` and `reactions`: who receives what in each
//! dialect, the errors, and that both survive a restart.

mod common;

use common::{Client, Server, Setup, T0, chat_of};
use serde_json::{Value, json};

const EXT: &[&str] = &["threads", "reactions"];

fn joined(name: &str) -> Value {
    json!({ "joined": name })
}

fn error(text: &str) -> Value {
    json!({ "error": text })
}

fn update(id: u64, reactions: Value) -> Value {
    json!({ "reactions": { "id": id, "reactions": reactions } })
}

fn react(id: u64, emoji: &str, on: bool) -> Value {
    json!({ "react": { "id": id, "emoji": emoji, "on": on } })
}

/// The room `talk`: alice and carol opted in, bob is a compat A client,
/// cat a C client, bee a B client; everyone has read everything so far.
async fn room(server: &Server) -> (Client, Client, Client, Client, Client) {
    let (mut alice, _) = server.a_named_ext("talk", "alice", EXT).await;
    let (bob, _) = server.a_named("talk", "bob").await;
    assert_eq!(alice.json().await, joined("bob"));
    let mut cat = server.c("room=talk&name=cat").await;
    let bee = server.b("talk").await;
    let (carol, _) = server.a_named_ext("talk", "carol", EXT).await;
    let mut bob = bob;
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.json().await, joined("cat"));
        assert_eq!(c.json().await, joined("carol"));
    }
    assert_eq!(
        cat.json().await,
        json!({ "message": "joined the chat", "name": "carol" })
    );
    (alice, bob, cat, bee, carol)
}

#[tokio::test]
async fn replies_carry_their_parent_only_to_sessions_that_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, mut bob, mut cat, mut bee, mut carol) = room(&server).await;

    alice.say("root").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(
            chat_of(&c.json().await),
            ("alice".into(), "root".into(), T0)
        );
    }
    assert_eq!(cat.json().await["message"], "root");
    assert_eq!(bee.text().await, "alice: root");

    carol
        .send_json(json!({ "message": "a reply", "replyTo": T0 }))
        .await;
    let with_parent =
        json!({ "name": "carol", "message": "a reply", "timestamp": T0 + 1, "replyTo": T0 });
    assert_eq!(alice.json().await, with_parent);
    assert_eq!(carol.json().await, with_parent);
    assert_eq!(
        bob.json().await,
        json!({ "name": "carol", "message": "a reply", "timestamp": T0 + 1 }),
        "a compat client gets the three fields"
    );
    let at_cat = cat.json().await;
    assert_eq!(at_cat["message"], "a reply");
    assert_eq!(at_cat.get("replyTo"), None);
    assert_eq!(bee.text().await, "carol: a reply");

    // A reply to a message the room does not hold is refused, not stored.
    carol
        .send_json(json!({ "message": "into the void", "replyTo": T0 + 99 }))
        .await;
    assert_eq!(carol.json().await, error("No such message."));
    carol
        .send_json(json!({ "message": "x", "replyTo": -1 }))
        .await;
    assert_eq!(
        carol.json().await,
        error(r#"Expected "replyTo" to be a message id."#)
    );
    // A compat client's `replyTo` is one more field it ignores.
    bob.send_json(json!({ "message": "plain", "replyTo": T0 }))
        .await;
    assert_eq!(
        alice.json().await,
        json!({ "name": "bob", "message": "plain", "timestamp": T0 + 2 }),
        "no replyTo: bob did not opt in; the refused reply took no timestamp"
    );
    server.stop().await;
}

#[tokio::test]
async fn reactions_reach_only_sessions_that_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, mut bob, mut cat, mut bee, mut carol) = room(&server).await;
    alice.say("react to me").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(chat_of(&c.json().await).2, T0);
    }
    cat.json().await;
    bee.text().await;

    alice.send_json(react(T0, "👍", true)).await;
    let one = update(T0, json!([{ "emoji": "👍", "users": ["alice"] }]));
    assert_eq!(alice.json().await, one);
    assert_eq!(carol.json().await, one);
    carol.send_json(react(T0, "👍", true)).await;
    carol.send_json(react(T0, "🎉", true)).await;
    let two = update(T0, json!([{ "emoji": "👍", "users": ["alice", "carol"] }]));
    let three = update(
        T0,
        json!([
            { "emoji": "👍", "users": ["alice", "carol"] },
            { "emoji": "🎉", "users": ["carol"] },
        ]),
    );
    for c in [&mut alice, &mut carol] {
        assert_eq!(c.json().await, two);
        assert_eq!(c.json().await, three);
    }
    // Repeating a reaction changes nothing and sends nothing; removing one
    // sends the whole new list.
    alice.send_json(react(T0, "👍", true)).await;
    alice.send_json(react(T0, "👍", false)).await;
    let four = update(
        T0,
        json!([
            { "emoji": "👍", "users": ["carol"] },
            { "emoji": "🎉", "users": ["carol"] },
        ]),
    );
    assert_eq!(alice.json().await, four);
    assert_eq!(carol.json().await, four);

    // Errors: unknown message, bad emoji, a compat client's request.
    server.clock.advance(60_000); // a fresh rate budget for everyone
    alice.send_json(react(T0 + 5, "👍", true)).await;
    assert_eq!(alice.json().await, error("No such message."));
    alice.send_json(react(T0, "two words", true)).await;
    let bad = alice.json().await;
    assert!(
        bad["error"].as_str().is_some_and(|e| e.contains("react")),
        "{bad}"
    );
    bob.send_json(react(T0, "👍", true)).await;
    assert_eq!(
        bob.json().await,
        error(r#"Expected an object with a "message" field."#),
        "not opted in: not understood"
    );

    // Nobody else saw any of it: their next frame is the next message.
    carol.say("next").await;
    assert_eq!(chat_of(&alice.json().await).1, "next");
    assert_eq!(chat_of(&bob.json().await).1, "next");
    assert_eq!(cat.json().await["message"], "next");
    assert_eq!(bee.text().await, "carol: next");
    assert_eq!(chat_of(&carol.json().await).1, "next");
    server.stop().await;
}

#[tokio::test]
async fn reactions_are_charged_to_the_rate_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, _) = server.a_named_ext("budget", "alice", EXT).await;
    alice.say("m").await;
    alice.json().await;
    // Four more writes fit the burst of five; the sixth is refused.
    for (n, emoji) in ["a", "b", "c", "d"].iter().enumerate() {
        alice.send_json(react(T0, emoji, true)).await;
        let frame = alice.json().await;
        assert_eq!(
            frame["reactions"]["reactions"].as_array().map(Vec::len),
            Some(n + 1)
        );
    }
    alice.send_json(react(T0, "e", true)).await;
    assert_eq!(
        alice.json().await,
        error("Your IP is being rate-limited, please try again later.")
    );
    server.stop().await;
}

#[tokio::test]
async fn replies_and_reactions_survive_a_restart_and_reach_history_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, _) = server.a_named_ext("kept", "alice", EXT).await;
    alice.say("root").await;
    alice.json().await;
    alice
        .send_json(json!({ "message": "child", "replyTo": T0 }))
        .await;
    alice.json().await;
    alice.send_json(react(T0, "❤️", true)).await;
    alice.json().await;
    server.stop().await;
    drop(alice);

    let server = Server::start(dir.path(), Setup::default()).await;
    let (_bob, backlog) = server.a_named_ext("kept", "bob", EXT).await;
    assert_eq!(
        backlog,
        vec![
            json!({ "name": "alice", "message": "root", "timestamp": T0,
                    "reactions": [{ "emoji": "❤️", "users": ["alice"] }] }),
            json!({ "name": "alice", "message": "child", "timestamp": T0 + 1, "replyTo": T0 }),
        ]
    );
    let (_, compat) = server.a_named("kept", "cid").await;
    assert_eq!(compat[0], joined("bob"));
    assert_eq!(
        compat[1..],
        [
            json!({ "name": "alice", "message": "root", "timestamp": T0 }),
            json!({ "name": "alice", "message": "child", "timestamp": T0 + 1 }),
        ],
        "after the roster (bob): the plain three fields"
    );
    let (mut pager, _) = server
        .a_named_ext("kept", "pager", &["history", "reactions"])
        .await;
    pager
        .send_json(json!({ "history": { "before": T0 + 2, "limit": 10 } }))
        .await;
    assert_eq!(
        pager.json().await,
        json!({ "history": { "more": false, "messages": [
            { "name": "alice", "message": "root", "timestamp": T0,
              "reactions": [{ "emoji": "❤️", "users": ["alice"] }] },
            { "name": "alice", "message": "child", "timestamp": T0 + 1 },
        ] } }),
        "reactions without threads: no replyTo"
    );
    server.stop().await;
}
