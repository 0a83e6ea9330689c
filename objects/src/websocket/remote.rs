//! Sockets whose connection is on another node (the cargo feature
//! `cluster`). The owner of an object keeps such a socket in the object's
//! table like any other, so tags, attachments and hibernation work
//! unchanged; its handle sends frames over a link to the *edge*, the node
//! the client is connected to, which runs the real socket task. The
//! cluster implements the traits here (`cluster/sockets.rs`).

use std::sync::Arc;

use tokio::sync::oneshot;

use super::socket::{Deliver, Outgoing, SocketEvent, Table};
use crate::http::{Request, Response};
use crate::remote::Refusal;

/// The owner's side of the link to one edge node.
pub(crate) trait EdgeLink: Send + Sync {
    /// The edge node's id.
    fn edge(&self) -> &str;
    /// A socket accepted here whose connection is on the edge: its events
    /// arrive on the link and go to `socket`.
    fn register(&self, esid: u64, socket: RemoteSocket);
    /// Queues a frame or a close (behind earlier frames) for the socket;
    /// it goes out at the next [`flush`](Self::flush).
    fn send(&self, esid: u64, out: Outgoing);
    /// Sends what [`send`](Self::send) queued: called once the output
    /// gate has released an event's frames, so a broadcast's frames, all
    /// queued by then, cross as one message.
    fn flush(&self);
    /// Closes the socket at once, ahead of queued frames.
    fn kill(&self, esid: u64, code: u16, reason: String);
    /// Tells the edge the object's auto-response pair.
    fn auto_response(&self, id: &[u8; 32], pair: Option<(String, String)>);
    /// Tells the edge the socket's tags and attachment (queued behind
    /// what was sent before; it goes out at the next flush): what the
    /// edge hands the object's next owner should this one be lost.
    fn keep(&self, esid: u64, tags: Vec<String>, attachment: Option<bytes::Bytes>);
}

/// Where the events of a remote socket go on its owner.
#[derive(Clone)]
pub(crate) struct RemoteSocket {
    pub(crate) deliver: Arc<dyn Deliver>,
    pub(crate) table: Arc<Table>,
    pub(crate) id: [u8; 32],
    pub(crate) sid: u64,
}

impl RemoteSocket {
    /// The client's message or error, for the object. False when the
    /// object is not served here (the caller closes the socket).
    pub(crate) async fn event(&self, event: SocketEvent) -> bool {
        self.deliver.deliver(self.id, self.sid, event).await
    }

    /// The socket ended at the edge (or its link was lost): reported to
    /// the object once, as a local socket's end is.
    pub(crate) async fn ended(&self, close: super::CloseEvent) {
        let first = crate::sync::lock(&self.table).mark_closed(self.sid);
        if !first {
            return;
        }
        let delivered = self
            .deliver
            .deliver(self.id, self.sid, SocketEvent::Close(close))
            .await;
        if !delivered {
            crate::sync::lock(&self.table).remove(self.sid);
        }
    }

    /// The edge did not complete the upgrade: a socket the object never
    /// saw go live is forgotten.
    pub(crate) fn abandoned(&self) {
        let mut t = crate::sync::lock(&self.table);
        if !t.is_live(self.sid) {
            t.remove(self.sid);
        }
    }

    /// The edge answered the auto-response request at `ms`.
    pub(crate) fn stamp(&self, ms: u64) {
        crate::sync::lock(&self.table).stamp_auto_response(self.sid, ms);
    }
}

/// The request extension that marks a fetch as an upgrade forwarded by an
/// edge: [`Context::accept_websocket`](crate::Context::accept_websocket)
/// registers a remote socket instead of taking the connection.
#[derive(Clone)]
pub(crate) struct RemoteUpgrade {
    pub(crate) link: Arc<dyn EdgeLink>,
    pub(crate) esid: u64,
}

/// A socket handle's way to its remote socket.
#[derive(Clone)]
pub(crate) struct RemoteHandle {
    pub(crate) link: Arc<dyn EdgeLink>,
    pub(crate) esid: u64,
}

impl std::fmt::Debug for RemoteHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteHandle")
            .field("edge", &self.link.edge())
            .field("esid", &self.esid)
            .finish()
    }
}

/// The cluster's socket links, as the runtime reaches them.
pub(crate) trait SocketLinks: Send + Sync {
    /// Owner side: the live link from `edge`.
    fn edge(&self, edge: &str) -> Option<Arc<dyn EdgeLink>>;

    /// Edge side: forwards `req` (an upgrade, with hyper's upgrade handle
    /// in its extensions) to `owner`; the connection stays here and its
    /// frames cross on the link. The answer is the owner's response.
    ///
    /// # Errors
    ///
    /// The request cannot be forwarded (no upgrade handle).
    fn upgrade(
        &self,
        ns: Arc<str>,
        id: [u8; 32],
        owner: String,
        epoch: u64,
        chain: Vec<[u8; 32]>,
        req: Request,
    ) -> Result<oneshot::Receiver<Result<Response, Refusal>>, Refusal>;

    /// Edge side: where the events of socket `sid` go when its object
    /// moved away from this node and this node became its edge.
    fn forwarded(&self, sid: u64) -> Option<Arc<dyn super::socket::Deliver>>;

    /// `Frames` messages this node received as an edge.
    #[cfg(test)]
    fn frames_in(&self) -> u64;
}

/// Whether `req` is a WebSocket upgrade this node can take the
/// connection of.
pub(crate) fn is_upgrade(req: &Request) -> bool {
    req.extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_some()
        && super::socket::handshake(req).is_ok()
}
