//! Hostile clients, table-driven: each case gets its specified answer
//! (an HTTP refusal, an error frame or a close code) while two other users
//! in the same room keep chatting.

mod common;

use common::{Client, Ending, PATIENCE, Server, Setup, chat_of, next_ip};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};

/// The per-IP connection limit of the test server.
const MAX_PER_IP: usize = 4;
/// The largest frame the test server takes.
const MAX_FRAME: usize = 64 * 1024;

/// One hostile behaviour.
#[derive(Clone, Copy, Debug)]
enum Case {
    /// Clients that send half a request line and headers, then stall.
    SlowHeaders,
    /// A text frame over the frame limit: 1009.
    HugeFrame,
    /// A text frame that is not UTF-8: 1007.
    InvalidUtf8,
    /// JSON nested far past the parser's limit: an error frame, socket open.
    DeepJson,
    /// More sockets from one IP than allowed: 429 for the extra one, and a
    /// slot comes back when a socket closes.
    ConnectionFlood,
    /// Data frames written after the client's Close frame: ignored.
    FramesAfterClose,
    /// A browser page from another site: 403; allowed origins get in.
    DisallowedOrigin,
}

const CASES: &[Case] = &[
    Case::SlowHeaders,
    Case::HugeFrame,
    Case::InvalidUtf8,
    Case::DeepJson,
    Case::ConnectionFlood,
    Case::FramesAfterClose,
    Case::DisallowedOrigin,
];

#[tokio::test]
async fn hostile_clients_get_their_answer_and_the_room_keeps_chatting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        max_message_bytes: MAX_FRAME,
        max_connections_per_ip: Some(MAX_PER_IP),
        allowed_origins: vec!["https://chat.example".to_owned()],
        ..Setup::default()
    };
    let server = Server::start(dir.path(), setup).await;
    for &case in CASES {
        let room = format!("{case:?}").to_lowercase();
        let (mut alice, mut bob) = pair(&server, &room).await;
        run(case, &server, &room, &mut alice, &mut bob).await;
        still_chatting(&mut alice, &mut bob, &format!("after {case:?}")).await;
    }
    server.stop().await;
}

async fn run(case: Case, server: &Server, room: &str, alice: &mut Client, bob: &mut Client) {
    match case {
        Case::SlowHeaders => {
            let mut stalled = Vec::new();
            for _ in 0..8 {
                let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
                let half = format!(
                    "GET /api/room/{room}/websocket HTTP/1.1\r\nHost: {}\r\nUpgr",
                    server.addr
                );
                tcp.write_all(half.as_bytes()).await.expect("write");
                stalled.push(tcp);
            }
            // While they hang: the room chats, and a newcomer gets in.
            still_chatting(alice, bob, "while they stall").await;
            let (carol, before) = server.a_named(room, "carol").await;
            assert!(before.contains(&json!({ "joined": "alice" })));
            for c in [&mut *alice, &mut *bob] {
                assert_eq!(c.json().await, json!({ "joined": "carol" }));
            }
            carol.close().await;
            quit(alice, bob, "carol").await;
            drop(stalled);
        }
        Case::HugeFrame => {
            let mut mallory = named(server, room, "mallory", alice, bob).await;
            let huge = format!(r#"{{"message":"{}"}}"#, "x".repeat(MAX_FRAME));
            mallory.send_text(&huge).await;
            assert_eq!(
                mallory.ending().await,
                Ending::Close(1009, "message too big".into())
            );
            quit(alice, bob, "mallory").await;
        }
        Case::InvalidUtf8 => {
            let mut mallory = named(server, room, "mallory", alice, bob).await;
            let raw = Frame::message(
                &b"\xff\xfe{\"message\":1}"[..],
                OpCode::Data(Data::Text),
                true,
            );
            mallory.send(Message::Frame(raw)).await;
            let ending = mallory.ending().await;
            assert!(matches!(ending, Ending::Close(1007, _)), "{ending:?}");
            quit(alice, bob, "mallory").await;
        }
        Case::DeepJson => {
            let mut mallory = named(server, room, "mallory", alice, bob).await;
            // As deep as dialect A's frame limit (4 KiB) allows, far past
            // serde's 128 levels.
            let arrays = format!(r#"{{"message":{}"#, "[".repeat(4000));
            let objects = format!("{}1{}", r#"{"a":"#.repeat(600), "}".repeat(600));
            for frame in [arrays, objects] {
                mallory.send_text(&frame).await;
                assert_eq!(mallory.json().await, error("Invalid JSON."));
            }
            // Still open, and still heard.
            mallory.say("shallow now").await;
            for c in [&mut mallory, &mut *alice, &mut *bob] {
                assert_eq!(chat_of(&c.json().await).1, "shallow now");
            }
            mallory.close().await;
            quit(alice, bob, "mallory").await;
        }
        Case::ConnectionFlood => {
            let ip = next_ip();
            let url = server.url(&format!("/api/room/{room}/websocket"));
            let mut first = Client::connect(&url, &ip).await;
            first.send_json(json!({ "name": "flood0" })).await;
            first.json_until_ready().await;
            for c in [&mut *alice, &mut *bob] {
                assert_eq!(c.json().await, json!({ "joined": "flood0" }));
            }
            let mut flood = vec![first];
            for _ in 1..MAX_PER_IP {
                flood.push(Client::connect(&url, &ip).await);
            }
            assert_eq!(server.state.connections_of(&ip), MAX_PER_IP);
            // One more is refused, in every dialect; other IPs are not.
            let paths = [
                format!("/api/room/{room}/websocket"),
                format!("/room/{room}/websocket"),
                format!("/ws?room={room}&name=flood"),
            ];
            for path in &paths {
                let (status, body) = refused(&server.url(path), &ip, None).await;
                assert_eq!(status, 429, "{path}");
                assert_eq!(
                    body,
                    "Too many open connections from your IP; close some and try again."
                );
            }
            still_chatting(alice, bob, "during the flood").await;
            // Closing one gives its slot back (the front door's, dropped
            // with the connection, before the room hears of the close and
            // sends the quit notice).
            let first = flood.remove(0);
            first.close().await;
            quit(alice, bob, "flood0").await;
            assert_eq!(server.state.connections_of(&ip), MAX_PER_IP - 1);
            flood.push(Client::connect(&url, &ip).await);
            assert_eq!(server.state.connections_of(&ip), MAX_PER_IP);
        }
        Case::FramesAfterClose => {
            let mut mallory = named(server, room, "mallory", alice, bob).await;
            mallory.ws.close(None).await.expect("close");
            // Written raw: the client library refuses to send after Close.
            let MaybeTlsStream::Plain(tcp) = mallory.ws.get_mut() else {
                panic!("plain TCP");
            };
            for text in [r#"{"message":"after close"}"#, "junk"] {
                tcp.write_all(&masked_text_frame(text.as_bytes()))
                    .await
                    .expect("raw write");
            }
            quit(alice, bob, "mallory").await;
            // The next chat frame alice and bob see is bob's own, below.
        }
        Case::DisallowedOrigin => {
            let url = server.url(&format!("/api/room/{room}/websocket"));
            for origin in [
                "http://evil.example",
                "null",
                "http://chat.example.evil.example",
            ] {
                let (status, body) = refused(&url, &next_ip(), Some(origin)).await;
                assert_eq!(status, 403, "{origin}");
                assert!(body.starts_with("Origin not allowed: "), "{body}");
            }
            let same = format!("http://{}", server.addr);
            let allowed = [
                same.as_str(),
                "http://localhost:3000",
                "https://chat.example",
            ];
            for origin in allowed {
                let mut req = url.as_str().into_client_request().expect("request");
                req.headers_mut()
                    .insert("x-forwarded-for", next_ip().parse().expect("ip"));
                req.headers_mut()
                    .insert("origin", origin.parse().expect("origin"));
                let (ws, resp) = tokio_tungstenite::connect_async(req)
                    .await
                    .unwrap_or_else(|e| panic!("{origin}: {e}"));
                assert_eq!(resp.status(), 101, "{origin}");
                Client { ws }.close().await;
            }
        }
    }
}

fn error(text: &str) -> Value {
    json!({ "error": text })
}

/// Two named A users in `room`; `alice` has read bob's join.
async fn pair(server: &Server, room: &str) -> (Client, Client) {
    let (mut alice, _) = server.a_named(room, "alice").await;
    let (bob, _) = server.a_named(room, "bob").await;
    assert_eq!(alice.json().await, json!({ "joined": "bob" }));
    (alice, bob)
}

/// A named A user whose join alice and bob have seen.
async fn named(
    server: &Server,
    room: &str,
    name: &str,
    alice: &mut Client,
    bob: &mut Client,
) -> Client {
    let (client, _) = server.a_named(room, name).await;
    for c in [alice, bob] {
        assert_eq!(c.json().await, json!({ "joined": name }));
    }
    client
}

/// Alice and bob both see `name` leave.
async fn quit(alice: &mut Client, bob: &mut Client, name: &str) {
    for c in [alice, bob] {
        assert_eq!(c.json().await, json!({ "quit": name }));
    }
}

/// Bob's message reaches bob and alice, and is the next frame both see.
async fn still_chatting(alice: &mut Client, bob: &mut Client, text: &str) {
    bob.say(text).await;
    assert_eq!(chat_of(&bob.json().await), chat_of(&alice.json().await));
}

/// Connects expecting an HTTP refusal; returns its status and body.
async fn refused(url: &str, ip: &str, origin: Option<&str>) -> (u16, String) {
    let mut req = url.into_client_request().expect("request");
    req.headers_mut()
        .insert("x-forwarded-for", ip.parse().expect("ip"));
    if let Some(origin) = origin {
        req.headers_mut()
            .insert("origin", origin.parse().expect("origin"));
    }
    let result = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(req))
        .await
        .expect("an answer in time");
    match result {
        Err(tungstenite::Error::Http(resp)) => {
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            (resp.status().as_u16(), body.into_owned())
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, got a socket"),
    }
}

/// A client's masked, final text frame with a short payload.
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x1f, 0x2e, 0x3d, 0x4c];
    let len = u8::try_from(payload.len()).expect("short payload");
    assert!(len < 126, "short payload");
    let mut frame = vec![0x81, 0x80 | len];
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}
