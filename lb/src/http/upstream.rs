//! The upstream connector used when backends want the client's address as
//! a PROXY v2 header: connect, write the header, hand the stream to pingora.
//! Such connections carry one client's identity, so they are pooled per
//! client (the peer's `group_key`), as HAProxy keeps them private.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora_core::connectors::L4Connect;
use pingora_core::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora_core::protocols::l4::stream::Stream;
use pingora_error::{Error, ErrorType, OrErr, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::proxy_protocol::encode_v2;

/// Connects and sends a PROXY v2 header naming `source` → `destination`.
#[derive(Debug)]
pub struct ProxyV2Connect {
    /// The client.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

#[async_trait]
impl L4Connect for ProxyV2Connect {
    async fn connect(&self, addr: &PSocketAddr) -> Result<Stream> {
        let Some(inet) = addr.as_inet() else {
            return Error::e_explain(ErrorType::ConnectError, "PROXY v2 needs an IP backend");
        };
        let mut tcp = TcpStream::connect(inet)
            .await
            .or_err(ErrorType::ConnectRefused, "connecting to backend")?;
        let _ = tcp.set_nodelay(true);
        tcp.write_all(&encode_v2(self.source, self.destination))
            .await
            .or_err(ErrorType::ConnectError, "sending PROXY v2 header")?;
        Ok(Stream::from(tcp))
    }
}
