//! Frames on the handover socket: a 4-byte big-endian length, then that
//! many bytes (JSON, read by [`super`]), with at most a few file
//! descriptors riding on the frame (SCM_RIGHTS).
//!
//! The socket is a stream, so descriptors are tied to bytes: the kernel
//! attaches them to the first byte of the `sendmsg` that carried them and
//! hands them out with the `recvmsg` that reads that byte, never merging
//! two writes that carry descriptors into one read. Reads here never ask
//! for more than the rest of the current frame, so every descriptor
//! received while reading a frame belongs to that frame.
//!
//! rustix's `sendmsg`/`recvmsg` give received descriptors as `OwnedFd`,
//! so no `unsafe` is needed; anything left in a receive buffer is closed
//! when the buffer drops.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// The largest frame accepted (a frame holds one small message).
pub const MAX_FRAME: usize = 64 * 1024;
/// The most descriptors one frame may carry.
pub const MAX_FDS: usize = 4;

/// One received frame.
#[derive(Debug)]
pub struct Frame {
    /// Its bytes.
    pub body: Vec<u8>,
    /// The descriptors that came with it.
    pub fds: Vec<OwnedFd>,
}

/// Framed messages with descriptors over a connected unix stream.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Conn {
    /// Frames over `stream`.
    pub fn new(stream: UnixStream) -> Conn {
        Conn { stream }
    }

    /// The peer's process id and user id (from the kernel, SO_PEERCRED).
    pub fn peer(&self) -> io::Result<(i32, u32)> {
        let cred = rustix::net::sockopt::socket_peercred(&self.stream)?;
        Ok((cred.pid.as_raw_nonzero().get(), cred.uid.as_raw()))
    }

    /// Sends `body` as one frame, with `fds` attached.
    pub async fn send(&self, body: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if body.is_empty() || body.len() > MAX_FRAME || fds.len() > MAX_FDS {
            return Err(invalid("frame out of bounds"));
        }
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(body);
        let mut sent = 0;
        while sent < frame.len() {
            let rest = &frame[sent..];
            // Descriptors go with the first bytes only.
            let attach = if sent == 0 { fds } else { &[] };
            let n = self
                .stream
                .async_io(Interest::WRITABLE, || {
                    let mut space =
                        [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                    let mut control = SendAncillaryBuffer::new(&mut space);
                    if !attach.is_empty() && !control.push(SendAncillaryMessage::ScmRights(attach))
                    {
                        return Err(invalid("descriptors do not fit"));
                    }
                    Ok(sendmsg(
                        &self.stream,
                        &[IoSlice::new(rest)],
                        &mut control,
                        SendFlags::NOSIGNAL,
                    )?)
                })
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            sent += n;
        }
        Ok(())
    }

    /// Receives one frame; `None` if the peer closed between frames.
    pub async fn recv(&self) -> io::Result<Option<Frame>> {
        let mut fds = Vec::new();
        let mut head = [0u8; 4];
        if !self.read_exact(&mut head, &mut fds, true).await? {
            return Ok(None);
        }
        let len = u32::from_be_bytes(head) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(invalid(format!("frame of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        self.read_exact(&mut body, &mut fds, false).await?;
        Ok(Some(Frame { body, fds }))
    }

    /// Fills `buf`, collecting descriptors into `fds`. False if the peer
    /// closed before the first byte and `eof_ok`.
    async fn read_exact(
        &self,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
        eof_ok: bool,
    ) -> io::Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            let rest = &mut buf[got..];
            let n = self
                .stream
                .async_io(Interest::READABLE, || {
                    let mut space =
                        [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                    let mut control = RecvAncillaryBuffer::new(&mut space);
                    let r = recvmsg(
                        &self.stream,
                        &mut [IoSliceMut::new(rest)],
                        &mut control,
                        RecvFlags::CMSG_CLOEXEC,
                    )?;
                    for m in control.drain() {
                        if let RecvAncillaryMessage::ScmRights(received) = m {
                            fds.extend(received);
                        }
                    }
                    if r.flags.contains(ReturnFlags::CTRUNC) {
                        return Err(invalid("more descriptors than a frame may carry"));
                    }
                    Ok(r.bytes)
                })
                .await?;
            if fds.len() > MAX_FDS {
                return Err(invalid("more descriptors than a frame may carry"));
            }
            if n == 0 {
                if got == 0 && eof_ok {
                    return Ok(false);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += n;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use tokio::io::AsyncWriteExt;

    fn pair() -> (Conn, Conn) {
        let (a, b) = UnixStream::pair().unwrap();
        (Conn::new(a), Conn::new(b))
    }

    #[tokio::test]
    async fn frames_keep_their_descriptors() {
        let (a, b) = pair();
        let one = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let two = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        a.send(b"first", &[one.as_fd()]).await.unwrap();
        a.send(b"plain", &[]).await.unwrap();
        a.send(b"second", &[two.as_fd()]).await.unwrap();
        drop(a);
        let f = b.recv().await.unwrap().unwrap();
        assert_eq!((f.body.as_slice(), f.fds.len()), (&b"first"[..], 1));
        let got = std::net::UdpSocket::from(f.fds.into_iter().next().unwrap());
        assert_eq!(got.local_addr().unwrap(), one.local_addr().unwrap());
        let f = b.recv().await.unwrap().unwrap();
        assert_eq!((f.body.as_slice(), f.fds.len()), (&b"plain"[..], 0));
        let f = b.recv().await.unwrap().unwrap();
        assert_eq!((f.body.as_slice(), f.fds.len()), (&b"second"[..], 1));
        assert!(b.recv().await.unwrap().is_none(), "clean close");
    }

    #[tokio::test]
    async fn bad_frames_are_errors_not_panics() {
        for bytes in [
            &[0u8, 0, 0, 0][..],           // empty frame
            &[0xff, 0xff, 0xff, 0xff][..], // far too long
            &[0, 0, 0, 9, b'x'][..],       // cut short
            &[0, 0][..],                   // cut in the header
        ] {
            let (a, b) = UnixStream::pair().unwrap();
            let mut a = a;
            a.write_all(bytes).await.unwrap();
            drop(a);
            assert!(Conn::new(b).recv().await.is_err(), "{bytes:?}");
        }
    }
}
