//! The write buffer in front of a client connection.
//!
//! Pingora's own listeners put a small write buffer (one MSS, 1460 bytes)
//! between an HTTP session and the socket, and its HTTP code flushes
//! wherever bytes must leave (end of a body, a header without body, every
//! chunk of a chunked or close-delimited body, 1xx). The buffer is set by a
//! crate-private call in pingora's accept path, which our own accept loop
//! does not go through, so a `Stream` made from a `TcpStream` writes
//! straight through: a small response went out as two `sendto` (header,
//! then body), two TCP segments and two wake-ups of the client. [`Buffered`]
//! restores pingora's layering: header and a small body leave in one write.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN, IO,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};

/// Pingora's default L4 write buffer: one Ethernet MSS.
pub const WRITE_BUFFER: usize = 1460;

/// `S` behind a write buffer of [`WRITE_BUFFER`] bytes; reads go straight
/// to `S` (after any bytes given back with [`Buffered::with_prefix`]).
/// Writes larger than the buffer bypass it (tokio's `BufWriter`).
#[derive(Debug)]
pub struct Buffered<S: AsyncWrite> {
    inner: BufWriter<S>,
    /// Bytes already read from `S` by someone else, to be read first.
    prefix: Vec<u8>,
    /// How much of `prefix` has been read.
    at: usize,
}

impl<S: AsyncWrite> Buffered<S> {
    /// Wraps `stream`.
    pub fn new(stream: S) -> Self {
        Self::with_prefix(stream, Vec::new())
    }

    /// Wraps `stream` whose first bytes, `prefix`, were already read from
    /// it (the fast path handing a connection to pingora).
    pub fn with_prefix(stream: S, prefix: Vec<u8>) -> Self {
        Buffered {
            inner: BufWriter::with_capacity(WRITE_BUFFER, stream),
            prefix,
            at: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.prefix[self.at..]
    }

    fn get(&self) -> &S {
        self.inner.get_ref()
    }
}

impl<S: IO> AsyncRead for Buffered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let pending = self.pending();
        if !pending.is_empty() {
            let n = pending.len().min(buf.remaining());
            buf.put_slice(&pending[..n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(self.inner.get_mut()).poll_read(cx, buf)
    }
}

impl<S: IO> AsyncWrite for Buffered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: IO> Shutdown for Buffered<S> {
    async fn shutdown(&mut self) {
        // What is buffered goes first, then the inner stream's own shutdown
        // (TLS sends its close_notify there).
        if let Err(e) = self.inner.flush().await {
            tracing::debug!(error = %e, "flushing before shutdown");
        }
        Shutdown::shutdown(self.inner.get_mut()).await;
    }
}

impl<S: IO> UniqueID for Buffered<S> {
    fn id(&self) -> UniqueIDType {
        self.get().id()
    }
}

impl<S: IO> Ssl for Buffered<S> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.get().get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.get().get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.get().selected_alpn_proto()
    }
}

impl<S: IO> GetTimingDigest for Buffered<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.get().get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.get().get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.get().get_write_pending_time()
    }
}

impl<S: IO> GetProxyDigest for Buffered<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.get().get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.get_mut().set_proxy_digest(digest);
    }
}

impl<S: IO> GetSocketDigest for Buffered<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.get().get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.get_mut().set_socket_digest(digest);
    }
}

#[async_trait]
impl<S: IO> Peek for Buffered<S> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let pending = self.pending();
        if pending.is_empty() {
            return self.inner.get_mut().try_peek(buf).await;
        }
        // Pingora peeks for the HTTP/2 preface. The fast path hands a
        // connection over with the whole preface or with an HTTP/1 head, so
        // what was given back decides; bytes past it read as zeros (which
        // no preface holds), never as "cannot peek" (pingora would then
        // take the connection for HTTP/2).
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        buf[n..].fill(0);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::protocols::l4::stream::Stream;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// Reads what arrives within a short time.
    async fn drain(s: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn small_writes_wait_for_flush_and_large_ones_pass() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (tcp, _) = l.accept().await.unwrap();
        let mut b = Buffered::new(Stream::from(tcp));

        b.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        assert!(drain(&mut peer).await.is_empty(), "held until flush");
        b.write_all(b"ok").await.unwrap();
        b.flush().await.unwrap();
        assert_eq!(drain(&mut peer).await, b"HTTP/1.1 200 OK\r\n\r\nok");

        let big = vec![b'x'; 3 * WRITE_BUFFER];
        b.write_all(&big).await.unwrap();
        assert_eq!(drain(&mut peer).await.len(), big.len(), "no flush needed");

        // Reads come from the socket; shutdown sends what is buffered.
        peer.write_all(b"ping").await.unwrap();
        let mut four = [0u8; 4];
        b.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"ping");
        b.write_all(b"bye").await.unwrap();
        Shutdown::shutdown(&mut b).await;
        assert_eq!(drain(&mut peer).await, b"bye");
    }

    #[tokio::test]
    async fn digests_and_peek_reach_the_stream() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (tcp, _) = l.accept().await.unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
        let mut b = Buffered::new(Stream::from(tcp));
        b.set_socket_digest(SocketDigest::from_raw_fd(fd));
        assert!(b.get_socket_digest().is_some());
        assert_eq!(b.id(), fd);
        assert!(b.get_ssl().is_none());

        peer.write_all(b"PRI * HTTP/2.0").await.unwrap();
        let mut head = [0u8; 3];
        assert!(b.try_peek(&mut head).await.unwrap());
        let mut all = [0u8; 14];
        b.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"PRI * HTTP/2.0", "peeked bytes are read again");
    }
}
