//! One test per resource attack: each asserts the bound that stops it (the
//! socket cut, the connection refused or closed, nothing activated) and
//! that a well-behaved user in another room still joins and gets the echo
//! of a message while the attack is on.

mod common;

use chat_demo::protocol::limit::RateLimitOptions;
use common::{PATIENCE, Server, Setup, chat_of};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A rate limit that never bites, for tests that must store many messages.
fn no_rate_limit() -> RateLimitOptions {
    RateLimitOptions {
        per_message_ms: 1,
        grace_ms: 1 << 40,
    }
}

/// A user in `room` says something and must get its own echo back.
async fn calm_user_chats(server: &Server, room: &str) {
    let (mut calm, _) = server.a_named(room, "calm").await;
    calm.say("still here").await;
    let echo = calm.json().await;
    assert_eq!(
        chat_of(&echo).1,
        "still here",
        "the well-behaved user's echo"
    );
    calm.close().await;
}

/// A dialect-A client asks for page after page of escaped-heavy history
/// and never reads: its replies pile up on the server until the send
/// queue's byte bound cuts the socket, long before the replies asked for
/// are all sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_to_a_reader_that_never_reads_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        rate_limit: no_rate_limit(),
        ..Setup::default()
    };
    let server = Server::start(dir.path(), setup).await;

    // 100 messages of 256 × U+0001: each escapes to about 1.5 KB of JSON,
    // so one page of 100 is about 150 KB.
    let (mut filler, _) = server.a_named("big", "filler").await;
    let heavy = "\u{1}".repeat(256);
    for _ in 0..100 {
        filler.say(&heavy).await;
        assert_eq!(chat_of(&filler.json().await).1, heavy);
    }
    filler.close().await;

    let (mut eve, _) = server.a_named_ext("big", "eve", &["history"]).await;
    let request = json!({ "history": { "before": u64::MAX, "limit": 100 } }).to_string();
    // 300 pages are about 46 MB: more than the socket buffers of both ends
    // and the server's bound together.
    const PAGES: usize = 300;
    for _ in 0..PAGES {
        let sent = tokio::time::timeout(PATIENCE, eve.ws.send(Message::text(request.clone())))
            .await
            .expect("send in time");
        if sent.is_err() {
            break; // already cut
        }
    }

    calm_user_chats(&server, "calm").await;

    // Now read what reached us: some pages, then the end without a Close
    // frame (a slow reader's buffers are full, so none is sent).
    let mut pages = 0;
    let ending = loop {
        match eve.next().await {
            Some(Message::Text(t)) if t.as_str().contains("\"history\"") => pages += 1,
            Some(Message::Text(_)) => {}
            Some(Message::Close(frame)) => break Some(frame),
            Some(other) => panic!("unexpected frame {other:?}"),
            None => break None,
        }
    };
    assert!(
        ending.is_none()
            || ending
                .as_ref()
                .is_some_and(|f| f.as_ref().is_some_and(|f| u16::from(f.code) == 1008)),
        "cut as a slow reader: {ending:?}"
    );
    assert!(
        pages < PAGES,
        "the socket was cut before all {PAGES} pages went out (got {pages})"
    );
    calm_user_chats(&server, "calm2").await;
    server.stop().await;
}
