//! History across restarts, and shutdown.

mod common;

use common::{Ending, ManualClock, Server, Setup, T0, chat_of};

#[tokio::test]
async fn history_survives_a_restart_in_named_and_private_rooms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let private = server.state.rooms().new_unique_id().expect("id").to_hex();

    let (mut alice, _) = server.a_named("kept", "alice").await;
    for n in 0..3 {
        alice.say(&format!("m{n}")).await;
        assert_eq!(chat_of(&alice.json().await).1, format!("m{n}"));
    }
    let (mut secret, _) = server.a_named(&private, "alice").await;
    secret.say("hush").await;
    assert_eq!(chat_of(&secret.json().await).1, "hush");
    let mut b = server.b("kept").await;
    b.send_text("plain").await;
    assert_eq!(b.text().await, "plain");
    assert_eq!(chat_of(&alice.json().await).1, "plain");

    server.stop().await;
    assert_eq!(
        alice.ending().await,
        Ending::Close(1001, "server shutting down".into())
    );
    drop((alice, secret, b));

    // Reopen the same dir with the clock an hour *behind*: timestamps must
    // still go on from the stored ones.
    let clock = ManualClock::at(T0 - 3_600_000);
    let server = Server::start_with_clock(dir.path(), Setup::default(), clock).await;
    let (mut bob, before) = server.a_named("kept", "bob").await;
    let got: Vec<(String, String, u64)> = before.iter().map(chat_of).collect();
    assert_eq!(
        got,
        [
            ("alice".into(), "m0".into(), T0),
            ("alice".into(), "m1".into(), T0 + 1),
            ("alice".into(), "m2".into(), T0 + 2),
            ("anonymous".into(), "plain".into(), T0 + 3),
        ]
    );
    bob.say("after").await;
    assert_eq!(
        chat_of(&bob.json().await).2,
        T0 + 4,
        "after the newest stored timestamp"
    );

    // The private id is still this server's, with its history.
    let (_, before) = server.a_named(&private, "bob").await;
    assert_eq!(
        before.iter().map(chat_of).collect::<Vec<_>>(),
        [("alice".into(), "hush".into(), T0)]
    );
    // And C replays it too, with the plain flag invisible.
    let mut c = server.c("room=kept&name=cee").await;
    for expected in ["m0", "m1", "m2", "plain", "after"] {
        let frame = c.json().await;
        assert_eq!(frame["message"], expected);
        assert!(frame.get("plain").is_none(), "{frame}");
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (alice, _) = server.a_named("bye", "alice").await;
    let unnamed = server.a("bye").await;
    let b = server.b("other").await;
    let c = server.c("room=bye&name=cee").await;
    let addr = server.addr;
    server.stop().await;
    for mut client in [alice, unnamed, b, c] {
        // Frames already queued may come first; then the close.
        loop {
            match client.next().await {
                Some(tokio_tungstenite::tungstenite::Message::Close(Some(frame))) => {
                    assert_eq!(u16::from(frame.code), 1001);
                    break;
                }
                Some(tokio_tungstenite::tungstenite::Message::Text(_)) => {}
                other => panic!("expected a close, got {other:?}"),
            }
        }
    }
    // No longer accepting.
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/room/x/websocket")).await;
    assert!(refused.is_err());
}
