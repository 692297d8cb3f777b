//! The UDP server loop: receive a datagram, answer it in place, send the
//! reply. Only questions that go to the upstreams get a task of their own,
//! so a slow upstream never holds up local answers.
//!
//! hickory's own UDP loop spawns a task per datagram and passes every reply
//! through a channel to a sending task; for local answers, which never
//! wait, doing the work inline costs a fraction of that. TCP stays on
//! hickory's loop. Both run the same steps ([`wire::process`]).
//!
//! The socket is registered with the runtime for reading only. tokio's
//! `UdpSocket` asks for writability too, and with edge-triggered epoll
//! every datagram sent then wakes the runtime once more when the send
//! buffer drains: a second wake-up per query for nothing. Replies are sent
//! straight away (a UDP send buffer is all but never full); only when one
//! is full does a send wait, on a duplicate of the socket registered for
//! writing just for that wait.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use arc_swap::Guard;
use hickory_server::net::xfer::Protocol;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tracing::{debug, warn};

use crate::handler::ViewHandler;
use crate::wire::{self, Processed};

/// The largest datagram read; a longer one is cut short, which makes it
/// malformed (FORMERR).
const MAX_DATAGRAM: usize = 4096;

/// Datagrams read in a row before the loop yields to other tasks.
const BATCH: usize = 64;

/// A bound UDP socket as the loops share it: non-blocking, registered with
/// the runtime for reading.
pub(crate) type Socket = Arc<AsyncFd<UdpSocket>>;

/// Turns a tokio socket into the loops' [`Socket`]. Must be called inside
/// a tokio runtime.
pub(crate) fn socket(socket: tokio::net::UdpSocket) -> io::Result<Socket> {
    let socket = socket.into_std()?;
    socket.set_nonblocking(true)?;
    Ok(Arc::new(register(socket, Interest::READABLE)?))
}

/// Registers `socket` with the runtime for `interest`.
///
/// tokio 1.54 deprecates this safe constructor in favour of an `unsafe`
/// one (tokio#8587): a `T` whose `as_raw_fd` does not own its descriptor
/// (a bare `RawFd`) could close it while registered. The contract holds
/// here by construction: the `AsyncFd` owns the `UdpSocket`, which owns its
/// descriptor until it is dropped with the `AsyncFd`. The crate forbids
/// `unsafe`, so the deprecated safe form is used, in this one place.
#[allow(deprecated)]
fn register(socket: UdpSocket, interest: Interest) -> io::Result<AsyncFd<UdpSocket>> {
    AsyncFd::with_interest(socket, interest)
}

/// Serves `handler` on `socket` until the task is aborted. Several loops
/// may share one socket to use several workers.
pub(crate) async fn serve(handler: ViewHandler, socket: Socket) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // The reply, written in place; kept from one datagram to the next.
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    // Shuffles of round-robin answers need spread, not secrecy.
    let mut rng =
        SmallRng::from_rng(rand::thread_rng()).unwrap_or_else(|_| SmallRng::seed_from_u64(0x5e0a1));
    loop {
        // Readable: read datagrams until none is left, then wait again.
        let mut ready = match socket.readable().await {
            Ok(ready) => ready,
            Err(error) => {
                warn!(%error, "UDP socket failed");
                return;
            }
        };
        let mut drained = false;
        for _ in 0..BATCH {
            let (n, src) = match ready.try_io(|s| s.get_ref().recv_from(&mut buf)) {
                Ok(Ok(got)) => got,
                Ok(Err(error)) => {
                    // ICMP errors from earlier replies surface here; go on.
                    debug!(%error, "UDP receive error");
                    continue;
                }
                // None left (the readiness is cleared): wait.
                Err(_would_block) => {
                    drained = true;
                    break;
                }
            };
            if !answerable(src) {
                continue;
            }
            let Some(bytes) = buf.get(..n) else {
                continue;
            };
            let snap = handler.snapshot_guard();
            match wire::process(
                &handler,
                &snap,
                bytes,
                src,
                Protocol::Udp,
                &mut rng,
                &mut out,
            ) {
                Processed::Silent => {}
                Processed::Reply => {
                    drop(snap);
                    send(&socket, &out, src).await;
                }
                Processed::Forward(request) => {
                    let snap = Guard::into_inner(snap);
                    let (handler, socket) = (handler.clone(), socket.clone());
                    tokio::spawn(async move {
                        let reply = wire::finish(&handler, &snap, &request).await;
                        send(&socket, &reply, src).await;
                    });
                }
            }
        }
        if !drained {
            // A full batch: let the other tasks on this thread (TCP,
            // forwards, signals) run before reading on.
            drop(ready);
            tokio::task::yield_now().await;
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

async fn send(socket: &AsyncFd<UdpSocket>, reply: &[u8], dst: SocketAddr) {
    if reply.is_empty() {
        return;
    }
    let sent = match socket.get_ref().send_to(reply, dst) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            send_when_writable(socket, reply, dst).await
        }
        other => other,
    };
    if let Err(error) = sent {
        warn!(%error, %dst, "UDP send failed");
    }
}

/// Sends once the socket's send buffer has room: waits on a duplicate of
/// the socket registered for writing, dropped (deregistered) afterwards.
async fn send_when_writable(
    socket: &AsyncFd<UdpSocket>,
    reply: &[u8],
    dst: SocketAddr,
) -> io::Result<usize> {
    let writer = register(socket.get_ref().try_clone()?, Interest::WRITABLE)?;
    loop {
        let mut ready = writer.writable().await?;
        match ready.try_io(|s| s.get_ref().send_to(reply, dst)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}
