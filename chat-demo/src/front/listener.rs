//! The HTTP server loop: accepts TCP connections under a total and a
//! per-IP cap, serves each with hyper's HTTP/1 under a request-head and a
//! keep-alive idle deadline (`deadline.rs`), and drains them at shutdown.
//!
//! `axum::serve` has no timers and no caps: a connection that never sends
//! a byte would be held for ever, and one IP could take every file
//! descriptor. Here a connection past a cap is closed at once (never
//! queued), and the slot it takes is held by its I/O object, so it is
//! given back when the connection ends, whether it stayed HTTP or became a
//! WebSocket owned by the runtime.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::deadline::{Limits, Responded, Watch};

/// Default of [`HttpLimits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`HttpLimits::keep_alive_timeout`].
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default of [`HttpLimits::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`HttpLimits::max_connections`].
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 8192;
/// Default of [`HttpLimits::max_connections_per_ip`].
pub const DEFAULT_MAX_TCP_CONNECTIONS_PER_IP: usize = 128;

/// Limits of the HTTP server (not of WebSockets, which have their own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a connection may take to send a whole request head:
    /// counted from the connection's start for its first request, from the
    /// first byte of the request for later ones. Default 10 s.
    pub header_timeout: Duration,
    /// How long a connection may stay idle between the end of a response
    /// and the first byte of its next request. Default
    /// [`DEFAULT_KEEP_ALIVE_TIMEOUT`] (75 s).
    pub keep_alive_timeout: Duration,
    /// How long a WebSocket upgrade's request body may take (the routes
    /// take none; a client that announces one and trickles it is cut with
    /// 408). Default 10 s.
    pub body_timeout: Duration,
    /// Most TCP connections open at once, WebSockets included; one more is
    /// closed at once. Default [`DEFAULT_MAX_TCP_CONNECTIONS`]; keep it
    /// below the process's file limit.
    pub max_connections: usize,
    /// Most TCP connections open at once from one peer IP (an IPv6 /64 by
    /// default), WebSockets included; 0 for no limit. Not applied when the
    /// client IP comes from a trusted header: the peer is then the proxy.
    /// Default [`DEFAULT_MAX_TCP_CONNECTIONS_PER_IP`].
    pub max_connections_per_ip: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_TCP_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_TCP_CONNECTIONS_PER_IP,
        }
    }
}

/// Open TCP connections, in total and per peer key.
#[derive(Debug, Default)]
pub(crate) struct TcpSlots {
    max_total: usize,
    max_per_key: usize,
    /// The total and the per-key counts (only keys with a connection). A
    /// std mutex, held for a map update only.
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// A taken slot: given back when dropped.
#[derive(Debug)]
pub(crate) struct TcpSlot {
    slots: Arc<TcpSlots>,
    key: Option<String>,
}

impl TcpSlots {
    pub(crate) fn new(max_total: usize, max_per_key: usize) -> TcpSlots {
        TcpSlots {
            max_total,
            max_per_key,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// Takes a slot, counted under `key` too when given; `None` when a cap
    /// is reached.
    pub(crate) fn try_acquire(self: &Arc<Self>, key: Option<String>) -> Option<TcpSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.0 >= self.max_total {
            return None;
        }
        if let Some(key) = &key {
            let count = open.1.get(key).copied().unwrap_or(0);
            if self.max_per_key > 0 && count >= self.max_per_key {
                return None;
            }
            open.1.insert(key.clone(), count + 1);
        }
        open.0 += 1;
        Some(TcpSlot {
            slots: self.clone(),
            key,
        })
    }

    /// Open connections in total.
    pub(crate) fn total(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for TcpSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(key) = &self.key
            && let Some(count) = open.1.get_mut(key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.1.remove(key);
            }
        }
    }
}

/// What the front door keeps for the life of one TCP connection, put
/// there by a request's handler (the per-IP WebSocket slot of an accepted
/// upgrade). The connection's I/O object owns it, and hyper hands that
/// object to the runtime's socket task at an upgrade, so it is dropped
/// exactly when the connection is, on whatever node holds it; the objects
/// behind the socket know nothing of it. Each request of the connection
/// carries a handle in its extensions.
#[derive(Clone, Default)]
pub(crate) struct ConnectionHold(Arc<Mutex<Vec<Box<dyn Send>>>>);

impl ConnectionHold {
    /// Keeps `value` until the connection is dropped.
    pub(crate) fn keep(&self, value: impl Send + 'static) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(value));
    }
}

impl std::fmt::Debug for ConnectionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.0.lock().map_or(0, |v| v.len());
        f.debug_struct("ConnectionHold")
            .field("held", &held)
            .finish()
    }
}

/// A TCP stream that holds its connection slot, and what the front door
/// keeps for the connection, for as long as it lives (through a WebSocket
/// upgrade too: hyper hands this object over), and tells its deadline
/// watch when bytes arrive.
#[derive(Debug)]
struct Slotted {
    io: TcpStream,
    _slot: TcpSlot,
    _hold: ConnectionHold,
    watch: Arc<Watch>,
}

impl AsyncRead for Slotted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.read();
        }
        polled
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What the loop needs besides the router.
pub(crate) struct Serving {
    pub(crate) router: Router,
    pub(crate) limits: HttpLimits,
    pub(crate) slots: Arc<TcpSlots>,
    /// Whether connections are counted per peer IP (not behind a trusted
    /// proxy), and the IPv6 prefix length of the key.
    pub(crate) per_ip: Option<u8>,
}

/// Accepts until `shutdown`, then stops accepting, asks every HTTP
/// connection to finish its request in flight and waits for them.
pub(crate) async fn run(
    listener: TcpListener,
    serving: Serving,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopping) = watch::channel(false);
    // Every connection task holds a sender; when all are gone, `recv`
    // returns None: the drain is complete.
    let (alive, mut drained) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors (EMFILE) or a connection reset
                    // before we took it: keep serving the others, but do not
                    // spin on an error that persists.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let key = serving
            .per_ip
            .map(|prefix| super::client_ip::ip_key(peer.ip(), prefix));
        let Some(slot) = serving.slots.try_acquire(key) else {
            tracing::debug!(%peer, "connection refused: TCP connection cap");
            metrics::counter!("chat_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        if let Err(error) = stream.set_nodelay(true) {
            // Chat frames are small and go out in bursts: without
            // TCP_NODELAY, Nagle's algorithm meets the client's delayed
            // ACK and holds them for about 40 ms.
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        let watch = Watch::new(Limits {
            header: serving.limits.header_timeout,
            keep_alive: serving.limits.keep_alive_timeout,
        });
        let hold = ConnectionHold::default();
        let io = TokioIo::new(Slotted {
            io: stream,
            _slot: slot,
            _hold: hold.clone(),
            watch: watch.clone(),
        });
        let router = serving.router.clone();
        let served = watch.clone();
        let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(hold.clone());
            served.request();
            let responded = Responded {
                watch: served.clone(),
            };
            let mut router = router.clone();
            async move {
                let response = tower_service::Service::call(&mut router, req).await;
                // The response ends when its body is dropped (written whole,
                // or the connection failed); an error drops `responded` here.
                response.map(|r| {
                    r.map(|body| {
                        axum::body::Body::new(Watched {
                            body,
                            _responded: responded,
                        })
                    })
                })
            }
        });
        let mut stopping = stopping.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                // Ours instead (`deadline.rs`): hyper's one timer would
                // bound the idle time between requests by the head's.
                .header_read_timeout(None)
                // Requests are a request line and a few headers; the
                // default of about 400 KB per connection is far more than
                // any client of ours sends.
                .max_buf_size(MAX_HEAD_BYTES);
            let conn = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                reason = watch.expired() => {
                    tracing::debug!(%peer, reason, "HTTP connection closed");
                    Ok(())
                }
                () = async { drop(stopping.wait_for(|s| *s).await) } => {
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        result = conn.as_mut() => result,
                        reason = watch.expired() => {
                            tracing::debug!(%peer, reason, "HTTP connection closed");
                            Ok(())
                        }
                    }
                }
            };
            // Upgraded to a WebSocket, or closed: reads no longer matter.
            watch.finish();
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    stop.send_replace(true);
    drop(alive);
    let _ = drained.recv().await;
    Ok(())
}

/// A response body that tells the connection's watch when it is dropped.
struct Watched {
    body: axum::body::Body,
    _responded: Responded,
}

impl axum::body::HttpBody for Watched {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The read buffer limit of an HTTP connection (request head included).
/// hyper's smallest allowed value is 8 KiB + 1.
const MAX_HEAD_BYTES: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_in_total_and_per_key_and_given_back() {
        let slots = Arc::new(TcpSlots::new(3, 2));
        let a1 = slots.try_acquire(Some("a".into())).expect("a1");
        let a2 = slots.try_acquire(Some("a".into())).expect("a2");
        assert!(slots.try_acquire(Some("a".into())).is_none(), "per key");
        let b = slots.try_acquire(Some("b".into())).expect("b");
        assert!(
            slots.try_acquire(Some("c".into())).is_none(),
            "total reached"
        );
        assert!(slots.try_acquire(None).is_none(), "total applies unkeyed");
        assert_eq!(slots.total(), 3);
        drop(a1);
        assert_eq!(slots.total(), 2);
        let a3 = slots.try_acquire(Some("a".into())).expect("a's slot back");
        drop((a2, a3, b));
        assert_eq!(slots.total(), 0);
        assert!(
            slots.open.lock().expect("lock").1.is_empty(),
            "keys forgotten at zero"
        );
    }

    proptest::proptest! {
        /// Random takes and gives back over a few keys, against a model of
        /// counts: a slot is granted exactly when the total and the key's
        /// count are under their caps, and the counts always match.
        #[test]
        fn slots_match_a_model(
            ops in proptest::collection::vec((0u8..4, proptest::bool::ANY), 1..200),
            max_total in 1usize..8,
            max_per_key in 0usize..4,
        ) {
            let slots = Arc::new(TcpSlots::new(max_total, max_per_key));
            let mut held: Vec<Vec<TcpSlot>> = (0..4).map(|_| Vec::new()).collect();
            for (key, take) in ops {
                let k = usize::from(key);
                if take {
                    let total: usize = held.iter().map(Vec::len).sum();
                    let fits = total < max_total && (max_per_key == 0 || held[k].len() < max_per_key);
                    let got = slots.try_acquire(Some(format!("k{key}")));
                    proptest::prop_assert_eq!(got.is_some(), fits);
                    held[k].extend(got);
                } else {
                    held[k].pop();
                }
                let total: usize = held.iter().map(Vec::len).sum();
                proptest::prop_assert_eq!(slots.total(), total);
            }
            drop(held);
            proptest::prop_assert_eq!(slots.total(), 0);
            proptest::prop_assert!(slots.open.lock().expect("lock").1.is_empty());
        }
    }

    #[test]
    fn zero_per_key_means_no_per_key_limit() {
        let slots = Arc::new(TcpSlots::new(100, 0));
        let held: Vec<_> = (0..100)
            .map(|_| slots.try_acquire(Some("a".into())).expect("slot"))
            .collect();
        assert!(slots.try_acquire(Some("a".into())).is_none(), "total");
        drop(held);
        assert_eq!(slots.total(), 0);
    }
}
