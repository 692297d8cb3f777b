//! A tiny HTTP/1.0 client (one request per connection, the body read to
//! the end): enough for netd's API on its unix socket, etcd's JSON gateway
//! and the test replicas. HTTP/1.0 keeps servers from chunking answers.
//! [`KeepAlive`] is its HTTP/1.1 sibling, one connection for many requests,
//! as browsers and HTTP libraries use a balancer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::sock::in_netns;

/// How long one request may take: above the 6 s a shoal balancer may
/// spend on three connect attempts to dead backends.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A status and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

fn exchange(
    mut s: impl Read + Write,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<Answer> {
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: shoal\r\n");
    if !body.is_empty() {
        req += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head:.40}")))?;
    Ok(Answer {
        status,
        body: body.to_string(),
    })
}

/// `METHOD path` to `to` over TCP from the calling thread's namespace.
pub fn request(to: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<Answer> {
    let s = TcpStream::connect_timeout(&to, REQUEST_TIMEOUT)?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    exchange(s, method, path, body)
}

/// `METHOD path` to `to` from inside namespace `ns`.
pub fn request_in(
    ns: &str,
    to: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<Answer> {
    let (method, path, body) = (method.to_string(), path.to_string(), body.to_string());
    in_netns(ns, move || request(to, &method, &path, &body))
}

/// `GET path` from inside `ns`; the body of a 200 answer, else an error.
pub fn get_in(ns: &str, to: SocketAddr, path: &str) -> std::io::Result<String> {
    let a = request_in(ns, to, "GET", path, "")?;
    if a.status != 200 {
        return Err(std::io::Error::other(format!("HTTP {}", a.status)));
    }
    Ok(a.body)
}

/// `METHOD path` over a unix socket (netd's API).
pub fn request_unix(socket: &Path, method: &str, path: &str) -> std::io::Result<Answer> {
    let s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    exchange(s, method, path, "")
}

/// An HTTP/1.1 client keeping one connection open across requests (to a
/// server answering with a `Content-Length`). It opens a new connection
/// when it has none: at first, after the server said `Connection: close`,
/// and after an error. It never retries: a request that fails on a reused
/// connection (the server closed it before answering) is a failure.
#[derive(Debug)]
pub struct KeepAlive {
    to: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    opened: u64,
}

impl KeepAlive {
    /// A client of `to`, not connected yet (connections are made from the
    /// calling thread's namespace).
    pub fn new(to: SocketAddr) -> KeepAlive {
        KeepAlive {
            to,
            conn: None,
            opened: 0,
        }
    }

    /// How many connections it has opened so far (the current one is the
    /// last).
    pub fn opened(&self) -> u64 {
        self.opened
    }

    /// `GET path` on the open connection (or a new one).
    pub fn get(&mut self, path: &str) -> std::io::Result<Answer> {
        let r = self.exchange(path);
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    fn exchange(&mut self, path: &str) -> std::io::Result<Answer> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.to, REQUEST_TIMEOUT)?;
            s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
            s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
            s.set_nodelay(true)?;
            self.opened += 1;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let req = format!("GET {path} HTTP/1.1\r\nHost: shoal\r\n\r\n");
        conn.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the connection closed before an answer",
            ));
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line: {line:.40}")))?;
        let (mut length, mut close) = (None, false);
        loop {
            line.clear();
            if conn.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let length =
            length.ok_or_else(|| std::io::Error::other("an answer without Content-Length"))?;
        let mut body = vec![0; length];
        conn.read_exact(&mut body)?;
        if close {
            self.conn = None;
        }
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}
