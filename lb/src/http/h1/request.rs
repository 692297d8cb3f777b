//! A client's request head: parsed (httparse), checked against the same
//! rules as pingora's path ([`crate::http::validate`]), and written out as
//! the head the backend gets: request line, the client's fields minus
//! hop-by-hop ones, then the forwarding headers.
//!
//! Requests this path does not carry are handed to pingora whole
//! ([`Parsed::HandOff`]): HTTP/1.0, `Upgrade`, `Expect`, a chunked body, a
//! body over [`MAX_BODY`], `Connection` options other than `close` and
//! `keep-alive`, a head over [`MAX_HEAD`] or with more than [`MAX_FIELDS`]
//! fields, and the HTTP/2 preface.

use std::net::{IpAddr, SocketAddr};

use crate::http::forwarded::{forwarded_for, joined, x_forwarded_for};
use crate::http::validate::{check_fields, Refusal};
use crate::http::HttpSettings;

/// Longest request head this path reads before handing the connection over.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields this path parses.
pub const MAX_FIELDS: usize = 64;
/// Largest request body this path carries; it is kept until the response
/// starts so that an idempotent request can be sent again.
pub const MAX_BODY: usize = 64 * 1024;

/// The HTTP/2 connection preface, read whole before the hand-over (see
/// `crate::http::io::Buffered::with_prefix`).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request for pingora's path (see the module doc).
    HandOff,
    /// Malformed: answer 400 and close.
    Bad(Refusal),
    /// A request this path carries; the upstream head is written.
    Ready(Request),
}

/// A request this path carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Bytes of the head in the client's buffer.
    pub head_len: usize,
    /// Bytes of body after it (`Content-Length`).
    pub body_len: usize,
    /// A HEAD request: the response has no body whatever it says.
    pub head: bool,
    /// May be sent again after a failure (RFC 9110 idempotent methods).
    pub idempotent: bool,
    /// The client asked to close after this response.
    pub close: bool,
    /// The balancing key (see [`crate::http::HashKey`]).
    pub key: u64,
}

/// Who is asking, for the forwarding headers and the balancing key.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client (from a PROXY header when the listener accepts one).
    pub client: SocketAddr,
    /// The address the client reached.
    pub local: Option<SocketAddr>,
}

/// Fields never passed on: they describe this hop only (RFC 9110 §7.6.1).
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Fields this proxy writes itself when it adds forwarding headers.
fn forwarding(name: &str) -> bool {
    ["x-forwarded-for", "forwarded", "x-forwarded-proto"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// Parses the head at the start of `buf`; on [`Parsed::Ready`], `out` holds
/// the upstream head (the body is appended by the caller).
pub fn parse(buf: &[u8], s: &HttpSettings, peer: Peer, out: &mut Vec<u8>) -> Parsed {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Parsed::HandOff
        } else {
            Parsed::Partial
        };
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Parsed::HandOff,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::HandOff,
        Err(_) => return Parsed::Bad("malformed request head"),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Bad("malformed request head");
    };
    let fields = &*req.headers;
    let pairs = fields.iter().map(|f| (f.name, f.value));
    if let Err(why) = check_fields(target.as_bytes(), version == 1, pairs) {
        return Parsed::Bad(why);
    }
    if version != 1 {
        return Parsed::HandOff;
    }
    let mut close = false;
    let mut body_len = None;
    for f in fields {
        let name = f.name;
        if name.eq_ignore_ascii_case("content-length") {
            if body_len.is_some() {
                return Parsed::Bad("more than one Content-Length");
            }
            match content_length(f.value) {
                Some(n) => body_len = Some(n),
                None => return Parsed::Bad("Content-Length is not a number"),
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in f.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !option.is_empty() && !option.eq_ignore_ascii_case(b"keep-alive") {
                    return Parsed::HandOff;
                }
            }
        } else if ["transfer-encoding", "upgrade", "expect"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            return Parsed::HandOff;
        }
    }
    let body_len = body_len.unwrap_or(0);
    if body_len > MAX_BODY {
        return Parsed::HandOff;
    }
    let key = s.hash_key.key(
        |name| {
            fields
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case(name))
                .map(|f| f.value)
                .collect()
        },
        Some(peer.client.ip()),
    );
    write_head(out, method, target, fields, s.forwarded_headers, peer);
    Parsed::Ready(Request {
        head_len,
        body_len,
        head: method == "HEAD",
        idempotent: is_idempotent(method),
        close,
        key,
    })
}

/// A `Content-Length` value: digits only, no sign, no list.
fn content_length(v: &[u8]) -> Option<usize> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The head the backend gets. Existing forwarding fields of one name are
/// joined into the value this hop extends.
fn write_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    fields: &[httparse::Header<'_>],
    add_forwarding: bool,
    peer: Peer,
) {
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host = None;
    for f in fields {
        if f.name.eq_ignore_ascii_case("host") {
            host = Some(f.value);
        }
        if hop_by_hop(f.name) || (add_forwarding && forwarding(f.name)) {
            continue;
        }
        push_field(out, f.name.as_bytes(), f.value);
    }
    if add_forwarding {
        let joined = |name: &str| {
            joined(
                fields
                    .iter()
                    .filter(|f| f.name.eq_ignore_ascii_case(name))
                    .map(|f| f.value),
            )
        };
        let ip: IpAddr = peer.client.ip();
        let xff = x_forwarded_for(joined("x-forwarded-for").as_deref(), ip);
        push_field(out, b"x-forwarded-for", xff.as_bytes());
        let fwd = forwarded_for(joined("forwarded").as_deref(), ip, peer.local, "http", host);
        push_field(out, b"forwarded", fwd.as_bytes());
        push_field(out, b"x-forwarded-proto", b"http");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer {
            client: "192.0.2.7:5555".parse().unwrap(),
            local: Some("198.51.100.1:80".parse().unwrap()),
        }
    }

    fn run(raw: &[u8], s: &HttpSettings) -> (Parsed, String) {
        let mut out = Vec::new();
        let p = parse(raw, s, peer(), &mut out);
        (p, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_simple_get_is_rewritten_with_forwarding_fields() {
        let raw = b"GET /a?b HTTP/1.1\r\nHost: ex\r\nConnection: keep-alive\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\nNEXT";
        let (p, out) = run(raw, &HttpSettings::default());
        let Parsed::Ready(r) = p else { panic!("{p:?}") };
        assert_eq!(r.head_len, raw.len() - 4);
        assert_eq!(
            (r.body_len, r.head, r.idempotent, r.close),
            (0, false, true, false)
        );
        assert_eq!(
            out,
            "GET /a?b HTTP/1.1\r\nHost: ex\r\nAccept: */*\r\n\
             x-forwarded-for: 203.0.113.9, 192.0.2.7\r\n\
             forwarded: for=192.0.2.7;by=198.51.100.1;host=\"ex\";proto=http\r\n\
             x-forwarded-proto: http\r\n\r\n"
        );
    }

    #[test]
    fn without_forwarding_only_hop_by_hop_fields_go() {
        let s = HttpSettings {
            forwarded_headers: false,
            ..HttpSettings::default()
        };
        let raw = b"POST /p HTTP/1.1\r\nHost: ex\r\nTE: trailers\r\nConnection: close\r\nContent-Length: 3\r\nX-Forwarded-For: 1.2.3.4\r\n\r\nabc";
        let (p, out) = run(raw, &s);
        let Parsed::Ready(r) = p else { panic!("{p:?}") };
        assert_eq!((r.body_len, r.idempotent, r.close), (3, false, true));
        assert_eq!(
            out,
            "POST /p HTTP/1.1\r\nHost: ex\r\nContent-Length: 3\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
        );
    }

    #[test]
    fn partial_heads_wait() {
        let s = HttpSettings::default();
        assert_eq!(run(b"GET / HTTP/1.1\r\nHost: a\r\n", &s).0, Parsed::Partial);
        assert_eq!(run(b"PRI * HTT", &s).0, Parsed::Partial);
        assert_eq!(run(b"P", &s).0, Parsed::Partial);
    }

    #[test]
    fn what_pingora_should_carry_is_handed_off() {
        let s = HttpSettings::default();
        for raw in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-private\r\n\r\n",
        ] {
            assert_eq!(
                run(raw, &s).0,
                Parsed::HandOff,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..MAX_FIELDS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(run(&many, &s).0, Parsed::HandOff);
        let long = [b"GET /".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert_eq!(run(&long, &s).0, Parsed::HandOff);
    }

    #[test]
    fn malformed_heads_are_refused() {
        let s = HttpSettings::default();
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        ] {
            assert!(
                matches!(run(raw, &s).0, Parsed::Bad(_)),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn hash_keys_come_from_the_request() {
        let s = HttpSettings {
            hash_key: "header:X-User".parse().unwrap(),
            ..HttpSettings::default()
        };
        let key = |raw: &[u8]| match run(raw, &s).0 {
            Parsed::Ready(r) => r.key,
            p => panic!("{p:?}"),
        };
        let a = key(b"GET / HTTP/1.1\r\nHost: a\r\nx-user: alice\r\n\r\n");
        assert_eq!(
            a,
            key(b"GET /x HTTP/1.1\r\nHost: b\r\nX-User: alice\r\n\r\n")
        );
        assert_eq!(a, crate::hash::hash_bytes(b"alice"));
        assert_ne!(a, key(b"GET / HTTP/1.1\r\nHost: a\r\nx-user: bob\r\n\r\n"));
    }
}
