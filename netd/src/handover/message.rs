//! The protocol's messages (see [`super`]), each one JSON frame on the
//! handover socket ([`super::wire`]), and the check that the peer runs as
//! this agent's user.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::wire::Conn;
use super::Key;

/// The messages of the protocol (see the [module docs](super)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Message {
    Hello { version: u32 },
    Socket(Key),
    Ready { sockets: usize },
    Refused { reason: String },
    Taken,
}

pub(super) fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

pub(super) async fn send(conn: &Conn, msg: &Message, fd: Option<&OwnedFd>) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(|e| invalid(e.to_string()))?;
    match fd {
        Some(fd) => conn.send(&body, &[fd.as_fd()]).await,
        None => conn.send(&body, &[]).await,
    }
}

/// The next message and its descriptors; `None` if the peer went away.
pub(super) async fn recv(conn: &Conn) -> io::Result<Option<(Message, Vec<OwnedFd>)>> {
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
pub(super) fn same_user(conn: &Conn) -> io::Result<i32> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handover::NsId;

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
}
