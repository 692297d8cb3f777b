//! The upstream connector pingora uses when the listener's sockets are not
//! plain sockets of this namespace (a sandbox, a source address), or when
//! backends want the client's address as a PROXY v2 header: make the socket
//! through the listener's [`Sockets`], connect, write the header if any,
//! hand the stream to pingora. Connections that carry a client's identity
//! are pooled per client (the peer's `group_key`), as HAProxy keeps them
//! private.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::connectors::L4Connect;
use pingora_core::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora_core::protocols::l4::stream::Stream;
use pingora_error::{Error, ErrorType, OrErr, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::proxy_protocol::encode_v2;
use crate::sockets::Sockets;

/// Connects through the listener's sockets, then sends a PROXY v2 header
/// naming `proxy_v2`'s source → destination when set.
#[derive(Debug)]
pub struct UpstreamConnect {
    /// Where the socket is made.
    pub sockets: Arc<dyn Sockets>,
    /// The client and the address it reached, to announce in PROXY v2.
    pub proxy_v2: Option<(SocketAddr, SocketAddr)>,
}

#[async_trait]
impl L4Connect for UpstreamConnect {
    async fn connect(&self, addr: &PSocketAddr) -> Result<Stream> {
        let Some(inet) = addr.as_inet() else {
            return Error::e_explain(ErrorType::ConnectError, "backends are IP addresses");
        };
        let sock = self
            .sockets
            .outbound(*inet)
            .or_err(ErrorType::SocketError, "making a socket for the backend")?;
        let mut tcp: TcpStream = sock
            .connect(*inet)
            .await
            .or_err(ErrorType::ConnectRefused, "connecting to backend")?;
        let _ = tcp.set_nodelay(true);
        if let Some((source, destination)) = self.proxy_v2 {
            tcp.write_all(&encode_v2(source, destination))
                .await
                .or_err(ErrorType::ConnectError, "sending PROXY v2 header")?;
        }
        Ok(Stream::from(tcp))
    }
}
