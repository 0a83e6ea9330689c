//! Presence for dialect C (opt-in by query) and the typing extension:
//! who gets what, and that clients which did not ask get nothing.

mod common;

use common::{Server, Setup, chat_of};
use serde_json::{Value, json};

fn presence(count: usize, users: &[&str]) -> Value {
    json!({ "presence": { "count": count, "users": users } })
}

fn typing(name: &str) -> Value {
    json!({ "typing": { "name": name } })
}

#[tokio::test]
async fn c_clients_opt_in_to_presence_by_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let mut plain = server.c("room=pc&name=plain").await;
    let mut cee = server.c("room=pc&name=cee&ext=presence").await;
    assert_eq!(
        plain.json().await,
        json!({ "message": "joined the chat", "name": "cee" })
    );
    assert_eq!(cee.json().await, presence(2, &["plain", "cee"]));

    let unnamed = server.a("pc").await;
    assert_eq!(
        cee.json().await,
        presence(3, &["plain", "cee"]),
        "an A socket before its hello counts, unnamed"
    );
    let mut bee = server.b("pc").await;
    assert_eq!(cee.json().await, presence(4, &["plain", "cee"]));
    unnamed.close().await;
    assert_eq!(cee.json().await, presence(3, &["plain", "cee"]));
    let (alice, _) = server.a_named("pc", "alice").await;
    assert_eq!(
        cee.json().await,
        presence(4, &["plain", "cee"]),
        "connected"
    );
    assert_eq!(
        cee.json().await,
        json!({ "message": "joined the chat", "name": "alice" })
    );
    assert_eq!(cee.json().await, presence(4, &["plain", "cee", "alice"]));
    alice.close().await;
    assert_eq!(
        cee.json().await,
        json!({ "message": "left the chat", "name": "alice" })
    );
    assert_eq!(cee.json().await, presence(3, &["plain", "cee"]));

    // The plain C client saw only the notices; B saw nothing at all.
    assert_eq!(
        plain.json().await,
        json!({ "message": "joined the chat", "name": "alice" })
    );
    assert_eq!(
        plain.json().await,
        json!({ "message": "left the chat", "name": "alice" })
    );
    cee.say("hi").await;
    assert_eq!(chat_of(&plain.json().await).1, "hi");
    assert_eq!(bee.text().await, "cee: hi");
    server.stop().await;
}

#[tokio::test]
async fn typing_reaches_only_opted_in_sessions_throttled_and_never_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, _) = server.a_named_ext("ty", "alice", &["typing"]).await;
    let (mut bob, _) = server.a_named_ext("ty", "bob", &["typing"]).await;
    let (mut carl, _) = server.a_named("ty", "carl").await;
    let mut cee = server.c("room=ty&name=cee&ext=typing").await;
    let mut dee = server.c("room=ty&name=dee").await;
    let mut bee = server.b("ty").await;
    // Drain the joins.
    for (client, joins) in [(&mut alice, 4), (&mut bob, 3), (&mut carl, 2)] {
        for _ in 0..joins {
            assert!(client.json().await.get("joined").is_some());
        }
    }
    assert_eq!(cee.json().await["name"], "dee");

    alice.send_json(json!({ "typing": true })).await;
    assert_eq!(bob.json().await, typing("alice"));
    assert_eq!(cee.json().await, typing("alice"));
    // Throttled: a second signal within 2 s is dropped; later it passes.
    alice.send_json(json!({ "typing": true })).await;
    server.clock.advance(2_000);
    cee.send_json(json!({ "typing": true })).await;
    assert_eq!(alice.json().await, typing("cee"));
    assert_eq!(bob.json().await, typing("cee"));
    alice.send_json(json!({ "typing": true })).await;
    assert_eq!(bob.json().await, typing("alice"));
    assert_eq!(cee.json().await, typing("alice"));

    // A message ends the throttle: the next signal goes through at once.
    alice.send_json(json!({ "typing": true })).await;
    alice.say("sent").await;
    alice.send_json(json!({ "typing": true })).await;
    for c in [&mut alice, &mut bob] {
        assert_eq!(chat_of(&c.json().await).1, "sent");
    }
    assert_eq!(bob.json().await, typing("alice"));
    assert_eq!(chat_of(&carl.json().await).1, "sent");
    assert_eq!(cee.json().await["message"], "sent");
    assert_eq!(cee.json().await, typing("alice"));
    assert_eq!(dee.json().await["message"], "sent");
    assert_eq!(bee.text().await, "alice: sent");

    // Clients that did not opt in: A is told it was not understood, C
    // ignores it as any other frame without a message.
    carl.send_json(json!({ "typing": true })).await;
    assert_eq!(
        carl.json().await,
        json!({ "error": "Expected an object with a \"message\" field." })
    );
    dee.send_json(json!({ "typing": true })).await;
    alice.send_json(json!({ "typing": "yes" })).await;
    assert_eq!(
        alice.json().await,
        json!({ "error": "Expected \"typing\" to be true." })
    );

    // Nobody got anything else: the next frame everywhere is this message.
    bob.say("sentinel").await;
    for c in [&mut alice, &mut bob, &mut carl] {
        assert_eq!(chat_of(&c.json().await).1, "sentinel");
    }
    for c in [&mut cee, &mut dee] {
        assert_eq!(c.json().await["message"], "sentinel");
    }
    assert_eq!(bee.text().await, "bob: sentinel");

    // Never stored: a newcomer's backlog holds the two messages only.
    let (_, backlog) = server.a_named("ty", "late").await;
    let messages: Vec<String> = backlog
        .iter()
        .filter(|f| f.get("timestamp").is_some())
        .map(|f| chat_of(f).1)
        .collect();
    assert_eq!(messages, ["sent", "sentinel"]);
    assert!(backlog.iter().all(|f| f.get("typing").is_none()));
    server.stop().await;
}
