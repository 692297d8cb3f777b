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

mod inherited;
pub mod wire;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use inherited::{check, Inherited};
use wire::Conn;

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

/// The messages of the protocol (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Message {
    Hello { version: u32 },
    Socket(Key),
    Ready { sockets: usize },
    Refused { reason: String },
    Taken,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

async fn send(conn: &Conn, msg: &Message, fd: Option<&OwnedFd>) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(|e| invalid(e.to_string()))?;
    match fd {
        Some(fd) => conn.send(&body, &[fd.as_fd()]).await,
        None => conn.send(&body, &[]).await,
    }
}

/// The next message and its descriptors; `None` if the peer went away.
async fn recv(conn: &Conn) -> io::Result<Option<(Message, Vec<OwnedFd>)>> {
    let frame = match conn.recv().await {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let msg = serde_json::from_slice(&frame.body)
        .map_err(|e| invalid(format!("not a handover message: {e}")))?;
    Ok(Some((msg, frame.fds)))
}

fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// The peer's pid, if it runs as our user.
fn same_user(conn: &Conn) -> io::Result<i32> {
    let (pid, uid) = conn.peer()?;
    let me = rustix::process::getuid().as_raw();
    if uid != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the peer (pid {pid}) runs as uid {uid}, not {me}"),
        ));
    }
    Ok(pid)
}

/// A socket file this process bound or took over. It is removed when the
/// process stops only while it is still that file: a successor may have
/// bound a new one at the same path.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl SocketFile {
    /// The file now at `path`.
    pub fn at(path: &Path) -> SocketFile {
        SocketFile {
            path: path.to_path_buf(),
            id: file_id(path),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it is still the one this process made.
    pub fn remove_if_ours(&self) {
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds a listening unix socket at `path` (non-blocking), replacing
/// whatever file is there, readable and writable by its owner only.
pub fn bind_unix(path: &Path) -> io::Result<(std::os::unix::net::UnixListener, SocketFile)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok((l, SocketFile::at(path)))
}

// ---------------------------------------------------------------------
// The running agent's side.

/// The handover socket of a running agent: successors that said `hello`.
#[derive(Debug)]
pub struct Listening {
    successors: mpsc::Receiver<Successor>,
    file: SocketFile,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `path` for successors; the accept loop runs on `runtime`.
pub fn listen(path: &Path, runtime: &tokio::runtime::Handle) -> io::Result<Listening> {
    let (l, file) = bind_unix(path)?;
    let listener = {
        let _in = runtime.enter();
        UnixListener::from_std(l)?
    };
    let (tx, successors) = mpsc::channel(1);
    let task = runtime.spawn(accept(listener, tx));
    Ok(Listening {
        successors,
        file,
        task,
    })
}

async fn accept(listener: UnixListener, tx: mpsc::Sender<Successor>) {
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    match greet(stream).await {
                        Ok(s) => {
                            tracing::info!(pid = s.pid, "a new agent asks to take over");
                            let _ = tx.send(s).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "refused a handover request"),
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "handover socket: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn greet(stream: UnixStream) -> io::Result<Successor> {
    let conn = Conn::new(stream);
    let pid = same_user(&conn)?;
    let hello = tokio::time::timeout(HELLO_TIMEOUT, recv(&conn))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no hello"))??;
    match hello {
        Some((Message::Hello { version: VERSION }, _)) => Ok(Successor { conn, pid }),
        Some((Message::Hello { version }, _)) => {
            let reason = format!("protocol version {version}; this agent speaks {VERSION}");
            let _ = send(
                &conn,
                &Message::Refused {
                    reason: reason.clone(),
                },
                None,
            )
            .await;
            Err(invalid(reason))
        }
        Some((other, _)) => Err(invalid(format!("expected hello, got {other:?}"))),
        None => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

impl Listening {
    /// The next successor; `None` only if the accept loop ended.
    pub async fn next(&mut self) -> Option<Successor> {
        self.successors.recv().await
    }

    /// The socket file.
    pub fn file(&self) -> &SocketFile {
        &self.file
    }
}

/// A new agent that asked to take over (seen from the running agent).
#[derive(Debug)]
pub struct Successor {
    conn: Conn,
    pid: i32,
}

impl Successor {
    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sockets`, then `ready`.
    pub async fn hand_over(&self, sockets: &[(Key, OwnedFd)]) -> io::Result<()> {
        for (key, fd) in sockets {
            send(&self.conn, &Message::Socket(key.clone()), Some(fd)).await?;
        }
        let ready = Message::Ready {
            sockets: sockets.len(),
        };
        send(&self.conn, &ready, None).await
    }

    /// Waits for `taken`: true, or false if the successor went away first.
    pub async fn taken(&self) -> io::Result<bool> {
        match recv(&self.conn).await? {
            Some((Message::Taken, _)) => Ok(true),
            Some((other, _)) => Err(invalid(format!("expected taken, got {other:?}"))),
            None => Ok(false),
        }
    }
}

// ---------------------------------------------------------------------
// The new agent's side.

/// The agent this one takes over from (seen from the new agent).
#[derive(Debug)]
pub struct Predecessor {
    conn: Conn,
    pid: i32,
}

impl Predecessor {
    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Tells it that this agent serves now: it stops accepting, drains and
    /// exits.
    pub async fn taken(self) -> io::Result<()> {
        send(&self.conn, &Message::Taken, None).await
    }
}

/// Asks the agent answering on `path` for its sockets. `None` if no agent
/// answers there (a stale file is removed). Errors if one answers but
/// refuses or does not hand over within `limit`: two agents must not run
/// on one state directory.
pub async fn take_over(
    path: &Path,
    limit: Duration,
) -> io::Result<Option<(Predecessor, Inherited)>> {
    let deadline = Instant::now() + limit;
    loop {
        let stream = match UnixStream::connect(path).await {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // Too long a path for a unix socket: nobody can listen there.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                tracing::warn!(path = %path.display(), error = %e, "no handover possible at this path");
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "no agent answers on the handover socket; removing it");
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        };
        match tokio::time::timeout_at(deadline, receive(stream)).await {
            Ok(Ok(Some(got))) => return Ok(Some(got)),
            Ok(Ok(None)) => {
                tracing::info!("the running agent closed the handover early; asking again");
                tokio::time::sleep(Duration::from_millis(100)).await;
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no handover within {limit:?}"),
                    ));
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the running agent did not hand over within {limit:?}"),
                ))
            }
        }
    }
}

/// One attempt; `None` if the peer went away before `ready`.
async fn receive(stream: UnixStream) -> io::Result<Option<(Predecessor, Inherited)>> {
    let conn = Conn::new(stream);
    let pid = same_user(&conn)?;
    tracing::info!(
        pid,
        "an agent runs on this state directory; taking over from it"
    );
    send(&conn, &Message::Hello { version: VERSION }, None).await?;
    let mut sockets = HashMap::new();
    loop {
        let Some((msg, fds)) = recv(&conn).await? else {
            return Ok(None);
        };
        match msg {
            Message::Socket(key) => {
                if sockets.len() >= MAX_SOCKETS {
                    return Err(invalid("too many sockets"));
                }
                let mut fds = fds.into_iter();
                let (Some(fd), None) = (fds.next(), fds.next()) else {
                    tracing::warn!(socket = %key, "a socket message without exactly one descriptor; ignored");
                    continue;
                };
                match check(&key, &fd) {
                    Ok(()) => {
                        if sockets.insert(key.clone(), fd).is_some() {
                            tracing::warn!(socket = %key, "the same socket twice; keeping the last");
                        }
                    }
                    Err(why) => {
                        tracing::warn!(socket = %key, %why, "a handed-over socket is not what it says; ignored")
                    }
                }
            }
            Message::Ready { sockets: sent } => {
                tracing::info!(
                    pid,
                    sent,
                    usable = sockets.len(),
                    "received the running agent's sockets"
                );
                return Ok(Some((Predecessor { conn, pid }, Inherited::new(sockets))));
            }
            Message::Refused { reason } => {
                return Err(io::Error::other(format!(
                    "the running agent (pid {pid}) refused the handover: {reason}"
                )))
            }
            other => return Err(invalid(format!("unexpected {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("netd-handover-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn messages_read_as_documented() {
        let key = Key::Tcp {
            netns: NsId(4026532001),
            addr: "10.77.0.1:53".parse().unwrap(),
        };
        assert_eq!(
            serde_json::to_string(&Message::Socket(key)).unwrap(),
            r#"{"socket":{"kind":"tcp","netns":4026532001,"addr":"10.77.0.1:53"}}"#
        );
        assert_eq!(
            serde_json::to_string(&Message::Taken).unwrap(),
            r#""taken""#
        );
        assert_eq!(
            serde_json::to_string(&Message::Hello { version: 1 }).unwrap(),
            r#"{"hello":{"version":1}}"#
        );
        for junk in ["", "{}", "[]", r#"{"socket":{"kind":"sctp"}}"#, "\"tak"] {
            assert!(serde_json::from_str::<Message>(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn a_thread_knows_its_namespace() {
        let me = current_netns().unwrap();
        let other = std::thread::spawn(current_netns).join().unwrap().unwrap();
        assert_eq!(me, other);
    }

    #[tokio::test]
    async fn no_agent_or_a_stale_file_means_a_normal_start() {
        let d = dir("stale");
        let path = d.join(SOCKET);
        assert!(take_over(&path, Duration::from_secs(1))
            .await
            .unwrap()
            .is_none());
        drop(bind_unix(&path).unwrap());
        assert!(path.exists());
        assert!(take_over(&path, Duration::from_secs(1))
            .await
            .unwrap()
            .is_none());
        assert!(!path.exists(), "the stale file is gone");
        let long = d.join("x".repeat(200)).join(SOCKET);
        assert!(take_over(&long, Duration::from_secs(1))
            .await
            .unwrap()
            .is_none());
        let _ = std::fs::remove_dir_all(&d);
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

    #[tokio::test]
    async fn a_successor_that_leaves_early_is_not_taken() {
        let d = dir("early");
        let path = d.join(SOCKET);
        let mut listening = listen(&path, &tokio::runtime::Handle::current()).unwrap();
        let client = tokio::spawn({
            let path = path.clone();
            async move {
                let conn = Conn::new(UnixStream::connect(&path).await.unwrap());
                send(&conn, &Message::Hello { version: VERSION }, None)
                    .await
                    .unwrap();
                // Gone without `taken`.
            }
        });
        let s = listening.next().await.unwrap();
        client.await.unwrap();
        assert!(!s.taken().await.unwrap());
        // A wrong version is refused, garbage is dropped; neither reaches us.
        let conn = Conn::new(UnixStream::connect(&path).await.unwrap());
        send(&conn, &Message::Hello { version: 99 }, None)
            .await
            .unwrap();
        let refused = recv(&conn).await.unwrap().unwrap().0;
        assert!(matches!(refused, Message::Refused { .. }), "{refused:?}");
        let conn = Conn::new(UnixStream::connect(&path).await.unwrap());
        conn.send(b"\xff\xfe not json", &[]).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), listening.next()).await;
        assert!(waited.is_err(), "no successor from bad requests");
        drop(listening);
        let _ = std::fs::remove_dir_all(&d);
    }
}
