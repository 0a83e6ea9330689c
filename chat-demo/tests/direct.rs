//! Extension `dm`: a direct message reaches the two parties' sockets and
//! nobody else, live or from history, even someone who joins later under
//! the recipient's name; and names held by a key cannot be taken.

mod common;

use common::{Client, Server, Setup, T0, chat_of};
use serde_json::{Value, json};

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef";
const EVE: &str = "eve-key-0123456789abcdef";

fn dm(from: &str, to: &str, message: &str, timestamp: u64) -> Value {
    json!({ "dm": { "from": from, "to": to, "message": message, "timestamp": timestamp } })
}

/// A dialect-A client with `dm` and `key`; returns it with the frames
/// after `ready` that came with the hello (its direct messages), read up to
/// `expect_after` of them.
async fn keyed(server: &Server, room: &str, name: &str, key: &str) -> (Client, Vec<Value>) {
    let mut client = server.a(room).await;
    client
        .send_json(json!({ "name": name, "ext": ["dm"], "key": key }))
        .await;
    let before = client.json_until_ready().await;
    (client, before)
}

#[tokio::test]
async fn direct_messages_reach_only_the_two_parties_live_and_from_history() {
    only_the_two_parties(Setup::default()).await;
}

/// The same with the room leaving memory after every event: who holds
/// which key lives in the sockets' attachments, not in the instance.
#[tokio::test]
async fn direct_messages_stay_private_in_a_room_that_hibernates_after_every_event() {
    only_the_two_parties(Setup {
        hibernation: std::time::Duration::ZERO,
        ..Setup::default()
    })
    .await;
}

async fn only_the_two_parties(setup: Setup) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), setup.clone()).await;
    let (mut alice, _) = keyed(&server, "dms", "alice", ALICE).await;
    let (mut alice_tab, _) = keyed(&server, "dms", "alice", ALICE).await;
    let (mut bob, _) = keyed(&server, "dms", "bob", BOB).await;
    let (mut eve, _) = keyed(&server, "dms", "eve", EVE).await;
    let (mut plain, _) = server.a_named("dms", "plain").await;
    let mut cat = server.c("room=dms&name=cat&ext=presence,typing").await;
    let mut bee = server.b("dms").await;
    // Drain the joins.
    for (client, joins) in [
        (&mut alice, 5),
        (&mut alice_tab, 4),
        (&mut bob, 3),
        (&mut eve, 2),
        (&mut plain, 1),
    ] {
        for _ in 0..joins {
            assert!(client.json().await.get("joined").is_some());
        }
    }

    alice
        .send_json(json!({ "dm": { "to": "bob", "message": "psst, bob" } }))
        .await;
    let sent = dm("alice", "bob", "psst, bob", T0);
    for c in [&mut alice, &mut alice_tab, &mut bob] {
        assert_eq!(c.json().await, sent, "both parties, every socket");
    }
    bob.send_json(json!({ "dm": { "to": "alice", "message": "hi alice" } }))
        .await;
    let reply = dm("bob", "alice", "hi alice", T0 + 1);
    for c in [&mut alice, &mut alice_tab, &mut bob] {
        assert_eq!(c.json().await, reply);
    }

    // Errors: nobody of that name holds a key (a compat user, a C user,
    // nobody); a session without dm; a malformed request.
    for to in ["plain", "cat", "nobody"] {
        alice
            .send_json(json!({ "dm": { "to": to, "message": "x" } }))
            .await;
        assert_eq!(
            alice.json().await,
            json!({ "error": "Nobody of that name can get direct messages in this room right now." })
        );
    }
    plain
        .send_json(json!({ "dm": { "to": "bob", "message": "x" } }))
        .await;
    assert_eq!(
        plain.json().await,
        json!({ "error": "Expected an object with a \"message\" field." })
    );
    alice
        .send_json(json!({ "dm": { "to": "bob", "message": "   " } }))
        .await;
    assert!(
        alice.json().await["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"dm\""))
    );

    // Nobody else got anything: their next frame is this chat message.
    eve.say("sentinel").await;
    for c in [&mut alice, &mut alice_tab, &mut bob, &mut eve, &mut plain] {
        assert_eq!(chat_of(&c.json().await).1, "sentinel");
    }
    // Cat opted in to presence and got those frames; nothing else.
    loop {
        let frame = cat.json().await;
        assert!(frame.get("dm").is_none(), "{frame}");
        if frame["message"] == "sentinel" {
            break;
        }
        assert!(frame.get("presence").is_some(), "{frame}");
    }
    assert_eq!(bee.text().await, "eve: sentinel");

    // While bob is here, no other key may take his name.
    let mut imposter = server.a("dms").await;
    imposter
        .send_json(json!({ "name": "bob", "ext": ["dm"], "key": EVE }))
        .await;
    assert_eq!(
        imposter.json().await,
        json!({ "error": "That name is in use by someone else in this room." })
    );

    // Bob leaves; eve's key takes the name "bob" and finds no messages:
    // history follows the key, not the name.
    bob.close().await;
    for c in [&mut alice, &mut alice_tab, &mut eve, &mut plain] {
        assert_eq!(c.json().await, json!({ "quit": "bob" }));
    }
    imposter
        .send_json(json!({ "name": "bob", "ext": ["dm"], "key": EVE }))
        .await;
    let frames = imposter.json_until_ready().await;
    assert!(frames.iter().all(|f| f.get("dm").is_none()), "{frames:?}");
    imposter.say("am I bob?").await;
    assert_eq!(chat_of(&imposter.json().await).1, "am I bob?");
    // A compat client (no key) may still use a held name, alice; it gets
    // none of her messages either.
    let (mut compat_alice, frames) = server.a_named("dms", "alice").await;
    assert!(frames.iter().all(|f| f.get("dm").is_none()));
    compat_alice.say("and me?").await;
    assert_eq!(chat_of(&compat_alice.json().await).1, "and me?");
    drop((imposter, compat_alice));
    server.stop().await;
    drop((alice, alice_tab, eve, plain, cat, bee));

    // After a restart the real bob, by his key, gets both messages after
    // ready, oldest first; and they kept the room's timestamps in order.
    let server = Server::start(dir.path(), setup).await;
    let mut bob = server.a("dms").await;
    bob.send_json(json!({ "name": "bob", "ext": ["dm"], "key": BOB }))
        .await;
    let backlog = bob.json_until_ready().await;
    assert!(
        backlog.iter().all(|f| f.get("dm").is_none()),
        "not in the backlog"
    );
    assert_eq!(bob.json().await, sent);
    assert_eq!(bob.json().await, reply);
    bob.say("back").await;
    let frame = bob.json().await;
    assert_eq!(chat_of(&frame).1, "back");
    assert!(chat_of(&frame).2 > T0 + 1, "after every stored id");
    server.stop().await;
}

#[tokio::test]
async fn a_key_is_checked_and_read_only_with_dm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let mut short = server.a("keys").await;
    short
        .send_json(json!({ "name": "x", "ext": ["dm"], "key": "short" }))
        .await;
    assert_eq!(
        short.json().await,
        json!({ "error": "Expected \"key\" to be 16 to 128 letters, digits, \"-\" or \"_\"." })
    );
    // Without dm a key is one more ignored field: no name is held.
    let mut first = server.a("keys").await;
    first
        .send_json(json!({ "name": "same", "key": "not even checked" }))
        .await;
    first.json_until_ready().await;
    let (_, frames) = keyed(&server, "keys", "same", ALICE).await;
    assert_eq!(
        frames,
        vec![json!({ "joined": "same" }), json!({ "joined": "same" })]
    );
    server.stop().await;
}

#[tokio::test]
async fn direct_messages_expire_with_the_history_retention() {
    let hour = 3_600_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        history_retention: Some(std::time::Duration::from_millis(hour)),
        ..Setup::default()
    };
    let server = Server::start(dir.path(), setup).await;
    let (mut alice, _) = keyed(&server, "old", "alice", ALICE).await;
    let (mut bob, _) = keyed(&server, "old", "bob", BOB).await;
    assert_eq!(alice.json().await, json!({ "joined": "bob" }));
    alice
        .send_json(json!({ "dm": { "to": "bob", "message": "soon gone" } }))
        .await;
    assert_eq!(bob.json().await, dm("alice", "bob", "soon gone", T0));
    alice.json().await;
    bob.close().await;
    assert_eq!(alice.json().await, json!({ "quit": "bob" }));

    server.clock.advance(hour + 1);
    server.rt.wake_alarms();
    server.rt.alarms_settled().await;
    let room = server.state.rooms().id_from_name("old");
    let keys: Vec<String> = server
        .state
        .rooms()
        .export(&room)
        .expect("export")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        keys.iter()
            .all(|k| !k.starts_with("dmk/") && !k.starts_with("dmt/")),
        "{keys:?}"
    );
    let (mut bob, _) = keyed(&server, "old", "bob", BOB).await;
    bob.say("anything left?").await;
    assert_eq!(
        chat_of(&bob.json().await).1,
        "anything left?",
        "no direct message after ready"
    );
    server.stop().await;
}
