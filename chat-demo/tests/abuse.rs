//! Rate limit, length limits and bad input: each gets its specified answer
//! and the other users keep chatting.

mod common;

use common::{Client, Ending, Server, Setup, T0, chat_of, next_ip};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const RATE_LIMITED: &str = "Your IP is being rate-limited, please try again later.";

fn error(text: &str) -> Value {
    json!({ "error": text })
}

/// A dialect-C error: a chat line from `Error`, stamped with the server's
/// clock (which stands at `T0` in these tests).
fn c_error(text: &str) -> Value {
    json!({ "name": "Error", "message": text, "timestamp": T0 })
}

/// Two named A users in `room`; `alice` has read bob's join.
async fn pair(server: &Server, room: &str) -> (Client, Client) {
    let (mut alice, _) = server.a_named(room, "alice").await;
    let (bob, _) = server.a_named(room, "bob").await;
    assert_eq!(alice.json().await, json!({ "joined": "bob" }));
    (alice, bob)
}

/// Bob and alice can still talk (bob's message reaches both).
async fn still_chatting(alice: &mut Client, bob: &mut Client, text: &str) {
    bob.say(text).await;
    assert_eq!(chat_of(&bob.json().await).1, text);
    assert_eq!(chat_of(&alice.json().await).1, text);
}

#[tokio::test]
async fn the_rate_limit_spans_rooms_and_dialects_for_one_ip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let ip = next_ip();
    let url = |path: &str| server.url(path);
    // One IP, three sockets in two rooms; the clock stands still.
    let mut a1 = Client::connect(&url("/api/room/one/websocket"), &ip).await;
    a1.send_json(json!({ "name": "a1" })).await;
    a1.json_until_ready().await;
    let mut b2 = Client::connect(&url("/room/two/websocket"), &ip).await;
    let mut c2 = Client::connect(&url("/ws?room=two&name=c2"), &ip).await;
    let (mut watcher, _) = server.a_named("two", "watcher").await;
    assert_eq!(
        c2.json().await,
        json!({ "message": "joined the chat", "name": "watcher" })
    );

    // The burst: five messages, whatever the room or dialect.
    for n in 0..3 {
        a1.say(&format!("a{n}")).await;
        assert_eq!(chat_of(&a1.json().await).1, format!("a{n}"));
    }
    b2.send_text("b0").await;
    assert_eq!(b2.text().await, "b0");
    c2.say("c0").await;
    assert_eq!(b2.text().await, "c2: c0");
    for expected in ["b0", "c0"] {
        assert_eq!(chat_of(&watcher.json().await).1, expected);
    }
    assert_eq!(chat_of(&c2.json().await).1, "b0", "C hears B, not itself");

    // The sixth is refused, in each dialect's form, and not relayed.
    a1.say("a3").await;
    assert_eq!(a1.json().await, error(RATE_LIMITED));
    b2.send_text("b1").await;
    assert_eq!(b2.text().await, RATE_LIMITED);
    c2.say("c1").await;
    assert_eq!(c2.json().await, c_error(RATE_LIMITED));

    // Another IP is not affected, and its message is the next thing seen.
    watcher.say("w0").await;
    assert_eq!(chat_of(&watcher.json().await).1, "w0");
    assert_eq!(b2.text().await, "watcher: w0");

    // Five seconds later one more message goes through.
    server.clock.advance(5_000);
    a1.say("a4").await;
    assert_eq!(chat_of(&a1.json().await).1, "a4");
    a1.say("a5").await;
    assert_eq!(a1.json().await, error(RATE_LIMITED));
    server.stop().await;
}

#[tokio::test]
async fn message_and_name_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, mut bob) = pair(&server, "limits").await;

    // 256 characters pass (multi-byte ones count once), 257 do not.
    let max = "漢".repeat(256);
    alice.say(&max).await;
    assert_eq!(chat_of(&alice.json().await).1, max);
    assert_eq!(chat_of(&bob.json().await).1, max);
    alice.say(&"m".repeat(257)).await;
    assert_eq!(alice.json().await, error("Message too long."));
    still_chatting(&mut alice, &mut bob, "after a long one").await;

    // B and C: the same limit, each dialect's error form.
    let mut b = server.b("limits").await;
    b.send_text(&"b".repeat(257)).await;
    assert_eq!(b.text().await, "Message too long.");
    let mut c = server.c("room=limits&name=cee").await;
    for frame in [&mut alice, &mut bob] {
        assert_eq!(frame.json().await, json!({ "joined": "cee" }));
    }
    assert_eq!(chat_of(&c.json().await).1, max, "history");
    assert_eq!(chat_of(&c.json().await).1, "after a long one");
    c.say(&"c".repeat(257)).await;
    assert_eq!(c.json().await, c_error("Message too long."));

    // Names: 32 characters pass, 33 get the error and close 1009.
    let (_n32, before) = server.a_named("limits", &"n".repeat(32)).await;
    assert_eq!(
        before.len(),
        3 + 2,
        "roster of three and the backlog of two"
    );
    for frame in [&mut alice, &mut bob] {
        assert_eq!(frame.json().await, json!({ "joined": "n".repeat(32) }));
    }
    let mut long = server.a("limits").await;
    long.send_json(json!({ "name": "n".repeat(33) })).await;
    assert_eq!(long.json().await, error("Name too long."));
    assert_eq!(
        long.ending().await,
        Ending::Close(1009, "Name too long.".into())
    );
    still_chatting(&mut alice, &mut bob, "after a long name").await;
    assert_eq!(b.text().await, "bob: after a long name");
    server.stop().await;
}

#[tokio::test]
async fn a_10000_character_name_is_refused_in_a_and_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, mut bob) = pair(&server, "huge").await;
    let huge = "x".repeat(10_000);

    // Over dialect A's frame limit: closed 1009 before it is decoded.
    let mut a = server.a("huge").await;
    a.send_json(json!({ "name": huge })).await;
    assert_eq!(
        a.ending().await,
        Ending::Close(1009, "message too big".into())
    );
    // Within the frame limit, over the name limit: the error, then 1009.
    let mut a = server.a("huge").await;
    a.send_json(json!({ "name": "x".repeat(4000) })).await;
    assert_eq!(a.json().await, error("Name too long."));
    assert_eq!(
        a.ending().await,
        Ending::Close(1009, "Name too long.".into())
    );

    // C names come in the query: refused before the upgrade.
    let refused =
        tokio_tungstenite::connect_async(server.url(&format!("/ws?room=huge&name={huge}"))).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
            assert_eq!(resp.body().as_deref(), Some(&b"Name too long."[..]));
        }
        other => panic!("expected a 400, got {other:?}"),
    }

    // Neither joined: the next frame alice sees is bob's message.
    still_chatting(&mut alice, &mut bob, "still here").await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_json_is_answered_and_the_socket_stays_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, mut bob) = pair(&server, "json").await;
    let cases = [
        ("{", "Invalid JSON."),
        ("not json at all", "Invalid JSON."),
        ("[1,2]", "Expected a JSON object."),
        ("{}", r#"Expected an object with a "message" field."#),
        (
            r#"{"message":{"nested":true}}"#,
            "Message must be a string.",
        ),
    ];
    for (frame, answer) in cases {
        alice.send_text(frame).await;
        assert_eq!(alice.json().await, error(answer), "{frame}");
    }
    // As deep as dialect A's frame limit allows, far past serde's 128.
    let deep = format!(r#"{{"message":{}"#, "[".repeat(4000));
    alice.send_text(&deep).await;
    assert_eq!(alice.json().await, error("Invalid JSON."));
    still_chatting(&mut alice, &mut bob, "unbothered").await;

    // Before the hello too (the only frames sent before one are errors).
    let mut early = server.a("json").await;
    early.send_text("{").await;
    assert_eq!(early.json().await, error("Invalid JSON."));
    early
        .send_json(json!({ "name": ["not", "a", "string"] }))
        .await;
    assert_eq!(early.json().await, error("Name must be a string."));
    early.send_json(json!({ "name": "late" })).await;
    assert_eq!(
        early.json_until_ready().await.len(),
        2 + 1 + 1,
        "roster, backlog and its own join"
    );
    server.stop().await;
}

#[tokio::test]
async fn binary_frames_are_answered_in_each_dialect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, mut bob) = pair(&server, "bin").await;
    let mut b = server.b("bin").await;
    let mut c = server.c("room=bin&name=cee").await;
    for frame in [&mut alice, &mut bob] {
        assert_eq!(frame.json().await, json!({ "joined": "cee" }));
    }
    let payload = Message::Binary(vec![0xff, 0x00, 0x7b].into());
    alice.send(payload.clone()).await;
    assert_eq!(
        alice.json().await,
        error("Binary frames are not supported.")
    );
    b.send(payload.clone()).await;
    assert_eq!(b.text().await, "Binary frames are not supported.");
    c.send(payload.clone()).await;
    assert_eq!(c.json().await, c_error("Binary frames are not supported."));
    let mut unnamed = server.a("bin").await;
    unnamed.send(payload).await;
    assert_eq!(
        unnamed.json().await,
        error("Binary frames are not supported.")
    );
    still_chatting(&mut alice, &mut bob, "text again").await;
    assert_eq!(b.text().await, "bob: text again");
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_ends_only_that_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, mut bob) = pair(&server, "utf8").await;
    let (mut mallory, _) = server.a_named("utf8", "mallory").await;
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.json().await, json!({ "joined": "mallory" }));
    }
    // A text frame whose payload is not UTF-8, sent raw.
    let raw = Frame::message(
        &b"{\"message\":\"\xc3\x28\"}"[..],
        OpCode::Data(Data::Text),
        true,
    );
    mallory.send(Message::Frame(raw)).await;
    let ending = mallory.ending().await;
    assert!(
        matches!(ending, Ending::Close(1007, _)),
        "closed with 1007: {ending:?}"
    );
    // The others see mallory leave and keep chatting.
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.json().await, json!({ "quit": "mallory" }));
    }
    still_chatting(&mut alice, &mut bob, "carry on").await;
    server.stop().await;
}

#[tokio::test]
async fn oversize_frames_close_1009() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        max_message_bytes: 64 * 1024,
        ..Setup::default()
    };
    let server = Server::start(dir.path(), setup).await;
    let (mut alice, mut bob) = pair(&server, "big").await;
    let (mut big, _) = server.a_named("big", "big").await;
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.json().await, json!({ "joined": "big" }));
    }
    let text = format!(r#"{{"message":"{}"}}"#, "x".repeat(64 * 1024));
    big.send_text(&text).await;
    assert_eq!(
        big.ending().await,
        Ending::Close(1009, "message too big".into())
    );
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.json().await, json!({ "quit": "big" }));
    }
    // Binary too, from a B client.
    let mut b = server.b("big").await;
    b.send(Message::Binary(vec![0u8; 64 * 1024 + 1].into()))
        .await;
    assert_eq!(
        b.ending().await,
        Ending::Close(1009, "message too big".into())
    );
    still_chatting(&mut alice, &mut bob, "small again").await;
    server.stop().await;
}

#[tokio::test]
async fn client_sent_admission_headers_are_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let ip = next_ip();
    // Spend this IP's burst.
    let (mut spender, _) = {
        let mut c = Client::connect(&server.url("/api/room/spoof/websocket"), &ip).await;
        c.send_json(json!({ "name": "spender" })).await;
        let before = c.json_until_ready().await;
        (c, before)
    };
    for n in 0..5 {
        spender.say(&format!("s{n}")).await;
        spender.json().await;
    }
    // A client claiming, in our own header, to be a B socket from another
    // IP: it is still an A socket (silent until its hello) from its IP.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        server.url("/api/room/spoof/websocket"),
    )
    .expect("request");
    let headers = req.headers_mut();
    headers.insert("x-forwarded-for", ip.parse().expect("ip"));
    headers.insert(
        "x-chat-admission",
        r#"{"dialect":"B","ip":"192.0.2.99"}"#.parse().expect("header"),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    let mut spoofer = Client { ws };
    spoofer.send_json(json!({ "name": "spoofer" })).await;
    assert_eq!(
        spoofer.json_until_ready().await[0],
        json!({ "joined": "spender" })
    );
    spoofer.say("let me through").await;
    assert_eq!(spoofer.json().await, error(RATE_LIMITED));
    server.stop().await;
}
