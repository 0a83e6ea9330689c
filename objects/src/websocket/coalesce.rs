//! A write side that gathers the frames of one wake and hands them to the
//! kernel in one `write` on flush, then frees its buffer.
//!
//! tungstenite is set up with no write buffer of its own (a buffer it keeps
//! would cost every idle socket its capacity), so without this each frame
//! would be one system call: on a broadcast to 1,000 sockets that is most
//! of the server's CPU. Here a socket task that finds 12 frames queued
//! writes them with one call, and an idle socket holds no buffer at all.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes gathered before a write waits for the kernel to take them:
/// a peer that does not read holds at most this much here (plus what
/// tungstenite holds), and the writer then waits, which is how slow
/// readers are noticed.
pub(crate) const MAX_GATHERED: usize = 64 * 1024;

/// The stream, with writes gathered until flush.
#[derive(Debug)]
pub(crate) struct Coalesce<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    sent: usize,
}

impl<S> Coalesce<S> {
    pub(crate) fn new(inner: S) -> Self {
        Coalesce {
            inner,
            buf: Vec::new(),
            sent: 0,
        }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out what is gathered; on success the buffer is freed.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending() + data.len() > MAX_GATHERED {
            ready!(this.poll_drain(cx))?;
            if data.len() >= MAX_GATHERED {
                // Large enough on its own: no copy.
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the writes that reach it.
    struct Counting {
        writes: usize,
        data: Vec<u8>,
        /// Accept at most this many bytes per write.
        chunk: usize,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = data.len().min(self.chunk);
            self.writes += 1;
            self.data.extend_from_slice(&data[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn counting(chunk: usize) -> Coalesce<Counting> {
        Coalesce::new(Counting {
            writes: 0,
            data: Vec::new(),
            chunk,
        })
    }

    #[tokio::test]
    async fn frames_of_one_flush_go_in_one_write_and_the_buffer_is_freed() {
        let mut w = counting(usize::MAX);
        for i in 0..12u8 {
            w.write_all(&[i; 10]).await.expect("write");
        }
        assert_eq!(w.inner.writes, 0, "nothing before the flush");
        w.flush().await.expect("flush");
        assert_eq!(w.inner.writes, 1);
        assert_eq!(w.inner.data.len(), 120);
        assert_eq!(&w.inner.data[110..], &[11; 10]);
        assert_eq!(w.buf.capacity(), 0, "idle sockets hold no buffer");
    }

    #[tokio::test]
    async fn partial_writes_keep_order_and_large_writes_skip_the_copy() {
        let mut w = counting(7);
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        w.write_all(&data[..500]).await.expect("write");
        w.write_all(&data[500..]).await.expect("write");
        w.flush().await.expect("flush");
        assert_eq!(w.inner.data, data, "every byte, in order");
        let big = vec![9u8; MAX_GATHERED + 1];
        let mut w = counting(usize::MAX);
        w.write_all(b"head").await.expect("write");
        w.write_all(&big).await.expect("write");
        w.flush().await.expect("flush");
        assert_eq!(
            w.inner.writes, 2,
            "the gathered head, then the large write as is"
        );
        assert_eq!(w.inner.data.len(), 4 + big.len());
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_makes_writes_wait() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = Coalesce::new(a);
        // Gathering never waits...
        w.write_all(&vec![1u8; MAX_GATHERED])
            .await
            .expect("gathered");
        {
            // ...but past the bound the gathered bytes must reach the peer
            // first, and the peer reads nothing yet: the write waits.
            let more = w.write_all(b"x");
            tokio::pin!(more);
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(more.as_mut().poll(&mut cx).is_pending());
        }
        // Once the peer reads, everything arrives, in order.
        let writer = async {
            w.write_all(b"x").await?;
            w.flush().await
        };
        let reader = async {
            let mut sink = vec![0u8; MAX_GATHERED + 1];
            b.read_exact(&mut sink).await.map(|_| sink)
        };
        let (written, read) = tokio::join!(writer, reader);
        written.expect("written");
        let read = read.expect("read");
        assert!(read[..MAX_GATHERED].iter().all(|&x| x == 1));
        assert_eq!(read[MAX_GATHERED], b'x');
    }
}
