//! The per-IP WebSocket slot belongs to the front door alone: it is tied
//! to the TCP connection and given back when the connection ends, without
//! the room's help, so it comes back even while the room is out of memory
//! (hibernated), and before the room hears of the close.

mod common;

use std::time::Duration;

use common::{Client, PATIENCE, Server, Setup, next_ip};
use serde_json::json;

/// Waits (on yields) until the front door counts `n` sockets for `ip`.
async fn slots_of_are(server: &Server, ip: &str, n: usize) {
    let wait = async {
        while server.state.connections_of(ip) != n {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("never {n} slots for {ip}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_comes_back_when_its_socket_closes_while_the_room_hibernates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        hibernation: Duration::from_millis(50),
        max_connections_per_ip: Some(1),
        ..Setup::default()
    };
    let server = Server::start(dir.path(), setup).await;
    let url = server.url("/api/room/quiet/websocket");
    let ip = next_ip();
    let mut first = Client::connect(&url, &ip).await;
    first.send_json(json!({ "name": "first" })).await;
    first.json_until_ready().await;
    assert_eq!(server.state.connections_of(&ip), 1);

    server.hibernated().await;
    assert_eq!(server.state.rooms().live_count(), 0, "the room is out");
    first.close().await;
    slots_of_are(&server, &ip, 0).await;

    // The IP's one place is free again.
    let mut second = Client::connect(&url, &ip).await;
    second.send_json(json!({ "name": "second" })).await;
    second.json_until_ready().await;
    assert_eq!(server.state.connections_of(&ip), 1);
    second.close().await;
    slots_of_are(&server, &ip, 0).await;
    server.stop().await;
}
