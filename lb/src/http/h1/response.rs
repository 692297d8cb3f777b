//! A backend's response head: parsed (httparse), its body's framing worked
//! out (RFC 9112 §6.3), and whether the connection can carry another
//! request. The head goes to the client as it came when it is HTTP/1.1 and
//! names no hop-by-hop field (the common case: no copy); otherwise it is
//! written again without them.

use std::io::Write;

/// Most header fields of a response this path parses.
pub const MAX_FIELDS: usize = 96;
/// Longest response head accepted.
pub const MAX_HEAD: usize = 32 * 1024;

/// How the body after the head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// A chunked body.
    Chunked,
    /// Everything until the backend closes.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Bytes of the head in the buffer.
    pub head_len: usize,
    /// How the body ends.
    pub framing: Framing,
    /// The connection may carry another request once the body is read.
    pub reusable: bool,
    /// The head can be sent to the client byte for byte.
    pub verbatim: bool,
}

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// Not a response this proxy can pass on; the reason.
    Bad(&'static str),
    /// A whole head.
    Ready(Response),
}

fn is(name: &str, what: &str) -> bool {
    name.eq_ignore_ascii_case(what)
}

/// Parses the response head at the start of `buf`, to a request that was
/// `HEAD` when `head_request`.
pub fn parse(buf: &[u8], head_request: bool) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut fields);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Parsed::Bad("response head too large")
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Bad("malformed response head"),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Parsed::Bad("malformed response head");
    };
    if status == 101 {
        return Parsed::Bad("switching protocols without an upgrade request");
    }
    let mut length = None;
    let mut chunked = None;
    let mut close = version == 0;
    // httparse skips empty lines before the status line; such a head is
    // written again rather than passed on with them.
    let mut verbatim = version == 1 && buf.starts_with(b"HTTP/1.1 ");
    for f in &*resp.headers {
        if is(f.name, "content-length") {
            let v = f.value.trim_ascii();
            let n = std::str::from_utf8(v)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (n, length) {
                (None, _) => return Parsed::Bad("bad Content-Length in response"),
                (Some(n), Some(m)) if n != m => {
                    return Parsed::Bad("conflicting Content-Length in response")
                }
                (Some(n), _) => length = Some(n),
            }
        } else if is(f.name, "transfer-encoding") {
            let last = f.value.split(|b| *b == b',').next_back().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if is(f.name, "connection") {
            // `Connection: keep-alive` says what is true of the client's
            // hop too (it stays open), so it may pass; anything else is
            // about the backend's hop only.
            verbatim &= f.value.trim_ascii().eq_ignore_ascii_case(b"keep-alive");
            for option in f.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if version == 0 && option.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        } else if is(f.name, "keep-alive") || is(f.name, "proxy-connection") {
            verbatim = false;
        }
    }
    let framing = if head_request || status < 200 || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    if chunked.is_some() && length.is_some() {
        // RFC 9112 §6.3: Transfer-Encoding wins, and the connection must
        // not be reused (the message may be a smuggling attempt).
        close = true;
        verbatim = false;
    }
    if framing == Framing::UntilClose {
        close = true;
        verbatim = false;
    }
    Parsed::Ready(Response {
        status,
        head_len,
        framing,
        reusable: !close,
        verbatim,
    })
}

/// Writes `head` (a whole response head) again for the client: status line
/// as HTTP/1.1, no hop-by-hop fields, no `Content-Length` beside a
/// `Transfer-Encoding`, and `Connection: close` when `close`.
pub fn rewrite(head: &[u8], close: bool, out: &mut Vec<u8>) {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut fields);
    out.clear();
    if !matches!(resp.parse(head), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let status = resp.code.unwrap_or(502);
    let reason = resp.reason.unwrap_or("");
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    let has_te = resp.headers.iter().any(|f| is(f.name, "transfer-encoding"));
    for f in &*resp.headers {
        let hop = ["connection", "keep-alive", "proxy-connection"]
            .iter()
            .any(|h| is(f.name, h));
        if hop || (has_te && is(f.name, "content-length")) {
            continue;
        }
        out.extend_from_slice(f.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(f.value);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(raw: &[u8], head: bool) -> Response {
        match parse(raw, head) {
            Parsed::Ready(r) => r,
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let r = ready(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", false);
        assert_eq!(r.framing, Framing::Length(3));
        assert!(r.reusable && r.verbatim);
        assert_eq!(r.head_len, 38);
        let r = ready(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!((r.framing, r.reusable), (Framing::Chunked, true));
        let r = ready(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(
            (r.framing, r.reusable, r.verbatim),
            (Framing::UntilClose, false, false)
        );
        let r = ready(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true);
        assert_eq!(r.framing, Framing::Empty);
        for code in ["204 No Content", "304 Not Modified", "103 Early Hints"] {
            let raw = format!("HTTP/1.1 {code}\r\nContent-Length: 9\r\n\r\n");
            assert_eq!(ready(raw.as_bytes(), false).framing, Framing::Empty);
        }
        let r = ready(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(
            (r.framing, r.reusable, r.verbatim),
            (Framing::Chunked, false, false)
        );
    }

    #[test]
    fn connection_fields_decide_reuse_and_verbatim() {
        let r = ready(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!((r.reusable, r.verbatim), (false, false));
        let r = ready(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert_eq!((r.reusable, r.verbatim), (false, false));
        let r = ready(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!((r.reusable, r.verbatim), (true, false));
        let r = ready(
            b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!((r.reusable, r.verbatim), (true, true), "nginx's usual head");
        let r = ready(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!((r.reusable, r.verbatim), (true, false));
        let r = ready(
            b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!((r.reusable, r.verbatim), (true, false));
    }

    #[test]
    fn bad_heads_are_refused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw, false), Parsed::Bad(_)),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n", false), Parsed::Partial);
    }

    #[test]
    fn rewritten_heads_drop_hop_by_hop_fields() {
        let mut out = Vec::new();
        rewrite(
            b"HTTP/1.0 200 Fine\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-A: b\r\n\r\n",
            true,
            &mut out,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 Fine\r\nX-A: b\r\nconnection: close\r\n\r\n"
        );
        rewrite(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            &mut out,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }
}
