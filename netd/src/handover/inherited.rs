//! Sockets received from the previous agent, waiting to be claimed: each
//! is checked against its key on arrival (kind, listening state, bound
//! address) and claimed by whoever would otherwise bind it.
//!
//! A claim gets a duplicate; the pool keeps its copy until the new agent's
//! first successful reconcile. A reconcile that fails halfway drops what it
//! bound (the balancer's reload is all or nothing), and binding anew would
//! then fail while the old agent still listens, so the retry must be able
//! to claim the same socket again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

use rustix::net::{sockopt, AddressFamily, SocketAddrUnix, SocketType};

use super::{Key, NsId};

/// A handed-over socket, and whether anyone claimed it.
#[derive(Debug)]
struct Held {
    fd: OwnedFd,
    claimed: bool,
}

/// Sockets handed over, by key.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Mutex<HashMap<Key, Held>>,
}

impl Inherited {
    /// Sockets already checked (see [`check`]).
    pub(super) fn new(sockets: HashMap<Key, OwnedFd>) -> Inherited {
        let held = sockets
            .into_iter()
            .map(|(k, fd)| (k, Held { fd, claimed: false }))
            .collect();
        Inherited {
            sockets: Mutex::new(held),
        }
    }

    /// How many sockets the pool still holds (claimed or not).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the pool holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Held>> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims the socket `key` names: a duplicate of it.
    pub fn take(&self, key: &Key) -> Option<OwnedFd> {
        let mut sockets = self.lock();
        let held = sockets.get_mut(key)?;
        match held.fd.try_clone() {
            Ok(fd) => {
                if !held.claimed {
                    tracing::info!(socket = %key, "serving on a socket handed over by the previous agent");
                }
                held.claimed = true;
                Some(fd)
            }
            Err(e) => {
                tracing::warn!(socket = %key, error = %e, "cannot duplicate a handed-over socket");
                None
            }
        }
    }

    /// Claims the listening TCP socket on `addr` in `netns` (non-blocking).
    pub fn tcp_listener(&self, netns: NsId, addr: SocketAddr) -> Option<std::net::TcpListener> {
        let l = std::net::TcpListener::from(self.take(&Key::Tcp { netns, addr })?);
        nonblocking(l.set_nonblocking(true), "tcp", addr)?;
        Some(l)
    }

    /// Claims the UDP socket bound to `addr` in `netns` (non-blocking).
    pub fn udp_socket(&self, netns: NsId, addr: SocketAddr) -> Option<std::net::UdpSocket> {
        let s = std::net::UdpSocket::from(self.take(&Key::Udp { netns, addr })?);
        nonblocking(s.set_nonblocking(true), "udp", addr)?;
        Some(s)
    }

    /// Claims the listening unix socket at `path` (non-blocking).
    pub fn unix_listener(&self, path: &Path) -> Option<std::os::unix::net::UnixListener> {
        let key = Key::Unix {
            path: path.to_path_buf(),
        };
        let l = std::os::unix::net::UnixListener::from(self.take(&key)?);
        if let Err(e) = l.set_nonblocking(true) {
            tracing::warn!(path = %path.display(), error = %e, "cannot use a handed-over socket");
            return None;
        }
        Some(l)
    }

    /// Drops the pool's copies (once the agent has reconciled): claimed
    /// sockets stay open where they are used, the others close. Returns the
    /// keys nobody claimed.
    pub fn close_unclaimed(&self) -> Vec<Key> {
        let held: Vec<(Key, Held)> = self.lock().drain().collect();
        let mut left = Vec::new();
        for (k, h) in held {
            if !h.claimed {
                tracing::info!(socket = %k, "closed a handed-over socket this agent does not serve");
                left.push(k);
            }
        }
        left
    }
}

fn nonblocking(r: std::io::Result<()>, kind: &str, addr: SocketAddr) -> Option<()> {
    match r {
        Ok(()) => Some(()),
        Err(e) => {
            tracing::warn!(kind, %addr, error = %e, "cannot use a handed-over socket");
            None
        }
    }
}

/// Checks that `fd` is the socket `key` says: its type, that a stream
/// socket listens, and its bound address. The namespace cannot be read
/// back from a socket without `unsafe` ioctls; the sender's word is taken
/// for it (it is an agent of the same user on the same state directory).
pub fn check(key: &Key, fd: &OwnedFd) -> Result<(), String> {
    let kind = sockopt::socket_type(fd).map_err(|e| format!("not a socket: {e}"))?;
    let family = sockopt::socket_domain(fd).map_err(|e| e.to_string())?;
    let local = rustix::net::getsockname(fd).map_err(|e| e.to_string())?;
    let (want_kind, listens) = match key {
        Key::Tcp { .. } | Key::Unix { .. } => (SocketType::STREAM, true),
        Key::Udp { .. } => (SocketType::DGRAM, false),
    };
    if kind != want_kind {
        return Err(format!("socket type {kind:?}, not {want_kind:?}"));
    }
    if listens && !sockopt::socket_acceptconn(fd).map_err(|e| e.to_string())? {
        return Err("not listening".into());
    }
    match key {
        Key::Tcp { addr, .. } | Key::Udp { addr, .. } => {
            if family != AddressFamily::INET && family != AddressFamily::INET6 {
                return Err(format!("address family {family:?}"));
            }
            let bound = SocketAddr::try_from(local).map_err(|e| e.to_string())?;
            if bound != *addr {
                return Err(format!("bound to {bound}"));
            }
        }
        Key::Unix { path } => {
            if family != AddressFamily::UNIX {
                return Err(format!("address family {family:?}"));
            }
            let bound = SocketAddrUnix::try_from(local).map_err(|e| e.to_string())?;
            let same = bound
                .path()
                .is_some_and(|p| p.to_bytes() == path.as_os_str().as_bytes());
            if !same {
                return Err("bound to another path".into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn dup(fd: impl AsFd) -> OwnedFd {
        fd.as_fd().try_clone_to_owned().unwrap()
    }

    #[test]
    fn a_socket_must_be_what_its_key_says() {
        let ns = NsId(1);
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let t = tcp.local_addr().unwrap();
        let u = udp.local_addr().unwrap();
        assert_eq!(check(&Key::Tcp { netns: ns, addr: t }, &dup(&tcp)), Ok(()));
        assert_eq!(check(&Key::Udp { netns: ns, addr: u }, &dup(&udp)), Ok(()));
        // Wrong kind, wrong address, not listening, not a socket.
        assert!(check(&Key::Udp { netns: ns, addr: t }, &dup(&tcp)).is_err());
        assert!(check(&Key::Tcp { netns: ns, addr: u }, &dup(&udp)).is_err());
        assert!(check(&Key::Tcp { netns: ns, addr: u }, &dup(&tcp)).is_err());
        let connected = std::net::TcpStream::connect(t).unwrap();
        let addr = connected.local_addr().unwrap();
        assert!(check(&Key::Tcp { netns: ns, addr }, &dup(&connected)).is_err());
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(check(&Key::Tcp { netns: ns, addr: t }, &dup(&file)).is_err());

        let dir = std::env::temp_dir().join(format!("netd-inherited-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(
            check(&Key::Unix { path: path.clone() }, &dup(&unix)),
            Ok(())
        );
        let other = dir.join("t.sock");
        assert!(check(&Key::Unix { path: other }, &dup(&unix)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn claims_are_duplicates_until_the_pool_settles() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (t, u) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
        let inherited = Inherited::new(HashMap::from([
            (
                Key::Tcp {
                    netns: NsId(7),
                    addr: t,
                },
                dup(&tcp),
            ),
            (
                Key::Udp {
                    netns: NsId(7),
                    addr: u,
                },
                dup(&udp),
            ),
        ]));
        drop((tcp, udp));
        // Same address, another namespace: not ours.
        assert!(inherited.tcp_listener(NsId(8), t).is_none());
        let l = inherited.tcp_listener(NsId(7), t).unwrap();
        assert_eq!(l.local_addr().unwrap(), t);
        // A failed reconcile drops its claim; the retry claims it again.
        drop(l);
        let l = inherited.tcp_listener(NsId(7), t).unwrap();
        assert_eq!(
            inherited.close_unclaimed(),
            vec![Key::Udp {
                netns: NsId(7),
                addr: u
            }]
        );
        assert!(inherited.is_empty());
        // The claimed socket stays open where it is used; the other closed.
        assert!(std::net::TcpStream::connect(t).is_ok());
        drop(l);
        assert!(std::net::TcpStream::connect(t).is_err());
        assert!(
            std::net::UdpSocket::bind(u).is_ok(),
            "the unclaimed socket closed"
        );
    }
}
