//! The client's address for the backend: `X-Forwarded-For` (appended to what
//! a trusted front already set), RFC 7239 `Forwarded`, and
//! `X-Forwarded-Proto`.

use std::net::{IpAddr, SocketAddr};

/// The `X-Forwarded-For` value: `existing, client`.
pub fn x_forwarded_for(existing: Option<&[u8]>, client: IpAddr) -> String {
    match existing
        .and_then(|e| std::str::from_utf8(e).ok())
        .map(str::trim)
    {
        Some(e) if !e.is_empty() => format!("{e}, {client}"),
        _ => client.to_string(),
    }
}

/// One RFC 7239 `Forwarded` element for this hop (IPv6 quoted and
/// bracketed, as the RFC requires).
pub fn forwarded_element(
    client: IpAddr,
    by: Option<SocketAddr>,
    proto: &str,
    host: Option<&[u8]>,
) -> String {
    let node = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut s = format!("for={}", node(client));
    if let Some(by) = by {
        s.push_str(&format!(";by={}", node(by.ip())));
    }
    if let Some(h) = host.and_then(|h| std::str::from_utf8(h).ok()) {
        if !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            s.push_str(&format!(";host=\"{h}\""));
        }
    }
    s.push_str(&format!(";proto={proto}"));
    s
}

/// The `Forwarded` value: `existing, element`.
pub fn forwarded(existing: Option<&[u8]>, element: &str) -> String {
    match existing
        .and_then(|e| std::str::from_utf8(e).ok())
        .map(str::trim)
    {
        Some(e) if !e.is_empty() => format!("{e}, {element}"),
        _ => element.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
