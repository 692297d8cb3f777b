//! The device's packet loops, each on its own thread.
//!
//! - [`send_loop`]: TUN -> peers. It reads the TUN device until it is
//!   empty (a batch), encrypts each packet straight into one buffer, and
//!   sends each run of equal-sized datagrams to one peer with a single
//!   `sendmsg` (UDP GSO): one trip through the underlay stack per run,
//!   not per packet.
//! - [`receive_loop`]: peers -> TUN. Each `recvmsg` returns a run of
//!   datagrams coalesced by UDP GRO (a peer's GSO run arrives whole);
//!   each is decrypted and written to the TUN device.
//! - [`tick`]: the WireGuard timers (handshake retries, rekeys,
//!   keepalives), every [`sys::WAKE`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};

use super::peers::{Peer, Snapshot};
use super::{sys, Shared};

/// Datagrams one GSO send may carry (the kernel's limit is 64 or more).
const MAX_SEGMENTS: usize = 64;
/// Bytes one GSO send may carry: an IPv4 datagram's payload.
const MAX_RUN_BYTES: usize = 65_507;
/// Packets read from the TUN device before they are sent.
const MAX_BATCH: usize = 128;
/// What WireGuard adds to a packet: header (16) and tag (16).
const OVERHEAD: usize = 32;
/// A buffer for the largest packet or datagram.
const BIG: usize = 1 << 16;

/// A run of encrypted datagrams to one endpoint in the send buffer: all
/// `segment` bytes long but the last, which may be shorter (and then
/// closes the run), as UDP GSO requires.
#[derive(Debug, Default, PartialEq)]
pub struct Run {
    /// Where the run goes; `None` while empty.
    pub to: Option<SocketAddrV4>,
    /// The size of its datagrams.
    pub segment: usize,
    /// How many it holds.
    pub count: usize,
    /// Bytes used in the buffer.
    pub len: usize,
    /// A shorter datagram ended it.
    pub closed: bool,
}

impl Run {
    /// True when a datagram of `size` bytes to `to` may join the run.
    pub fn admits(&self, to: SocketAddrV4, size: usize) -> bool {
        self.to.is_none()
            || (self.to == Some(to)
                && !self.closed
                && size <= self.segment
                && self.count < MAX_SEGMENTS
                && self.len + size <= MAX_RUN_BYTES)
    }

    /// Records a datagram of `size` bytes to `to` that joined the run.
    pub fn push(&mut self, to: SocketAddrV4, size: usize) {
        if self.to.is_none() {
            self.to = Some(to);
            self.segment = size;
        } else if size < self.segment {
            self.closed = true;
        }
        self.count += 1;
        self.len += size;
    }
}

/// Sends the run in `buf` and empties it. A refused GSO send (an
/// underlay without the offload) falls back to one datagram per call.
fn flush(sock: &UdpSocket, buf: &[u8], run: &mut Run) {
    let Some(to) = run.to else { return };
    let data = &buf[..run.len];
    if let Err(e) = sys::send_segments(sock, data, run.segment, to) {
        if run.count > 1 && e.kind() != io::ErrorKind::WouldBlock {
            for d in data.chunks(run.segment) {
                let _ = sock.send_to(d, to);
            }
        }
    }
    *run = Run::default();
}

/// TUN -> peers, until the device stops.
pub fn send_loop(shared: &Shared, mut tun: &File) {
    let mut packet = vec![0u8; BIG];
    let mut out = vec![0u8; MAX_RUN_BYTES + BIG];
    let mut run = Run::default();
    while !shared.stopping() {
        match sys::wait_readable(&tun) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!("{}: poll TUN: {e}", shared.name);
                std::thread::sleep(sys::WAKE);
                continue;
            }
        }
        let s = shared.snapshot();
        let Some(sock) = s.socket.as_deref() else {
            continue;
        };
        // Without a private key, packets are read and dropped.
        let keyed = s.identity.is_some();
        for _ in 0..MAX_BATCH {
            let n = match tun.read(&mut packet) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // the link was deleted (EBADFD): the device is over
                    tracing::info!("{}: read TUN: {e}; stopping", shared.name);
                    shared.stop();
                    break;
                }
            };
            let src = &packet[..n];
            if !keyed {
                continue;
            }
            let Some(peer) = Tunn::dst_address(src).and_then(|a| s.route(a)) else {
                continue;
            };
            let Some(to) = peer.endpoint() else { continue };
            if !run.admits(to, n + OVERHEAD) {
                flush(sock, &out, &mut run);
            }
            let sealed = peer.tunn().encapsulate(src, &mut out[run.len..]);
            match sealed {
                TunnResult::WriteToNetwork(d) if is_data(d) => {
                    let size = d.len();
                    run.push(to, size);
                }
                // a handshake initiation: the packet waits in the session
                TunnResult::WriteToNetwork(d) => {
                    let _ = sock.send_to(d, to);
                }
                TunnResult::Err(e) => tracing::debug!("{}: encapsulate: {e:?}", shared.name),
                _ => {}
            }
        }
        flush(sock, &out, &mut run);
    }
}

/// True for a WireGuard transport data message (type 4).
fn is_data(datagram: &[u8]) -> bool {
    datagram.first() == Some(&4)
}

/// Peers -> TUN, until the device stops.
pub fn receive_loop(shared: &Shared, tun: &File) {
    let mut buf = vec![0u8; BIG];
    let mut dst = vec![0u8; BIG];
    while !shared.stopping() {
        let s = shared.snapshot();
        let Some(sock) = s.socket.as_deref() else {
            std::thread::sleep(sys::WAKE);
            continue;
        };
        let (len, from, segment) = match sys::recv_segments(sock, &mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!("{}: receive: {e}", shared.name);
                std::thread::sleep(sys::WAKE);
                continue;
            }
        };
        for datagram in buf[..len].chunks(segment) {
            receive(&s, sock, tun, datagram, from, &mut dst);
        }
    }
}

/// The peer a datagram belongs to: by the receiver index of a response,
/// cookie or data message, by the static key inside an initiation.
fn owner(s: &Snapshot, packet: &Packet) -> Option<Arc<Peer>> {
    let by_index = |idx: u32| s.by_index.get(&(idx >> 8)).cloned();
    match packet {
        Packet::HandshakeInit(p) => {
            let id = s.identity.as_ref()?;
            let half = parse_handshake_anon(&id.secret, &id.public, p).ok()?;
            s.peers.get(&half.peer_static_public).cloned()
        }
        Packet::HandshakeResponse(p) => by_index(p.receiver_idx),
        Packet::PacketCookieReply(p) => by_index(p.receiver_idx),
        Packet::PacketData(p) => by_index(p.receiver_idx),
    }
}

/// Handles one datagram from `from`.
fn receive(
    s: &Snapshot,
    sock: &UdpSocket,
    mut tun: &File,
    datagram: &[u8],
    from: SocketAddrV4,
    dst: &mut [u8],
) {
    let Some(id) = s.identity.as_ref() else {
        return;
    };
    let ip = IpAddr::V4(*from.ip());
    let peer = match id.limiter.verify_packet(Some(ip), datagram, dst) {
        Ok(packet) => owner(s, &packet),
        Err(TunnResult::WriteToNetwork(cookie)) => {
            let _ = sock.send_to(cookie, from);
            return;
        }
        Err(_) => return,
    };
    let Some(peer) = peer else { return };
    let mut tunn = peer.tunn();
    let (packet, src) = match tunn.decapsulate(Some(ip), datagram, dst) {
        TunnResult::WriteToTunnelV4(p, src) => (p, IpAddr::from(src)),
        TunnResult::WriteToTunnelV6(p, src) => (p, IpAddr::from(src)),
        TunnResult::WriteToNetwork(p) => {
            let _ = sock.send_to(p, from);
            // packets that waited for this handshake
            while let TunnResult::WriteToNetwork(p) = tunn.decapsulate(None, &[], dst) {
                let _ = sock.send_to(p, from);
            }
            peer.set_endpoint(from);
            return;
        }
        TunnResult::Done => {
            peer.set_endpoint(from);
            return;
        }
        TunnResult::Err(_) => return,
    };
    // Unlocked before the write: writing runs the receiving stack (and
    // its replies reach the send thread, which needs the lock).
    drop(tunn);
    peer.set_endpoint(from);
    if s.allows(&peer, src) {
        let _ = tun.write(packet);
    }
}

/// Runs every peer's timers once, sending what they ask for.
pub fn tick(shared: &Shared, buf: &mut [u8]) {
    let s = shared.snapshot();
    let (Some(sock), Some(_)) = (s.socket.as_deref(), &s.identity) else {
        return;
    };
    for peer in s.peers.values() {
        match peer.tunn().update_timers(buf) {
            TunnResult::WriteToNetwork(p) => {
                if let Some(to) = peer.endpoint() {
                    let _ = sock.send_to(p, to);
                }
            }
            TunnResult::Err(WireGuardError::ConnectionExpired) | TunnResult::Done => {}
            TunnResult::Err(e) => tracing::debug!("{}: timers: {e:?}", shared.name),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_hold_equal_datagrams_and_a_shorter_last_one() {
        let a: SocketAddrV4 = "198.18.0.2:51820".parse().unwrap();
        let b: SocketAddrV4 = "198.18.0.3:51820".parse().unwrap();
        let mut run = Run::default();
        assert!(run.admits(a, 1402));
        run.push(a, 1402);
        assert!(run.admits(a, 1402) && !run.admits(a, 1403) && !run.admits(b, 1402));
        run.push(a, 1402);
        assert!(run.admits(a, 84), "a shorter one may end it");
        run.push(a, 84);
        assert!(!run.admits(a, 84), "and then it is closed");
        assert_eq!((run.count, run.len, run.segment), (3, 2888, 1402));
        let mut run = Run::default();
        for _ in 0..MAX_SEGMENTS {
            run.push(a, 100);
        }
        assert!(!run.admits(a, 100), "at most {MAX_SEGMENTS} datagrams");
        let mut run = Run::default();
        for _ in 0..46 {
            run.push(a, 1402);
        }
        assert!(!run.admits(a, 1402), "at most 64 KB");
    }
}
