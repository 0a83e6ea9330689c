//! The floor relay: a bare dialect-A chat server with no storage, no history
//! and no rate limit, to measure how fast a chat server *could* be on this
//! machine (run `chatload` against it and against `chat-demo`).
//!
//! - Route: `GET /api/room/<name>/websocket` (anything else: 404).
//! - One task per connection; it reads frames (4 KiB read buffer) and
//!   writes what the room queued for it.
//! - Hello `{"name": ...}` answers the roster (`{"joined": name}` for each
//!   other named user) and `{"ready": true}`; the others get
//!   `{"joined": name}`.
//! - `{"message": ...}` is serialised once as
//!   `{"name","message","timestamp"}` into shared bytes and queued to every
//!   named session of the room, the sender included, in one total order per
//!   room (timestamps strictly increase per room).
//! - A close sends `{"quit": name}` to the others.
//! - A session whose queue is full is dropped (never a silent gap).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The read buffer of each connection.
pub const READ_BUFFER_BYTES: usize = 4096;

/// Frames queued per connection before it counts as too slow and is dropped.
pub const QUEUE_FRAMES: usize = 8192;

/// Serves the relay on `listener` until the task is dropped or aborted.
/// Accept errors (such as running out of file descriptors) are reported on
/// stderr and retried after a short pause.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let hub = Arc::new(Hub::default());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let hub = hub.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    connection(stream, hub).await;
                });
            }
            Err(e) => {
                eprintln!("relay: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[derive(Default)]
struct Hub {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
}

impl Hub {
    fn join(&self, name: &str, tx: mpsc::Sender<Utf8Bytes>) -> (Arc<Room>, u64) {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        let room = rooms.entry(name.to_owned()).or_default().clone();
        let id = room.add(tx);
        (room, id)
    }

    fn leave(&self, name: &str, room: &Room, id: u64) {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        if room.remove(id) {
            rooms.remove(name);
        }
    }
}

#[derive(Default)]
struct Room {
    state: Mutex<RoomState>,
}

#[derive(Default)]
struct RoomState {
    next_id: u64,
    last_timestamp: u64,
    /// Sessions in arrival order (ids increase).
    members: std::collections::BTreeMap<u64, Member>,
}

struct Member {
    tx: mpsc::Sender<Utf8Bytes>,
    name: Option<String>,
}

#[derive(Serialize)]
struct Chat<'a> {
    name: &'a str,
    message: &'a str,
    timestamp: u64,
}

fn encode(value: &impl Serialize) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::to_string(value).unwrap_or_default())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RoomState {
    /// Queues `frame` to every named session except `except`; drops the
    /// sessions whose queue is full.
    fn broadcast(&mut self, frame: &Utf8Bytes, except: Option<u64>) {
        let mut slow = Vec::new();
        for (id, m) in &self.members {
            if Some(*id) == except || m.name.is_none() {
                continue;
            }
            if m.tx.try_send(frame.clone()).is_err() {
                slow.push(*id);
            }
        }
        for id in slow {
            // Dropping the sender ends that connection's queue: its task
            // closes the socket.
            self.members.remove(&id);
        }
    }
}

impl Room {
    fn lock(&self) -> std::sync::MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, tx: mpsc::Sender<Utf8Bytes>) -> u64 {
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        s.members.insert(id, Member { tx, name: None });
        id
    }

    /// Removes a session; true if the room is now empty.
    fn remove(&self, id: u64) -> bool {
        let mut s = self.lock();
        if let Some(Member {
            name: Some(name), ..
        }) = s.members.remove(&id)
        {
            let frame = encode(&serde_json::json!({ "quit": name }));
            s.broadcast(&frame, None);
        }
        s.members.is_empty()
    }

    fn hello(&self, id: u64, name: String) {
        let mut s = self.lock();
        let Some(me) = s.members.get(&id) else { return };
        let tx = me.tx.clone();
        for (other, m) in &s.members {
            if let (true, Some(n)) = (*other != id, &m.name) {
                let _ = tx.try_send(encode(&serde_json::json!({ "joined": n })));
            }
        }
        let _ = tx.try_send(Utf8Bytes::from_static(r#"{"ready":true}"#));
        let joined = encode(&serde_json::json!({ "joined": name }));
        s.broadcast(&joined, Some(id));
        if let Some(me) = s.members.get_mut(&id) {
            me.name = Some(name);
        }
    }

    fn message(&self, name: &str, message: &str) {
        let mut s = self.lock();
        let timestamp = now_ms().max(s.last_timestamp + 1);
        s.last_timestamp = timestamp;
        let frame = encode(&Chat {
            name,
            message,
            timestamp,
        });
        s.broadcast(&frame, None);
    }
}

/// The room name from `/api/room/<name>/websocket`, if the path is one.
fn room_of(path: &str) -> Option<String> {
    let name = path
        .strip_prefix("/api/room/")?
        .strip_suffix("/websocket")?;
    let ok = !name.is_empty() && !name.contains('/') && name.chars().count() <= 64;
    ok.then(|| name.to_owned())
}

async fn connection(stream: TcpStream, hub: Arc<Hub>) {
    let mut room_name = None;
    // The error type is tungstenite's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        match room_of(req.uri().path()) {
            Some(name) => {
                room_name = Some(name);
                Ok(resp)
            }
            None => {
                let mut not_found = ErrorResponse::new(Some("Not Found".to_owned()));
                *not_found.status_mut() = http::StatusCode::NOT_FOUND;
                Err(not_found)
            }
        }
    };
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let Some(room_name) = room_name else { return };
    let (tx, mut rx) = mpsc::channel(QUEUE_FRAMES);
    let (room, id) = hub.join(&room_name, tx);
    let mut name: Option<String> = None;
    loop {
        tokio::select! {
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                match (&name, serde_json::from_str::<serde_json::Value>(&text)) {
                    (_, Err(_)) => {
                        let e = Message::text(r#"{"error":"Invalid JSON."}"#);
                        if ws.send(e).await.is_err() { break; }
                    }
                    (None, Ok(hello)) => {
                        let n = hello.get("name").and_then(|n| n.as_str()).filter(|n| !n.is_empty());
                        let n = n.unwrap_or("anonymous").to_owned();
                        room.hello(id, n.clone());
                        name = Some(n);
                    }
                    (Some(n), Ok(msg)) => match msg.get("message").and_then(|m| m.as_str()) {
                        Some(m) => room.message(n, m),
                        None => {
                            let e = Message::text(
                                r#"{"error":"Expected an object with a \"message\" field."}"#,
                            );
                            if ws.send(e).await.is_err() { break; }
                        }
                    },
                }
            }
            out = rx.recv() => {
                let Some(first) = out else { break };
                if ws.feed(Message::Text(first)).await.is_err() { break; }
                let mut failed = false;
                while let Ok(more) = rx.try_recv() {
                    if ws.feed(Message::Text(more)).await.is_err() { failed = true; break; }
                }
                if failed || ws.flush().await.is_err() { break; }
            }
        }
    }
    hub.leave(&room_name, &room, id);
    let _ = ws.close(None).await;
}

#[cfg(test)]
mod tests {
    use super::room_of;

    #[test]
    fn routes() {
        assert_eq!(
            room_of("/api/room/general/websocket").as_deref(),
            Some("general")
        );
        assert_eq!(room_of("/api/room//websocket"), None);
        assert_eq!(room_of("/room/general/websocket"), None);
        assert_eq!(room_of("/api/room/a/b/websocket"), None);
    }
}
