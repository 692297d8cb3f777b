//! Request checks beyond pingora's parser, before any backend sees a
//! request: the cases RFC 9110/9112 say a server must (or, against request
//! smuggling, should) answer with 400.

use pingora_http::RequestHeader;

/// Why a request is refused.
pub type Refusal = &'static str;

/// Whether a request target is made of the characters a URI may hold.
pub fn valid_target(raw: &[u8]) -> bool {
    !raw.is_empty() && raw.iter().all(|b| (0x21..0x7f).contains(b))
}

/// Checks one request header; `Err` names the problem.
pub fn check(req: &RequestHeader) -> Result<(), Refusal> {
    let fields: Vec<(&str, &[u8])> = req
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    check_fields(
        req.raw_path(),
        req.version == http::Version::HTTP_11,
        fields.iter().copied(),
    )
}

/// The checks of [`check`] on a request's parts: its target, whether it is
/// HTTP/1.1, and its header fields (any case) in order.
pub fn check_fields<'a>(
    target: &[u8],
    http11: bool,
    fields: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
) -> Result<(), Refusal> {
    if !valid_target(target) {
        return Err("request target holds characters no URI may hold");
    }
    let named = |n: &'static str| {
        fields
            .clone()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v)
    };
    let hosts = named("host").count();
    if hosts > 1 {
        return Err("more than one Host header");
    }
    if hosts == 0 && http11 {
        return Err("HTTP/1.1 request without Host");
    }
    if let Some(last) = named("transfer-encoding").last() {
        if named("content-length").next().is_some() {
            return Err("both Transfer-Encoding and Content-Length");
        }
        let last = last
            .split(|b| *b == b',')
            .next_back()
            .map(|c| c.trim_ascii().to_ascii_lowercase());
        if last.as_deref() != Some(b"chunked".as_slice()) {
            return Err("Transfer-Encoding does not end in chunked");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn targets() {
        assert!(valid_target(b"/a/b?c=d%20e"));
        assert!(valid_target(b"*"));
        assert!(!valid_target(b"/a\0b"));
        assert!(!valid_target(b"/a b"));
        assert!(!valid_target(b"/\x7f"));
        assert!(!valid_target(b""));
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        assert_eq!(check(&req("/", &[("host", "a")])), Ok(()));
        assert_eq!(
            check(&req(
                "/",
                &[("host", "a"), ("transfer-encoding", "gzip, chunked")]
            )),
            Ok(())
        );
        assert!(check(&req(
            "/",
            &[
                ("host", "a"),
                ("transfer-encoding", "chunked"),
                ("content-length", "5")
            ]
        ))
        .is_err());
        assert!(check(&req(
            "/",
            &[("host", "a"), ("transfer-encoding", "chunked, gzip")]
        ))
        .is_err());
        assert!(check(&req(
            "/",
            &[("host", "a"), ("transfer-encoding", "xchunked")]
        ))
        .is_err());
        assert!(check(&req("/", &[("host", "a"), ("host", "b")])).is_err());
        assert!(check(&req("/", &[])).is_err());
    }
}
