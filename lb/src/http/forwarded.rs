//! The client's address for the backend: `X-Forwarded-For` (appended to what
//! a trusted front already set), RFC 7239 `Forwarded`, and
//! `X-Forwarded-Proto`.

use std::borrow::Cow;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

/// Every value of one field name, in order, joined with `, ` (RFC 9110
/// §5.3: repeated fields are one list); borrowed when there is only one.
pub fn joined<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<Cow<'a, [u8]>> {
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut all = first.to_vec();
    for v in std::iter::once(second).chain(values) {
        all.extend_from_slice(b", ");
        all.extend_from_slice(v);
    }
    Some(Cow::Owned(all))
}

/// The `X-Forwarded-For` value: `existing, client`.
pub fn x_forwarded_for(existing: Option<&[u8]>, client: IpAddr) -> String {
    let mut s = String::with_capacity(48);
    if let Some(e) = trimmed(existing) {
        s.push_str(e);
        s.push_str(", ");
    }
    let _ = write!(s, "{client}");
    s
}

/// One RFC 7239 `Forwarded` element for this hop (IPv6 quoted and
/// bracketed, as the RFC requires).
pub fn forwarded_element(
    client: IpAddr,
    by: Option<SocketAddr>,
    proto: &str,
    host: Option<&[u8]>,
) -> String {
    let mut s = String::with_capacity(96);
    push_element(&mut s, client, by, proto, host);
    s
}

/// The `Forwarded` value: `existing, element`.
pub fn forwarded(existing: Option<&[u8]>, element: &str) -> String {
    match trimmed(existing) {
        Some(e) => format!("{e}, {element}"),
        None => element.to_string(),
    }
}

/// `forwarded(existing, &forwarded_element(client, by, proto, host))`,
/// built in one allocation.
pub fn forwarded_for(
    existing: Option<&[u8]>,
    client: IpAddr,
    by: Option<SocketAddr>,
    proto: &str,
    host: Option<&[u8]>,
) -> String {
    let e = trimmed(existing);
    let mut s = String::with_capacity(96 + e.map_or(0, |e| e.len() + 2));
    if let Some(e) = e {
        s.push_str(e);
        s.push_str(", ");
    }
    push_element(&mut s, client, by, proto, host);
    s
}

/// A previous hop's value, if it is UTF-8 and not blank.
fn trimmed(existing: Option<&[u8]>) -> Option<&str> {
    existing
        .and_then(|e| std::str::from_utf8(e).ok())
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

fn push_element(
    s: &mut String,
    client: IpAddr,
    by: Option<SocketAddr>,
    proto: &str,
    host: Option<&[u8]>,
) {
    let node = |s: &mut String, ip: IpAddr| {
        let _ = match ip {
            IpAddr::V4(v4) => write!(s, "{v4}"),
            IpAddr::V6(v6) => write!(s, "\"[{v6}]\""),
        };
    };
    s.push_str("for=");
    node(s, client);
    if let Some(by) = by {
        s.push_str(";by=");
        node(s, by.ip());
    }
    if let Some(h) = host.and_then(|h| std::str::from_utf8(h).ok()) {
        if !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            s.push_str(";host=\"");
            s.push_str(h);
            s.push('"');
        }
    }
    s.push_str(";proto=");
    s.push_str(proto);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_are_one_list() {
        let none: [&[u8]; 0] = [];
        assert_eq!(joined(none.into_iter()), None);
        assert_eq!(joined([&b"a"[..]].into_iter()).as_deref(), Some(&b"a"[..]));
        assert_eq!(
            joined([&b"a"[..], b"b, c", b"d"].into_iter()).as_deref(),
            Some(&b"a, b, c, d"[..])
        );
    }

    #[test]
    fn xff_appends() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(x_forwarded_for(None, ip), "192.0.2.1");
        assert_eq!(
            x_forwarded_for(Some(b"203.0.113.9"), ip),
            "203.0.113.9, 192.0.2.1"
        );
        assert_eq!(x_forwarded_for(Some(b"  "), ip), "192.0.2.1");
    }

    #[test]
    fn forwarded_follows_rfc7239() {
        let v4: IpAddr = "192.0.2.60".parse().unwrap();
        let v6: IpAddr = "2001:db8:cafe::17".parse().unwrap();
        let by: SocketAddr = "198.51.100.17:80".parse().unwrap();
        assert_eq!(
            forwarded_element(v4, Some(by), "http", Some(b"example.com")),
            "for=192.0.2.60;by=198.51.100.17;host=\"example.com\";proto=http"
        );
        assert_eq!(
            forwarded_element(v6, None, "https", None),
            "for=\"[2001:db8:cafe::17]\";proto=https"
        );
        assert_eq!(
            forwarded(Some(b"for=1.2.3.4"), "for=5.6.7.8"),
            "for=1.2.3.4, for=5.6.7.8"
        );
        // A host with a quote is left out rather than breaking the header.
        assert_eq!(
            forwarded_element(v4, None, "http", Some(b"a\"b")),
            "for=192.0.2.60;proto=http"
        );
    }

    #[test]
    fn forwarded_for_is_forwarded_of_the_element() {
        let v4: IpAddr = "192.0.2.60".parse().unwrap();
        let v6: IpAddr = "2001:db8:cafe::17".parse().unwrap();
        let by: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        for existing in [None, Some(&b""[..]), Some(b" for=1.2.3.4 "), Some(b"\xff")] {
            for (client, by, host) in [
                (v4, None, None),
                (v6, Some(by), Some(&b"example.com"[..])),
                (v4, Some(by), Some(b"bad host")),
            ] {
                assert_eq!(
                    forwarded_for(existing, client, by, "https", host),
                    forwarded(existing, &forwarded_element(client, by, "https", host))
                );
            }
        }
    }
}
