//! The running agent's side of a handover (see [`super`]): the handover
//! socket it listens on ([`Listening`]), each new agent's `hello` checked,
//! and the accepted new agent ([`Successor`]), to which it sends its
//! sockets and from which it awaits `taken`.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::message::{invalid, recv, same_user, send, Message};
use super::wire::Conn;
use super::{bind_unix, Key, SocketFile, HELLO_TIMEOUT, VERSION};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handover::tests::dir;
    use crate::handover::SOCKET;

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
