//! The UDP server loop: receive a datagram, answer it in place, send the
//! reply. Only questions that go to the upstreams get a task of their own,
//! so a slow upstream never holds up local answers.
//!
//! hickory's own UDP loop spawns a task per datagram and passes every reply
//! through a channel to a sending task; for local answers, which never
//! wait, doing the work inline costs a fraction of that. TCP stays on
//! hickory's loop. Both run the same steps ([`wire::process`]).

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_server::net::xfer::Protocol;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::handler::ViewHandler;
use crate::wire::{self, Processed};

/// The largest datagram read; a longer one is cut short, which makes it
/// malformed (FORMERR).
const MAX_DATAGRAM: usize = 4096;

/// Serves `handler` on `socket` until the task is aborted. Several loops
/// may share one socket to use several workers.
pub(crate) async fn serve(handler: ViewHandler, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(error) => {
                // ICMP errors from earlier replies surface here; go on.
                debug!(%error, "UDP receive error");
                continue;
            }
        };
        if !answerable(src) {
            continue;
        }
        let Some(bytes) = buf.get(..n) else {
            continue;
        };
        let snap = handler.snapshot();
        match wire::process(&handler, &snap, bytes, src, Protocol::Udp) {
            Processed::Silent => {}
            Processed::Reply(reply) => send(&socket, &reply, src).await,
            Processed::Forward(request) => {
                let (handler, socket) = (handler.clone(), socket.clone());
                tokio::spawn(async move {
                    let reply = wire::finish(&handler, &snap, &request).await;
                    send(&socket, &reply, src).await;
                });
            }
        }
    }
}

/// As hickory checks: no replies to port 0, unspecified or broadcast
/// sources (a spoofed source must not turn us into a reflector of junk).
fn answerable(src: SocketAddr) -> bool {
    if src.port() == 0 || src.ip().is_unspecified() {
        return false;
    }
    match src {
        SocketAddr::V4(v4) => !v4.ip().is_broadcast(),
        SocketAddr::V6(_) => true,
    }
}

async fn send(socket: &UdpSocket, reply: &[u8], dst: SocketAddr) {
    if reply.is_empty() {
        return;
    }
    if let Err(error) = socket.send_to(reply, dst).await {
        warn!(%error, %dst, "UDP send failed");
    }
}
