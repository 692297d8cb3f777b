//! The system calls the userspace device needs beyond std: its TUN device,
//! and a UDP socket with segmentation offload (`UDP_SEGMENT`, GSO: one
//! `sendmsg` carries a run of equal-sized datagrams) and receive coalescing
//! (`UDP_GRO`: one `recvmsg` returns such a run). The device's only
//! `unsafe` is the TUN ioctl here.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn,
};

/// Socket buffers asked for (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`, root
/// only; the default ~200 KB overflows under one TCP flow and drops).
const SOCKET_BUFFER: usize = 4 << 20;

/// How long a blocking receive waits before its loop looks at the stop flag.
pub const WAKE: Duration = Duration::from_millis(250);

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: u64 = 0x4004_54ca;

/// `struct ifreq` as `TUNSETIFF` reads it: a name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

nix::ioctl_write_ptr_bad!(
    /// `ioctl(fd, TUNSETIFF, &ifreq)`.
    tun_set_iff,
    TUNSETIFF,
    IfReq
);

/// Opens (creating) the TUN device `name` in the calling thread's network
/// namespace, one queue, no packet-info header, non-blocking; equals
/// `ip tuntap add NAME mode tun` held open. The link goes when the file
/// closes.
pub fn open_tun(name: &str) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    if name.len() >= req.name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TUN name {name:?} is longer than {} bytes",
                libc::IFNAMSIZ - 1
            ),
        ));
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    #[allow(unsafe_code)]
    // SAFETY: the fd is an open /dev/net/tun and `req` is a live ifreq
    // that TUNSETIFF only reads (and writes back the name in place).
    unsafe { tun_set_iff(file.as_raw_fd(), &req) }.map_err(io::Error::from)?;
    Ok(file)
}

/// Waits until `file` is readable or [`WAKE`] passed; true when readable.
pub fn wait_readable(fd: &impl AsFd) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(WAKE.as_millis() as u16)) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Binds the device's UDP socket on `port` (0: any) in the calling
/// thread's namespace, IPv4 only like the mesh, with GRO on, large
/// buffers and a receive timeout of [`WAKE`].
pub fn bind_udp(port: u16, fwmark: u32) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))?;
    sock.set_read_timeout(Some(WAKE))?;
    setsockopt(&sock, sockopt::UdpGroSegment, &true)?;
    // Without root the forced sizes fail; the defaults still work.
    let _ = setsockopt(&sock, sockopt::RcvBufForce, &SOCKET_BUFFER);
    let _ = setsockopt(&sock, sockopt::SndBufForce, &SOCKET_BUFFER);
    if fwmark != 0 {
        setsockopt(&sock, sockopt::Mark, &fwmark)?;
    }
    Ok(sock)
}

/// Sends `buf` to `to` as datagrams of `segment` bytes (the last may be
/// shorter): one `sendmsg` with `UDP_SEGMENT` when there are several.
pub fn send_segments(
    sock: &UdpSocket,
    buf: &[u8],
    segment: usize,
    to: SocketAddrV4,
) -> io::Result<()> {
    if buf.len() <= segment {
        return sock.send_to(buf, to).map(drop);
    }
    let seg = segment as u16;
    let cmsg = [ControlMessage::UdpGsoSegments(&seg)];
    let iov = [IoSlice::new(buf)];
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::empty(),
        Some(&SockaddrIn::from(to)),
    )
    .map(drop)
    .map_err(io::Error::from)
}

/// One receive: the bytes, the sender, and the size of the coalesced
/// datagrams they hold (`UDP_GRO`; the whole length when not coalesced).
/// Times out with `WouldBlock` after [`WAKE`].
pub fn recv_segments(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4, usize)> {
    let mut space = nix::cmsg_space!(libc::c_int);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let len = msg.bytes;
    let mut segment = len;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::UdpGroSegments(s) = c {
            segment = s as usize;
        }
    }
    let from = match msg.address.map(|a| SocketAddr::V4(a.into())) {
        Some(SocketAddr::V4(a)) => a,
        _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    };
    Ok((len, from, segment.max(1)))
}
