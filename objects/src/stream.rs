//! Streamed response bodies: a `fetch_stream` handler returns a
//! [`StreamResponse`] whose body the object keeps feeding from later
//! events (server-sent events, long downloads), without holding the object
//! for the stream's lifetime.
//!
//! The object keeps the [`BodySender`]; chunks go through
//! [`Context::stream_send`](crate::Context::stream_send), so they leave
//! only once their event's writes are durable (the output gate), like
//! WebSocket frames. Each stream is bounded in chunks and bytes queued; a
//! reader that falls behind is cut (its body ends with [`StreamCut`]), as a
//! slow WebSocket reader is.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

/// Chunks one stream may have queued (sent, not yet read).
pub const MAX_STREAM_CHUNKS: usize = 256;
/// Bytes one stream may have queued; also the largest chunk.
pub const MAX_STREAM_BYTES: usize = 1 << 20;

/// A response whose body is streamed: what
/// [`Object::fetch_stream`](crate::Object::fetch_stream) returns.
pub type StreamResponse = http::Response<BodyStream>;

/// The stream was cut because its reader fell behind (more than
/// [`MAX_STREAM_CHUNKS`] chunks or [`MAX_STREAM_BYTES`] bytes queued).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "stream cut: its reader fell behind ({MAX_STREAM_CHUNKS} chunks or {MAX_STREAM_BYTES} bytes queued)"
)]
pub struct StreamCut;

/// Why a chunk was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsent {
    /// The reader is gone, or the stream was cut.
    Closed,
    /// The reader fell behind: the stream is now cut.
    Cut,
}

struct State {
    queued_bytes: AtomicUsize,
    cut: AtomicBool,
}

/// The object's end of a streamed body. Cheap to clone; the body ends
/// when every clone is dropped (also when the instance is reset or
/// evicted, since the instance holds them).
#[derive(Clone)]
pub struct BodySender {
    tx: mpsc::Sender<Bytes>,
    state: Arc<State>,
}

impl std::fmt::Debug for BodySender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodySender")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl BodySender {
    /// True once the reader has gone or the stream was cut: drop it.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.state.cut.load(Ordering::Acquire)
    }

    /// Queues a chunk (the output gate has opened for it).
    pub(crate) fn send(&self, chunk: Bytes) -> Result<(), Unsent> {
        if self.is_closed() {
            return Err(Unsent::Closed);
        }
        let len = chunk.len();
        let before = self.state.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > MAX_STREAM_BYTES || self.tx.try_send(chunk).is_err() {
            self.state.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            if self.tx.is_closed() {
                return Err(Unsent::Closed);
            }
            self.state.cut.store(true, Ordering::Release);
            return Err(Unsent::Cut);
        }
        Ok(())
    }
}

/// Counts one open stream of an object until the body is dropped.
pub(crate) struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    pub(crate) fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::AcqRel);
        OpenGuard(open.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The reader's end: an [`http_body::Body`] a server (hyper, axum) can
/// send as it is (`axum::body::Body::new(body)`).
pub struct BodyStream {
    rx: mpsc::Receiver<Bytes>,
    state: Arc<State>,
    reported_cut: bool,
    _open: OpenGuard,
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyStream").finish_non_exhaustive()
    }
}

/// A new stream: the sender for the object, the body for the response.
pub(crate) fn channel(open: OpenGuard) -> (BodySender, BodyStream) {
    let (tx, rx) = mpsc::channel(MAX_STREAM_CHUNKS);
    let state = Arc::new(State {
        queued_bytes: AtomicUsize::new(0),
        cut: AtomicBool::new(false),
    });
    (
        BodySender {
            tx,
            state: state.clone(),
        },
        BodyStream {
            rx,
            state,
            reported_cut: false,
            _open: open,
        },
    )
}

impl http_body::Body for BodyStream {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        let this = &mut *self;
        if this.state.cut.load(Ordering::Acquire) {
            if this.reported_cut {
                return Poll::Ready(None);
            }
            this.reported_cut = true;
            this.rx.close();
            return Poll::Ready(Some(Err(StreamCut)));
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                this.state
                    .queued_bytes
                    .fetch_sub(chunk.len(), Ordering::AcqRel);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_that_falls_behind_is_cut_and_the_sender_sees_it() {
        let open = Arc::new(AtomicUsize::new(0));
        let (tx, body) = channel(OpenGuard::new(&open));
        assert_eq!(open.load(Ordering::Acquire), 1);
        for _ in 0..MAX_STREAM_CHUNKS {
            tx.send(Bytes::from_static(b"x")).expect("room");
        }
        assert_eq!(tx.send(Bytes::from_static(b"x")), Err(Unsent::Cut));
        assert!(tx.is_closed());
        assert_eq!(tx.send(Bytes::from_static(b"x")), Err(Unsent::Closed));
        drop(body);
        assert_eq!(open.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_byte_bound_cuts_too() {
        let open = Arc::new(AtomicUsize::new(0));
        let (tx, _body) = channel(OpenGuard::new(&open));
        tx.send(Bytes::from(vec![0; MAX_STREAM_BYTES]))
            .expect("fits");
        assert_eq!(tx.send(Bytes::from_static(b"y")), Err(Unsent::Cut));
    }
}
