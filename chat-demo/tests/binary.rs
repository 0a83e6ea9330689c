//! The `chat-demo` binary: flags, the printed address, graceful shutdown
//! on SIGTERM (sockets get 1001, the process exits cleanly).

#![cfg(unix)]

mod common;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

#[tokio::test]
async fn the_binary_serves_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, url) = common::start_binary(dir.path()).await;

    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{url}/api/room/general/websocket"))
            .await
            .expect("connect");
    ws.send(Message::text(r#"{"name":"alice"}"#))
        .await
        .expect("hello");
    ws.send(Message::text(r#"{"message":"hi"}"#))
        .await
        .expect("message");
    let mut saw_message = false;
    let close_code = tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    if t.contains(r#""message":"hi""#) {
                        saw_message = true;
                        // Now ask the server to stop.
                        let pid = child.id().expect("pid").to_string();
                        let status = std::process::Command::new("kill")
                            .args(["-TERM", &pid])
                            .status()
                            .expect("kill");
                        assert!(status.success());
                    }
                }
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error before the close: {e}"),
                None => panic!("connection ended without a Close frame"),
            }
        }
    })
    .await
    .expect("closed in time");
    assert!(saw_message);
    assert_eq!(close_code, Some(1001));
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert!(status.success(), "{status}");
    assert!(dir.path().join("LOCK").exists(), "the data dir was used");
}
