//! A graceful restart: a new agent takes the listening sockets over from
//! the running one, which stops accepting, drains and exits, so no
//! connection is refused and no proxied connection is cut.
//!
//! # Protocol
//!
//! The running agent listens on `<state-dir>/handover.sock` (a unix stream
//! socket, mode 0600; each side also checks that the peer runs as the same
//! user). Every message is one frame ([`wire`]): a 4-byte big-endian
//! length, then a JSON object; a socket frame carries exactly one
//! descriptor (SCM_RIGHTS). Messages:
//!
//! ```text
//! new -> old   {"hello":{"version":1}}
//! old -> new   {"socket":{"kind":"tcp","netns":4026532001,"addr":"10.77.0.1:53"}}  + fd
//!              {"socket":{"kind":"udp","netns":4026532001,"addr":"10.77.0.1:53"}}  + fd
//!              {"socket":{"kind":"unix","path":"/run/shoal/netd.sock"}}            + fd
//!              ...                                  (one frame per socket)
//! old -> new   {"ready":{"sockets":N}}    or  {"refused":{"reason":"..."}}
//! new -> old   "taken"
//! ```
//!
//! A [`Key`] names a socket unambiguously: its kind, its bound address and
//! its network namespace by identity ([`NsId`], the namespace's inode), as
//! the same address exists in many namespaces (every node's sandbox of a
//! network has the gateway's `:53`). Unix sockets are named by path.
//!
//! # Sequence
//!
//! 1. The new agent connects and says `hello`. (No file: start normally.
//!    A file nobody answers on: remove it and start normally.)
//! 2. The old agent stops its control plane: the API stops accepting (new
//!    API connections wait in its socket's queue), the loops and the store
//!    stop, so the store's files are final before anyone reads them. Its
//!    data plane keeps serving.
//! 3. It sends every listening socket it serves on (balancer listeners,
//!    each network's DNS sockets, the API sockets), duplicated, then
//!    `ready`.
//! 4. The new agent opens the store and reconciles; wherever it would bind
//!    a socket whose key it received, it uses that one ([`Inherited`]).
//!    Meanwhile both processes accept on the same sockets; the kernel gives
//!    each connection to one of them.
//! 5. After its first successful reconcile the new agent closes the
//!    sockets it did not claim, says `taken` and starts listening for its
//!    own successor.
//! 6. The old agent stops accepting (its copies close; the sockets stay
//!    open in the new agent), stops answering DNS, waits for its open
//!    proxied connections up to the drain timeout and exits 0.
//!
//! If the new agent goes away before `taken`, the old one keeps serving
//! and waits for another successor.
//!
//! # Layout
//! - `mod.rs` (here): the constants, [`NsId`] and [`Key`].
//! - [`wire`]: frames with descriptors on the unix stream socket.
//! - `message`: the protocol's messages on those frames; the peer check.
//! - `old`: the running agent's side: [`listen`], [`Listening`],
//!   [`Successor`].
//! - `new`: the new agent's side: [`take_over`], [`Predecessor`].
//! - `inherited`: the sockets received, checked and claimed ([`Inherited`]).
//! - `socket_file`: unix socket files bound owner-only and removed only
//!   while still this process's ([`bind_unix`], [`SocketFile`]).

mod inherited;
mod message;
mod new;
mod old;
mod socket_file;
pub mod wire;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use inherited::{check, Inherited};
pub use new::{take_over, Predecessor};
pub use old::{listen, Listening, Successor};
pub use socket_file::{bind_unix, SocketFile};

/// The handover socket's file name under the state directory.
pub const SOCKET: &str = "handover.sock";
/// The protocol version this agent speaks.
pub const VERSION: u32 = 1;
/// How long a connected successor has to say `hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The most sockets one handover may carry.
pub const MAX_SOCKETS: usize = 16_384;

/// A network namespace's identity: the inode of its nsfs file (as in
/// `net:[4026531840]`). Unique among live namespaces, and a namespace
/// lives as long as any socket in it, so a handed-over socket's namespace
/// cannot be mistaken for a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NsId(pub u64);

impl fmt::Display for NsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}]", self.0)
    }
}

/// The network namespace of the calling thread.
pub fn current_netns() -> io::Result<NsId> {
    Ok(NsId(std::fs::metadata("/proc/thread-self/ns/net")?.ino()))
}

/// The network namespace of this process (its main thread).
pub fn process_netns() -> io::Result<NsId> {
    Ok(NsId(std::fs::metadata("/proc/self/ns/net")?.ino()))
}

/// What a handed-over socket is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Key {
    /// A listening TCP socket.
    Tcp {
        /// Its namespace.
        netns: NsId,
        /// Its bound address.
        addr: SocketAddr,
    },
    /// A bound UDP socket.
    Udp {
        /// Its namespace.
        netns: NsId,
        /// Its bound address.
        addr: SocketAddr,
    },
    /// A listening unix stream socket.
    Unix {
        /// Its path.
        path: PathBuf,
    },
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Tcp { netns, addr } => write!(f, "tcp {addr} in {netns}"),
            Key::Udp { netns, addr } => write!(f, "udp {addr} in {netns}"),
            Key::Unix { path } => write!(f, "unix {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A fresh scratch directory for one test.
    pub(super) fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("netd-handover-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_thread_knows_its_namespace() {
        let me = current_netns().unwrap();
        let other = std::thread::spawn(current_netns).join().unwrap().unwrap();
        assert_eq!(me, other);
    }

    #[tokio::test]
    async fn sockets_go_over_with_their_keys() {
        let d = dir("pass");
        let path = d.join(SOCKET);
        let mut listening = listen(&path, &tokio::runtime::Handle::current()).unwrap();
        let ns = current_netns().unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (t, u) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
        let sockets = vec![
            (
                Key::Tcp { netns: ns, addr: t },
                tcp.as_fd().try_clone_to_owned().unwrap(),
            ),
            (
                Key::Udp { netns: ns, addr: u },
                udp.as_fd().try_clone_to_owned().unwrap(),
            ),
            // A lie: checked on arrival and dropped.
            (
                Key::Udp { netns: ns, addr: t },
                tcp.as_fd().try_clone_to_owned().unwrap(),
            ),
        ];
        let old = tokio::spawn(async move {
            let s = listening.next().await.unwrap();
            s.hand_over(&sockets).await.unwrap();
            s.taken().await.unwrap()
        });
        let (pred, inherited) = take_over(&path, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(pred.pid() as u32, std::process::id());
        assert_eq!(inherited.len(), 2);
        let l = inherited.tcp_listener(ns, t).unwrap();
        // The same socket: a connection to it is accepted on the copy.
        let _c = std::net::TcpStream::connect(t).unwrap();
        drop(tcp);
        l.set_nonblocking(false).unwrap();
        l.accept().unwrap();
        assert!(inherited.udp_socket(ns, u).is_some());
        pred.taken().await.unwrap();
        assert!(old.await.unwrap(), "the old side saw `taken`");
        let _ = std::fs::remove_dir_all(&d);
    }
}
