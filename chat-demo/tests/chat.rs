//! The three dialects end to end: real sockets on 127.0.0.1, real LMDB.

mod common;

use std::time::Duration;

use common::{Server, Setup, T0, chat_of};
use serde_json::{Value, json};

fn joined(name: &str) -> Value {
    json!({ "joined": name })
}

fn quit(name: &str) -> Value {
    json!({ "quit": name })
}

/// A dialect-C chat frame for a message stamped `T0 + ms` (under a
/// second), with its `serverTime` in ISO 8601.
fn c_chat(message: &str, name: &str, ms: u64) -> Value {
    assert!(ms < 1000);
    json!({
        "message": message,
        "name": name,
        "timestamp": T0 + ms,
        "serverTime": format!("2023-11-14T22:13:20.{ms:03}Z"),
    })
}

/// The two-A-clients flow; `setup` varies hibernation.
async fn two_a_clients_chat(setup: Setup) {
    let hibernates = setup.hibernation.is_zero();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), setup).await;

    let (mut alice, before) = server.a_named("lobby", "alice").await;
    assert_eq!(
        before,
        Vec::<Value>::new(),
        "empty room: no roster, no backlog"
    );
    let (mut bob, before) = server.a_named("lobby", "bob").await;
    assert_eq!(before, vec![joined("alice")], "roster");
    assert_eq!(alice.json().await, joined("bob"));
    if hibernates {
        // The room leaves memory while both sockets stay open.
        server.hibernated().await;
    }

    alice.say("hi bob").await;
    let at_alice = alice.json().await;
    let at_bob = bob.json().await;
    assert_eq!(at_alice, at_bob, "the sender gets its own message too");
    assert_eq!(chat_of(&at_alice), ("alice".into(), "hi bob".into(), T0));
    assert_eq!(
        at_alice.as_object().map(serde_json::Map::len),
        Some(3),
        "exactly name, message, timestamp"
    );

    bob.say("hi alice").await;
    assert_eq!(
        chat_of(&alice.json().await),
        ("bob".into(), "hi alice".into(), T0 + 1)
    );
    assert_eq!(chat_of(&bob.json().await).1, "hi alice");

    bob.close().await;
    assert_eq!(alice.json().await, quit("bob"));

    // A newcomer gets the roster, then the backlog oldest first.
    let (carol, before) = server.a_named("lobby", "carol").await;
    assert_eq!(before.len(), 3, "{before:?}");
    assert_eq!(before[0], joined("alice"));
    assert_eq!(chat_of(&before[1]), ("alice".into(), "hi bob".into(), T0));
    assert_eq!(
        chat_of(&before[2]),
        ("bob".into(), "hi alice".into(), T0 + 1)
    );
    assert_eq!(alice.json().await, joined("carol"));
    if hibernates {
        server.hibernated().await;
    }
    carol.close().await;
    assert_eq!(alice.json().await, quit("carol"));
    server.stop().await;
}

#[tokio::test]
async fn two_a_clients_chat_with_roster_backlog_ready_joined_and_quit() {
    two_a_clients_chat(Setup::default()).await;
}

/// Rooms evicted after every event: every session must live in its
/// socket's attachment, not in the instance.
#[tokio::test]
async fn two_a_clients_chat_in_a_room_that_hibernates_after_every_event() {
    two_a_clients_chat(Setup {
        hibernation: Duration::ZERO,
        ..Setup::default()
    })
    .await;
}

#[tokio::test]
async fn a_gets_nothing_before_its_hello() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let mut shy = server.a("lobby").await;
    let (mut alice, _) = server.a_named("lobby", "alice").await;
    alice.say("anyone?").await;
    assert_eq!(chat_of(&alice.json().await).1, "anyone?");
    alice.close().await;
    // Had the shy client been sent anything (alice's join, message or quit)
    // it would come first; instead its first frames answer its hello, and
    // the message sent meanwhile is in the backlog.
    shy.send_json(json!({})).await;
    let before = shy.json_until_ready().await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(chat_of(&before[0]), ("alice".into(), "anyone?".into(), T0));
    assert_eq!(before[1], joined("anonymous"), "its own join, nameless");
    // A hello without a name is "anonymous".
    let (_, before) = server.a_named("lobby", "zed").await;
    assert_eq!(before[0], joined("anonymous"));
    server.stop().await;
}

/// The exact frames a dialect-A newcomer gets (roster, backlog, its own
/// `joined`, `ready`) and what every other kind of socket gets meanwhile.
#[tokio::test]
async fn a_newcomer_gets_roster_backlog_own_join_then_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, _) = server.a_named("order", "alice").await;
    let mut bee = server.b("order").await;
    let mut cat = server.c("room=order&name=cat").await;
    assert_eq!(alice.json().await, joined("cat"));
    alice.say("one").await;
    bee.send_text("two").await;
    assert_eq!(chat_of(&alice.json().await).1, "one");
    assert_eq!(chat_of(&alice.json().await).1, "two");
    assert_eq!(bee.text().await, "alice: one");
    assert_eq!(bee.text().await, "two");
    assert_eq!(chat_of(&cat.json().await).1, "one");
    assert_eq!(chat_of(&cat.json().await).1, "two");
    let mut shy = server.a("order").await;

    // Read raw, not through `a_named`, to see every frame up to `ready`.
    let mut dan = server.a("order").await;
    dan.send_json(json!({ "name": "dan" })).await;
    let mut frames = Vec::new();
    loop {
        let frame = dan.json().await;
        let done = frame == json!({ "ready": true });
        frames.push(frame);
        if done {
            break;
        }
    }
    assert_eq!(
        frames,
        vec![
            joined("alice"),
            joined("cat"),
            json!({ "name": "alice", "message": "one", "timestamp": T0 }),
            json!({ "name": "anonymous", "message": "two", "timestamp": T0 + 1 }),
            joined("dan"),
            json!({ "ready": true }),
        ],
        "roster (named users of every dialect, no B), backlog, own join, ready"
    );
    // The others: A gets `joined`, C the notice, B and the unnamed A nothing
    // (their next frame is the next chat message).
    assert_eq!(alice.json().await, joined("dan"));
    assert_eq!(
        cat.json().await,
        json!({ "message": "joined the chat", "name": "dan" })
    );
    dan.say("three").await;
    assert_eq!(chat_of(&dan.json().await).1, "three", "no second join");
    assert_eq!(chat_of(&alice.json().await).1, "three");
    assert_eq!(bee.text().await, "dan: three");
    assert_eq!(chat_of(&cat.json().await).1, "three");
    shy.send_json(json!({ "name": "shy" })).await;
    assert_eq!(
        shy.json().await,
        joined("alice"),
        "nothing before its hello"
    );
    server.stop().await;
}

/// Two users behind one office IP share its rate limit; dialect C gets the
/// refusal as a chat line from `Error`, which its page can render.
#[tokio::test]
async fn c_users_sharing_an_ip_get_rate_limit_errors_as_chat_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let ip = common::next_ip();
    let url = server.url("/ws?room=office&name=ann");
    let mut ann = common::Client::connect(&url, &ip).await;
    let url = server.url("/ws?room=office&name=ben");
    let mut ben = common::Client::connect(&url, &ip).await;
    assert_eq!(
        ann.json().await,
        json!({ "message": "joined the chat", "name": "ben" })
    );
    for n in 0..5 {
        let (from, to) = if n % 2 == 0 {
            (&mut ann, &mut ben)
        } else {
            (&mut ben, &mut ann)
        };
        from.say(&format!("m{n}")).await;
        assert_eq!(chat_of(&to.json().await).1, format!("m{n}"));
    }
    server.clock.advance(250);
    let refused = json!({
        "name": "Error",
        "message": "Your IP is being rate-limited, please try again later.",
        "timestamp": T0 + 250,
    });
    ann.say("too many").await;
    assert_eq!(ann.json().await, refused);
    ben.say("me too").await;
    assert_eq!(ben.json().await, refused);
    // Neither refusal was relayed: after 5 s one message passes, and it is
    // the next thing the other one sees.
    server.clock.advance(5_000);
    ann.say("later").await;
    assert_eq!(chat_of(&ben.json().await).1, "later");
    server.stop().await;
}

#[tokio::test]
async fn c_gets_history_and_notices_and_not_its_own_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let mut ann = server.c("room=workshop&name=%20%20ann%20").await;
    let mut ben = server.c("room=workshop&name=ben").await;
    assert_eq!(
        ann.json().await,
        json!({ "message": "joined the chat", "name": "ben" })
    );

    ann.say("  hello ben  ").await;
    let frame = ben.json().await;
    assert_eq!(frame, c_chat("hello ben", "ann", 0), "trimmed");
    // Ignored: empty, whitespace, non-string, not JSON.
    for junk in [
        r#"{"message":""}"#,
        r#"{"message":"   "}"#,
        r#"{"message":5}"#,
        "not json",
    ] {
        ann.send_text(junk).await;
    }
    ben.say("hello ann").await;
    // Not her own message, none of the junk: ben's message is next.
    assert_eq!(ann.json().await, c_chat("hello ann", "ben", 1));

    // A newcomer gets the history, one frame per message, oldest first.
    let mut cid = server.c("room=workshop").await;
    assert_eq!(cid.json().await, c_chat("hello ben", "ann", 0));
    assert_eq!(cid.json().await, c_chat("hello ann", "ben", 1));
    for c in [&mut ann, &mut ben] {
        assert_eq!(
            c.json().await,
            json!({ "message": "joined the chat", "name": "Anonymous" })
        );
    }
    ben.close().await;
    for c in [&mut ann, &mut cid] {
        assert_eq!(
            c.json().await,
            json!({ "message": "left the chat", "name": "ben" })
        );
    }
    // `room` defaults to "default": a different room.
    let mut elsewhere = server.c("name=dee").await;
    elsewhere.say("echo?").await;
    cid.say("still here").await;
    assert_eq!(
        chat_of(&ann.json().await).1,
        "still here",
        "nothing from the default room"
    );
    drop(elsewhere);
    server.stop().await;
}

#[tokio::test]
async fn b_gets_plain_text_including_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, _) = server.a_named("relay", "alice").await;
    let mut b1 = server.b("relay").await;
    let mut b2 = server.b("relay").await;

    b1.send_text("  raw {\"json\"} text ").await;
    for b in [&mut b1, &mut b2] {
        assert_eq!(
            b.text().await,
            "  raw {\"json\"} text ",
            "verbatim, sender included"
        );
    }
    assert_eq!(
        chat_of(&alice.json().await),
        ("anonymous".into(), "  raw {\"json\"} text ".into(), T0)
    );

    alice.say("hello relay").await;
    assert_eq!(chat_of(&alice.json().await).1, "hello relay");
    for b in [&mut b1, &mut b2] {
        assert_eq!(b.text().await, "alice: hello relay");
    }
    // Blank frames are ignored; B gets no notices: the next frame is chat.
    b2.send_text("   ").await;
    b2.close().await;
    let (carol, _) = server.a_named("relay", "carol").await;
    assert_eq!(
        alice.json().await,
        joined("carol"),
        "B never appears in the roster or notices"
    );
    drop(carol);
    alice.say("last").await;
    assert_eq!(b1.text().await, "alice: last");
    server.stop().await;
}

#[tokio::test]
async fn one_room_three_dialects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, _) = server.a_named("general", "alice").await;
    let mut bee = server.b("general").await;
    let mut cat = server.c("room=general&name=cat").await;
    assert_eq!(
        alice.json().await,
        joined("cat"),
        "a C user joins A's roster"
    );

    alice.say("from A").await;
    assert_eq!(chat_of(&alice.json().await).1, "from A");
    assert_eq!(bee.text().await, "alice: from A");
    assert_eq!(cat.json().await, c_chat("from A", "alice", 0));

    bee.send_text("from B").await;
    assert_eq!(
        chat_of(&alice.json().await),
        ("anonymous".into(), "from B".into(), T0 + 1)
    );
    assert_eq!(bee.text().await, "from B");
    assert_eq!(cat.json().await, c_chat("from B", "anonymous", 1));

    cat.say("from C").await;
    assert_eq!(
        chat_of(&alice.json().await),
        ("cat".into(), "from C".into(), T0 + 2)
    );
    assert_eq!(bee.text().await, "cat: from C");

    // A late A joiner: roster of named users of every dialect, the backlog
    // of every dialect's messages; the C user hears of it as a notice.
    let (mut dan, before) = server.a_named("general", "dan").await;
    assert_eq!(before[..2], [joined("alice"), joined("cat")]);
    let backlog: Vec<String> = before[2..].iter().map(|f| chat_of(f).1).collect();
    assert_eq!(backlog, ["from A", "from B", "from C"]);
    assert_eq!(alice.json().await, joined("dan"));
    assert_eq!(
        cat.json().await,
        json!({ "message": "joined the chat", "name": "dan" })
    );

    cat.close().await;
    assert_eq!(alice.json().await, quit("cat"));
    assert_eq!(dan.json().await, quit("cat"));
    let mut cy = server.c("room=general&name=cy").await;
    for _ in 0..3 {
        cy.json().await; // history
    }
    assert_eq!(alice.json().await, joined("cy"));
    assert_eq!(dan.json().await, joined("cy"));
    dan.close().await;
    assert_eq!(alice.json().await, quit("dan"));
    assert_eq!(
        cy.json().await,
        json!({ "message": "left the chat", "name": "dan" })
    );
    bee.send_text("bye").await;
    assert_eq!(bee.text().await, "bye");
    server.stop().await;
}

#[tokio::test]
async fn timestamps_strictly_increase_when_the_clock_stalls_or_steps_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, _) = server.a_named("clock", "alice").await;
    let mut seen = Vec::new();
    for step in 0..4 {
        if step == 2 {
            server.clock.set(T0 - 60_000);
        }
        // A sender per message (each its own IP): a clock stepping back
        // would otherwise look like a burst to the rate limit.
        let (mut sender, _) = server.a_named("clock", &format!("s{step}")).await;
        assert_eq!(alice.json().await, joined(&format!("s{step}")));
        sender.say(&format!("m{step}")).await;
        seen.push(chat_of(&alice.json().await).2);
        sender.close().await;
        assert_eq!(alice.json().await, quit(&format!("s{step}")));
    }
    assert_eq!(seen, [T0, T0 + 1, T0 + 2, T0 + 3]);
    server.clock.set(T0 + 10_000);
    alice.say("later").await;
    assert_eq!(
        chat_of(&alice.json().await).2,
        T0 + 10_000,
        "the clock again once it is ahead"
    );
    server.stop().await;
}

#[tokio::test]
async fn presence_extension() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let presence =
        |count: usize, users: &[&str]| json!({ "presence": { "count": count, "users": users } });

    // Compat clients never see presence frames.
    let (mut plain, _) = server.a_named("pres", "plain").await;
    let (mut ext, before) = server.a_named_ext("pres", "ext", &["presence"]).await;
    assert_eq!(before, vec![joined("plain")]);
    assert_eq!(
        ext.json().await,
        presence(2, &["plain", "ext"]),
        "after ready"
    );
    assert_eq!(plain.json().await, joined("ext"));

    let b = server.b("pres").await;
    assert_eq!(
        ext.json().await,
        presence(3, &["plain", "ext"]),
        "B counts, unnamed"
    );
    let unnamed_a = server.a("pres").await;
    assert_eq!(ext.json().await, presence(4, &["plain", "ext"]));
    let c = server.c("room=pres&name=cee").await;
    assert_eq!(ext.json().await, json!({ "joined": "cee" }));
    assert_eq!(ext.json().await, presence(5, &["plain", "ext", "cee"]));
    b.close().await;
    assert_eq!(ext.json().await, presence(4, &["plain", "ext", "cee"]));
    unnamed_a.close().await;
    assert_eq!(ext.json().await, presence(3, &["plain", "ext", "cee"]));
    c.close().await;
    assert_eq!(ext.json().await, quit("cee"));
    assert_eq!(ext.json().await, presence(2, &["plain", "ext"]));

    // The compat client saw only the joins and quits.
    assert_eq!(plain.json().await, joined("cee"));
    assert_eq!(plain.json().await, quit("cee"));
    server.stop().await;
}

#[tokio::test]
async fn history_paging_extension_and_the_backlog_of_100() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut writer, _) = server.a_named("archive", "writer").await;
    for n in 0..130 {
        // Five seconds apart: within the rate limit.
        server.clock.advance(5_000);
        writer.say(&format!("m{n}")).await;
        writer.json().await;
    }
    let ts = |n: u64| T0 + 5_000 * (n + 1);

    let (mut reader, before) = server.a_named_ext("archive", "reader", &["history"]).await;
    let backlog: Vec<String> = before[1..].iter().map(|f| chat_of(f).1).collect();
    assert_eq!(backlog.len(), 100, "the last 100");
    assert_eq!(backlog[0], "m30");
    assert_eq!(backlog[99], "m129");

    reader
        .send_json(json!({ "history": { "before": ts(30), "limit": 20 } }))
        .await;
    let page = reader.json().await;
    let messages = page["history"]["messages"].as_array().expect("messages");
    let texts: Vec<&str> = messages
        .iter()
        .map(|m| m["message"].as_str().expect("text"))
        .collect();
    assert_eq!(
        texts,
        (10..30).map(|n| format!("m{n}")).collect::<Vec<_>>(),
        "oldest first"
    );
    assert_eq!(page["history"]["more"], true);
    assert!(page.get("timestamp").is_none());

    reader
        .send_json(json!({ "history": { "before": ts(10), "limit": 500 } }))
        .await;
    let page = reader.json().await;
    assert_eq!(
        page["history"]["messages"].as_array().map(Vec::len),
        Some(10)
    );
    assert_eq!(page["history"]["more"], false);
    reader
        .send_json(json!({ "history": { "before": ts(0) } }))
        .await;
    assert_eq!(
        reader.json().await,
        json!({ "history": { "messages": [], "more": false } })
    );

    // Without the opt-in the request is not understood.
    assert_eq!(writer.json().await, joined("reader"));
    writer
        .send_json(json!({ "history": { "before": ts(30) } }))
        .await;
    assert_eq!(
        writer.json().await,
        json!({ "error": r#"Expected an object with a "message" field."# })
    );
    // A malformed request.
    reader
        .send_json(json!({ "history": { "before": "yesterday" } }))
        .await;
    let error = reader.json().await;
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("history")),
        "{error}"
    );
    server.stop().await;
}
