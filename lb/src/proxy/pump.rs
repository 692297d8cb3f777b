//! The byte pump between a client and a backend connection.
//!
//! On Linux each direction moves bytes socket → pipe → socket with
//! `splice(2)`, so payload never enters user space. Elsewhere it copies
//! through a buffer. A direction that reads EOF shuts down the write side of
//! the other socket (half-close) and the other direction carries on; an
//! error in either direction ends both.
//!
//! Pipes are not made per connection: a direction takes an empty pipe from a
//! small per-thread free list only while it has bytes in flight and gives it
//! back empty, so an idle connection holds no pipe and a busy proxy makes
//! almost no `pipe2`/`close` calls.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::endpoint::Endpoint;

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    ToBackend,
    FromBackend,
}

/// Moves bytes both ways until both sides are done, an error occurs, or
/// nothing moved for `idle` (when set), then closes both sockets. Bytes are
/// counted on `ep` as they move. Returns (bytes to the backend, bytes from
/// it).
pub async fn pump(
    client: TcpStream,
    backend: TcpStream,
    ep: &Endpoint,
    idle: Option<Duration>,
) -> io::Result<(u64, u64)> {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let touch = || last.store(start.elapsed().as_millis() as u64, Relaxed);
    // Directions that reached EOF. The second one to do so skips its
    // `shutdown(SHUT_WR)`: both sockets are closed as soon as this returns,
    // and closing a socket whose peer already sent FIN (so nothing is left
    // unread) sends the same FIN.
    let ended = AtomicU8::new(0);
    let both = async {
        tokio::try_join!(
            one_way(&client, &backend, ep, Way::ToBackend, &touch, &ended),
            one_way(&backend, &client, ep, Way::FromBackend, &touch, &ended),
        )
    };
    match idle {
        None => both.await,
        Some(idle) => {
            let watch = async {
                loop {
                    let at = start + Duration::from_millis(last.load(Relaxed)) + idle;
                    tokio::time::sleep_until(at).await;
                    let quiet = start
                        .elapsed()
                        .saturating_sub(Duration::from_millis(last.load(Relaxed)));
                    if quiet >= idle {
                        return;
                    }
                }
            };
            tokio::select! {
                r = both => r,
                () = watch => Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
            }
        }
    }
}

fn count(ep: &Endpoint, way: Way, n: u64) {
    match way {
        Way::ToBackend => ep.add_bytes(n, 0),
        Way::FromBackend => ep.add_bytes(0, n),
    }
}

/// Called when `from` reached EOF: half-closes `to`, unless the other
/// direction already ended (see `ended` in [`pump`]).
fn eof(to: &TcpStream, ended: &AtomicU8) {
    if ended.fetch_add(1, Relaxed) == 0 {
        // The peer may already be gone; the other direction reports that.
        let _ = socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
    }
}

/// A per-thread free list of empty pipes (Linux).
#[cfg(target_os = "linux")]
mod pipes {
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::OwnedFd;

    use nix::fcntl::OFlag;

    /// Pipes kept per thread; more are closed when given back.
    pub(super) const KEEP: usize = 64;

    /// A pipe, both ends non-blocking.
    pub(super) struct Pipe {
        pub(super) r: OwnedFd,
        pub(super) w: OwnedFd,
    }

    thread_local! {
        static FREE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    }

    impl Pipe {
        /// An empty pipe: a kept one, or a new one.
        pub(super) fn take() -> io::Result<Pipe> {
            if let Some(p) = FREE.with_borrow_mut(Vec::pop) {
                return Ok(p);
            }
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
            Ok(Pipe { r, w })
        }

        /// Keeps this pipe for reuse. Only an EMPTY pipe may be given back;
        /// one that may hold bytes is dropped (closed) instead.
        pub(super) fn give_back(self) {
            FREE.with_borrow_mut(|free| {
                if free.len() < KEEP {
                    free.push(self);
                }
            });
        }

        /// Pipes kept on this thread now.
        #[cfg(test)]
        pub(super) fn kept() -> usize {
            FREE.with_borrow(Vec::len)
        }
    }
}

#[cfg(target_os = "linux")]
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    ep: &Endpoint,
    way: Way,
    touch: &impl Fn(),
    ended: &AtomicU8,
) -> io::Result<u64> {
    use nix::fcntl::{splice, SpliceFFlags};
    use pipes::Pipe;
    use tokio::io::Interest;

    const CHUNK: usize = 1 << 20;
    // Reads are copied through a small buffer until one fills it: for a few
    // hundred bytes that is cheaper than two splices. From then on the flow
    // is bulk and everything goes through splice.
    const SMALL: usize = 4096;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut total = 0u64;
    let mut small: Option<Vec<u8>> = None;
    let mut bulk = false;
    loop {
        from.readable().await?;
        if !bulk {
            let buf = small.get_or_insert_with(|| vec![0; SMALL]);
            let n = match from.try_read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                eof(to, ended);
                return Ok(total);
            }
            write_all(to, &buf[..n]).await?;
            if n == SMALL {
                bulk = true;
                small = None;
            }
            total += n as u64;
            count(ep, way, n as u64);
            touch();
            continue;
        }
        // Socket -> pipe. A pipe is held only from here until it is empty
        // again; only the socket can make this step wait.
        let pipe = Pipe::take()?;
        let n = match from.try_io(Interest::READABLE, || {
            splice(from, None, &pipe.w, None, CHUNK, flags).map_err(io::Error::from)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pipe.give_back();
                continue;
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            pipe.give_back();
            eof(to, ended);
            return Ok(total);
        }
        // Pipe -> socket, until the pipe is empty again. On an error or a
        // cancellation the pipe, maybe not empty, is dropped, not kept.
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(&pipe.r, None, to, None, left, flags).map_err(io::Error::from)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        pipe.give_back();
        total += n as u64;
        count(ep, way, n as u64);
        touch();
    }
}

/// Writes all of `buf` to `to`.
async fn write_all(to: &TcpStream, buf: &[u8]) -> io::Result<()> {
    use tokio::io::Interest;
    let mut off = 0;
    while off < buf.len() {
        to.writable().await?;
        match to.try_io(Interest::WRITABLE, || to.try_write(&buf[off..])) {
            Ok(m) => off += m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    ep: &Endpoint,
    way: Way,
    touch: &impl Fn(),
    ended: &AtomicU8,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        from.readable().await?;
        let n = match from.try_read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            eof(to, ended);
            return Ok(total);
        }
        write_all(to, &buf[..n]).await?;
        total += n as u64;
        count(ep, way, n as u64);
        touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Two connected pairs: (client side, proxy's client end) and
    /// (proxy's backend end, backend side).
    async fn pairs() -> ((TcpStream, TcpStream), (TcpStream, TcpStream)) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        let (c1, s1) = tokio::join!(TcpStream::connect(a), l.accept());
        let (c2, s2) = tokio::join!(TcpStream::connect(a), l.accept());
        ((c1.unwrap(), s1.unwrap().0), (c2.unwrap(), s2.unwrap().0))
    }

    fn ep() -> Endpoint {
        Endpoint::new(&Backend::new("127.0.0.1:1".parse().unwrap()))
    }

    #[tokio::test]
    async fn moves_bytes_both_ways_and_honours_half_close() {
        let ((mut client, proxy_c), (proxy_b, mut backend)) = pairs().await;
        let e = ep();
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let expected = payload.clone();
        let backend_side = async move {
            // Read everything the client sends (until its half-close), then
            // answer and close.
            let mut got = Vec::new();
            backend.read_to_end(&mut got).await.unwrap();
            backend.write_all(b"thanks").await.unwrap();
            backend.shutdown().await.unwrap();
            got
        };
        let client_side = async move {
            client.write_all(&payload).await.unwrap();
            client.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            reply
        };
        let (moved, got, reply) =
            tokio::join!(pump(proxy_c, proxy_b, &e, None), backend_side, client_side);
        assert_eq!(moved.unwrap(), (3_000_000, 6));
        assert!(got == expected, "payload corrupted");
        assert_eq!(reply, b"thanks");
        assert_eq!(e.bytes(), (3_000_000, 6));
    }

    #[tokio::test]
    async fn idle_timeout_ends_a_quiet_connection() {
        let ((_client, proxy_c), (proxy_b, _backend)) = pairs().await;
        let e = ep();
        let t = Instant::now();
        let r = pump(proxy_c, proxy_b, &e, Some(Duration::from_millis(150))).await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn activity_keeps_an_idle_limited_connection_open() {
        let ((mut client, proxy_c), (proxy_b, mut backend)) = pairs().await;
        let e = ep();
        let talk = async move {
            for _ in 0..5 {
                client.write_all(b"x").await.unwrap();
                let mut b = [0u8; 1];
                backend.read_exact(&mut b).await.unwrap();
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            client.shutdown().await.unwrap();
            backend.shutdown().await.unwrap();
        };
        // 5 × 60 ms = 300 ms of talk through a 150 ms idle limit.
        let (r, ()) = tokio::join!(
            pump(proxy_c, proxy_b, &e, Some(Duration::from_millis(150))),
            talk
        );
        assert_eq!(r.unwrap(), (5, 0));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pipes_are_kept_and_reused() {
        // 100 kB up (past the copied start: spliced), 4 bytes down (copied).
        async fn exchange() {
            let ((mut client, proxy_c), (proxy_b, mut backend)) = pairs().await;
            let e = ep();
            let ping = vec![7u8; 100_000];
            let expected = ping.clone();
            let talk = async move {
                client.write_all(&ping).await.unwrap();
                client.shutdown().await.unwrap();
                let mut got = Vec::new();
                backend.read_to_end(&mut got).await.unwrap();
                backend.write_all(b"pong").await.unwrap();
                backend.shutdown().await.unwrap();
                let mut reply = Vec::new();
                client.read_to_end(&mut reply).await.unwrap();
                (got, reply)
            };
            let (moved, (got, reply)) = tokio::join!(pump(proxy_c, proxy_b, &e, None), talk);
            assert_eq!(moved.unwrap(), (100_000, 4));
            assert!(got == expected, "payload corrupted");
            assert_eq!(reply, b"pong");
        }
        exchange().await;
        assert_eq!(
            pipes::Pipe::kept(),
            1,
            "one direction spliced, through one pipe"
        );
        for _ in 0..5 {
            exchange().await;
            assert_eq!(pipes::Pipe::kept(), 1, "a new pipe was made");
        }
    }
}
