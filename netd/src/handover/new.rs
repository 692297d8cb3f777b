//! The new agent's side of a handover (see [`super`]): [`take_over`] asks
//! the agent running on the state directory for its sockets, checks each
//! against its key, and returns them ([`Inherited`]) with the
//! [`Predecessor`] to tell once this agent serves.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::time::Instant;

use super::message::{invalid, recv, same_user, send, Message};
use super::wire::Conn;
use super::{check, Inherited, MAX_SOCKETS, VERSION};

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
    use crate::handover::tests::dir;
    use crate::handover::{bind_unix, SOCKET};

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
}
