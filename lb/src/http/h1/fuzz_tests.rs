//! Untrusted bytes never panic the fast path's parsers, and the chunked
//! scanner finds the same end however its input is split.

use proptest::prelude::*;

use super::chunked::Chunked;
use super::request::{self, Peer};
use super::response;
use crate::http::HttpSettings;

fn peer() -> Peer {
    Peer {
        client: "192.0.2.7:5555".parse().unwrap(),
        local: None,
    }
}

/// Bytes that look like HTTP often enough to reach deep into the parsers.
fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"GET / HTTP/1.1\r\n".to_vec()),
        Just(b"HTTP/1.1 200 OK\r\n".to_vec()),
        Just(b"Host: a\r\n".to_vec()),
        Just(b"Content-Length: 3\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Connection: close, keep-alive\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..16),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn request_heads_never_panic(bytes in http_ish()) {
        let mut out = Vec::new();
        for s in [HttpSettings::default(), HttpSettings { hash_key: "cookie:sid".parse().unwrap(), ..HttpSettings::default() }] {
            if let request::Parsed::Ready(r) = request::parse(&bytes, &s, peer(), &mut out) {
                prop_assert!(r.head_len <= bytes.len());
                prop_assert!(out.ends_with(b"\r\n\r\n"));
            }
        }
    }

    #[test]
    fn response_heads_never_panic(bytes in http_ish(), head in any::<bool>()) {
        if let response::Parsed::Ready(r) = response::parse(&bytes, head) {
            prop_assert!(r.head_len <= bytes.len());
            let mut out = Vec::new();
            response::rewrite(&bytes[..r.head_len], true, &mut out);
            prop_assert!(out.starts_with(b"HTTP/1.1 "));
        }
    }

    #[test]
    fn chunked_ends_do_not_depend_on_splits(bytes in http_ish(), cut in any::<prop::sample::Index>()) {
        let whole = Chunked::default().feed(&bytes);
        let at = cut.index(bytes.len() + 1);
        let mut c = Chunked::default();
        let split = match c.feed(&bytes[..at]) {
            Ok(None) => c.feed(&bytes[at..]).map(|e| e.map(|n| n + at)),
            other => other,
        };
        match (whole, split) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
        }
    }
}
