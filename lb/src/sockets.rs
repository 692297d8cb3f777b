//! Where a listener's sockets come from. A socket belongs to the network
//! namespace it was made in, so whoever embeds the balancer decides that
//! here: [`Local`] makes them in this process's namespace; [`FromSource`]
//! also binds outbound connections to one source address (a node's lb
//! address, so that replies come home); netd supplies one that makes them
//! inside a network's sandbox.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};

/// Makes a listener's sockets.
pub trait Sockets: Send + Sync + fmt::Debug {
    /// A fresh socket for a connection to `to`, not yet connected.
    fn outbound(&self, to: SocketAddr) -> io::Result<TcpSocket>;
    /// A listening socket on `addr` (address reuse, deep accept queue).
    /// Called inside the tokio runtime.
    fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener>;
    /// Whether outbound sockets are plain sockets of this namespace with
    /// no source binding (then HTTP mode lets pingora make its own).
    fn is_plain(&self) -> bool {
        false
    }
}

/// The default: sockets of this process's namespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

fn new_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
}

/// A listening socket made from `sock` (address reuse, queue of 4096).
pub fn listen_on(sock: TcpSocket, addr: SocketAddr) -> io::Result<TcpListener> {
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

impl Sockets for Local {
    fn outbound(&self, to: SocketAddr) -> io::Result<TcpSocket> {
        new_socket(to)
    }

    fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        listen_on(new_socket(addr)?, addr)
    }

    fn is_plain(&self) -> bool {
        true
    }
}

/// Sockets of this namespace whose outbound connections leave from
/// `source` (any free port).
#[derive(Debug, Clone, Copy)]
pub struct FromSource {
    /// The address outbound connections are bound to.
    pub source: IpAddr,
}

impl Sockets for FromSource {
    fn outbound(&self, to: SocketAddr) -> io::Result<TcpSocket> {
        let s = new_socket(to)?;
        s.bind(SocketAddr::new(self.source, 0))?;
        Ok(s)
    }

    fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        Local.listen(addr)
    }
}

/// Chooses the sockets of each listener (by its config).
pub type SocketsFor = Arc<dyn Fn(&crate::config::ListenerConfig) -> Arc<dyn Sockets> + Send + Sync>;

/// [`Local`] sockets for every listener.
pub fn local() -> SocketsFor {
    Arc::new(|_| Arc::new(Local))
}
