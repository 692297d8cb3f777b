//! TCP sockets opened inside a namespace. A socket belongs to the namespace
//! of the thread that created it, so each is opened on a short-lived thread
//! that `setns`es first, then handed back for use from anywhere.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

/// How long any test socket operation may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`in_netns`] waits for a namespace file that exists but is not
/// mounted yet (`ip netns add` and netd create the file, then bind-mount
/// the namespace on it, so a watcher can see the file first).
const MOUNT_WAIT: Duration = Duration::from_secs(2);

/// Runs `f` on a fresh thread inside the named namespace.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + MOUNT_WAIT;
        loop {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            match setns(&file, CloneFlags::CLONE_NEWNET) {
                Ok(()) => break,
                // Not a namespace (yet): the bind mount is still to come.
                Err(nix::errno::Errno::EINVAL) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("setns {path}: {e}"),
            }
        }
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// A listener on `addr` inside `ns`.
pub fn listen(ns: &str, addr: SocketAddr) -> TcpListener {
    in_netns(ns, move || {
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
    })
}

/// Connects from inside `ns`, optionally from a given source address.
pub fn connect(ns: &str, to: SocketAddr, from: Option<SocketAddr>) -> std::io::Result<TcpStream> {
    in_netns(ns, move || {
        let stream = match from {
            None => TcpStream::connect_timeout(&to, TIMEOUT)?,
            Some(src) => {
                let s = nix_bind_connect(src, to)?;
                s.set_nonblocking(false)?;
                s
            }
        };
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        Ok(stream)
    })
}

/// Bind to `src`, then connect to `to` (std has no bind-before-connect).
fn nix_bind_connect(src: SocketAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let (SocketAddr::V4(src), SocketAddr::V4(to)) = (src, to) else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // Bounds the blocking connect below (Linux applies SO_SNDTIMEO to it).
    let limit = nix::sys::time::TimeVal::new(TIMEOUT.as_secs() as i64, 0);
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SendTimeout, &limit)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(src))?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    Ok(TcpStream::from(fd))
}

/// Serves an echo on `listener`, answering each connection with `greeting`
/// first, until the listener's thread ends with the process.
pub fn serve_echo(listener: TcpListener, greeting: &'static str) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let _ = conn.write_all(greeting.as_bytes());
                let mut buf = [0u8; 65536];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}

/// Reads exactly `n` bytes.
pub fn read_n(stream: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// Sends `data` and reads it back from an echo server.
pub fn echo(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let reader = stream.try_clone()?;
    let len = data.len();
    let back = std::thread::spawn(move || {
        let mut r = reader;
        read_n(&mut r, len)
    });
    stream.write_all(data)?;
    let got = back
        .join()
        .map_err(|_| std::io::Error::other("reader panicked"))??;
    if got != data {
        return Err(std::io::Error::other("echo returned different bytes"));
    }
    Ok(())
}
