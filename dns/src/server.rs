//! The runtime: the current snapshot behind an `ArcSwap`, and the hickory
//! server loops that serve each network's view on its sockets.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::cache::Cache;
use crate::error::RecordError;
use crate::handler::{Shared, ViewHandler};
use crate::records::RecordSet;
use crate::snapshot::Snapshot;

/// How long a TCP connection may sit idle between queries.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Snapshots with at least this many names are freed off the caller's thread.
const FREE_ELSEWHERE: usize = 50_000;
/// Responses a TCP connection may have queued for sending.
const TCP_RESPONSE_BUFFER: usize = 32;

/// The DNS service: holds the current [`Snapshot`] and serves views of it.
///
/// Updates ([`Dns::store`], [`Dns::update`]) swap the snapshot atomically:
/// a query in flight finishes on the snapshot it started with, and no query
/// ever waits for an update.
#[derive(Debug, Clone)]
pub struct Dns {
    shared: Arc<Shared>,
}

impl Dns {
    /// A service answering from `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            shared: Arc::new(Shared {
                snapshot: ArcSwap::from_pointee(snapshot),
                cache: Cache::default(),
            }),
        }
    }

    /// Replaces the snapshot. A large old snapshot is freed on a thread
    /// of its own, so freeing a million records never stalls a query.
    pub fn store(&self, snapshot: Snapshot) {
        let old = self.shared.snapshot.swap(Arc::new(snapshot));
        if old.names() >= FREE_ELSEWHERE {
            let _ = std::thread::Builder::new()
                .name("shoal-dns-free".into())
                .spawn(move || drop(old));
        }
    }

    /// Builds a snapshot of `records` with the current forwarding settings
    /// and swaps it in; on error the current snapshot stays.
    pub fn update(&self, records: &RecordSet) -> Result<(), RecordError> {
        let forwarding = self.shared.snapshot.load().forwarding.clone();
        self.store(Snapshot::build(records, forwarding)?);
        Ok(())
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// The handler answering for `network` (whether or not the current
    /// snapshot has it yet: a view that does not exist answers REFUSED).
    pub fn handler(&self, network: &str) -> ViewHandler {
        ViewHandler::new(network, self.shared.clone())
    }

    /// Serves `network`'s view on already bound sockets (netd binds them
    /// inside the network's sandbox and hands them over): UDP on our own
    /// loop (the `udp` module), one per runtime worker (at most four)
    /// sharing each socket; TCP on hickory's server loop. Must be called
    /// inside a tokio runtime.
    pub fn serve(&self, network: &str, udp: Vec<UdpSocket>, tcp: Vec<TcpListener>) -> DnsServer {
        let handler = self.handler(network);
        let loops = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .clamp(1, 4);
        let mut udp_loops = Vec::new();
        for socket in udp {
            let addr = socket.local_addr().ok();
            let socket = match crate::udp::socket(socket) {
                Ok(socket) => socket,
                Err(error) => {
                    // Only if the runtime cannot register a socket (out of
                    // memory); the other listeners go on.
                    tracing::error!(%error, ?addr, network, "cannot serve UDP socket");
                    continue;
                }
            };
            for _ in 0..loops {
                udp_loops.push(tokio::spawn(crate::udp::serve(
                    handler.clone(),
                    socket.clone(),
                )));
            }
        }
        let tcp_server = (!tcp.is_empty()).then(|| {
            let mut server = hickory_server::Server::new(handler);
            for listener in tcp {
                server.register_listener(listener, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
            }
            server
        });
        DnsServer {
            tcp: tcp_server,
            udp: udp_loops,
        }
    }
}

/// The server loops of one network's sockets; dropping it stops the UDP
/// loops.
pub struct DnsServer {
    tcp: Option<hickory_server::Server<ViewHandler>>,
    udp: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Stops answering and waits for the loops to end (TCP connections
    /// finish the query in hand).
    pub async fn shutdown(mut self) -> io::Result<()> {
        for task in &self.udp {
            task.abort();
        }
        for task in self.udp.drain(..) {
            let _ = task.await;
        }
        match self.tcp.take() {
            Some(mut server) => server
                .shutdown_gracefully()
                .await
                .map_err(|e| io::Error::other(e.to_string())),
            None => Ok(()),
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.udp {
            task.abort();
        }
    }
}

/// Binds UDP and TCP on `addr`, on the same port. With port 0 a free port
/// is chosen (for UDP, then TCP takes it too; retried if TCP finds it
/// taken).
pub async fn bind(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(addr).await?;
        return Ok((udp, tcp));
    }
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).await?;
        let chosen = udp.local_addr()?;
        match TcpListener::bind(chosen).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}
