//! A client socket with a write timeout and a byte counter. hyper has a deadline for the
//! request head but none for writes: a client that asks for a large table and never reads
//! would hold its connection (and the response) forever. Here a write that cannot make
//! progress for the write timeout fails with `TimedOut`, which ends the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::metrics::Metrics;

/// A stream whose writes must make progress within `write_timeout`.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    write_timeout: Duration,
    /// Running while a write is blocked: since when the client has not accepted a byte.
    stalled: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
}

impl<S> Guarded<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, write_timeout: Duration, metrics: Arc<Metrics>) -> Guarded<S> {
        Guarded {
            inner,
            write_timeout,
            stalled: None,
            metrics,
        }
    }

    /// After a write attempt: progress resets the clock; a blocked write starts it, and
    /// fails once it runs out.
    fn after_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => {
                let timeout = self.write_timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(sleep.as_mut().poll(cx));
                self.stalled = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    WriteTimedOut(timeout),
                )))
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

/// The error a stalled write ends with (recognised to count it).
#[derive(Debug)]
pub struct WriteTimedOut(pub Duration);

impl std::fmt::Display for WriteTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the client accepted no byte for {} ms",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for WriteTimedOut {}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        let r = self.after_write(cx, r);
        if let Poll::Ready(Ok(n)) = r {
            self.metrics.sent(n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let r = self.after_write(cx, r);
        if let Poll::Ready(Ok(n)) = r {
            self.metrics.sent(n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.after_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.after_write(cx, r)
    }
}
