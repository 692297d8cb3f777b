//! Balancer sockets made inside a network namespace (a network's sandbox):
//! the `shoal-lb` [`Sockets`] netd hands to VIP and published-port
//! listeners. Each socket is created on a dedicated thread that entered the
//! namespace first ([`NsWorker`]), never on a tokio worker, and handed back
//! as a file descriptor; a socket keeps the namespace it was made in.
//! Outbound sockets can be bound to a source address (the node's lb
//! address in that network) so replies come home.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use shoal_lb::sockets::Sockets;
use shoal_overlay::netns::{NsTarget, NsWorker};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket};

/// How long data sent to a replica may stay unacknowledged before the
/// connection fails (`TCP_USER_TIMEOUT`).
pub const UNACKED_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Sockets made inside one namespace.
pub struct NetnsSockets {
    label: String,
    worker: Arc<NsWorker>,
    source: Option<IpAddr>,
}

impl std::fmt::Debug for NetnsSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsSockets")
            .field("netns", &self.label)
            .field("source", &self.source)
            .finish()
    }
}

impl NetnsSockets {
    /// Sockets inside `netns` (a name under /run/netns or a path), outbound
    /// ones bound to `source` when given.
    pub fn new(netns: &str, source: Option<IpAddr>) -> Result<NetnsSockets, shoal_overlay::Error> {
        Ok(NetnsSockets {
            label: netns.to_string(),
            worker: Arc::new(NsWorker::spawn(&NsTarget::from_config(netns))?),
            source,
        })
    }

    /// Runs `f` on the namespace's thread (to make sockets there).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        match self.worker.call(move |_| async move { Ok(f()) }) {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(format!("namespace {}: {e}", self.label))),
        }
    }

    /// Makes a socket in the namespace and runs `setup` on it there.
    fn make(
        &self,
        addr: SocketAddr,
        setup: impl FnOnce(&Socket) -> io::Result<()> + Send + 'static,
    ) -> io::Result<Socket> {
        let made = self.worker.call(move |_| async move {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
                .and_then(|s| {
                    s.set_nonblocking(true)?;
                    s.set_cloexec(true)?;
                    setup(&s)?;
                    Ok(s)
                });
            Ok(s)
        });
        match made {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(format!("namespace {}: {e}", self.label))),
        }
    }
}

impl Sockets for NetnsSockets {
    fn outbound(&self, to: SocketAddr) -> io::Result<TcpSocket> {
        let source = self.source;
        let s = self.make(to, move |s| {
            // A replica behind a node that vanished (link cut, node gone)
            // never acknowledges: fail the connection after this long
            // instead of the kernel's ~15 minutes, so a pooled connection's
            // request is retried on another replica.
            s.set_tcp_user_timeout(Some(UNACKED_LIMIT))?;
            match source {
                Some(ip) => s.bind(&SocketAddr::new(ip, 0).into()),
                None => Ok(()),
            }
        })?;
        Ok(TcpSocket::from_std_stream(std::net::TcpStream::from(s)))
    }

    fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let s = self.make(addr, move |s| {
            s.set_reuse_address(true)?;
            s.bind(&addr.into())?;
            s.listen(4096)
        })?;
        TcpListener::from_std(std::net::TcpListener::from(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_tests::sock;
    use shoal_tests::Lab;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn listeners_and_connections_live_in_the_namespace() {
        let mut lab = Lab::new();
        let ns = lab.container("box");
        let sockets = NetnsSockets::new(&ns, None).unwrap();
        // A listener made for the namespace is reached from inside it...
        let addr: SocketAddr = format!("127.0.0.1:{}", port()).parse().unwrap();
        let l = sockets.listen(addr).unwrap();
        let inside =
            tokio::task::spawn_blocking(move || sock::connect(&ns, addr, None).map(|_| ()));
        let (mut accepted, _) = tokio::time::timeout(std::time::Duration::from_secs(5), l.accept())
            .await
            .unwrap()
            .unwrap();
        inside.await.unwrap().unwrap();
        accepted.write_all(b"x").await.unwrap();
        // ...and not from this process's namespace: nothing listens there.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());

        // An outbound socket reaches a server that exists only inside.
        let ns = lab.container("box2");
        let server_addr: SocketAddr = format!("127.0.0.1:{}", port()).parse().unwrap();
        let server = sock::listen(&ns, server_addr);
        let echo = sock::serve_echo(server, "hello\n");
        let out = NetnsSockets::new(&ns, Some("127.0.0.1".parse().unwrap())).unwrap();
        let mut c = out
            .outbound(server_addr)
            .unwrap()
            .connect(server_addr)
            .await
            .unwrap();
        let mut greeting = [0u8; 6];
        c.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"hello\n");
        drop(c);
        drop(echo);
    }
}
