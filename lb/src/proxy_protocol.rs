//! The PROXY protocol (HAProxy's, versions 1 and 2): how a front load
//! balancer tells the next hop who the client was.
//!
//! [`read_header`] consumes a v1 or v2 header from a fresh connection
//! (peeking first, so no byte of the payload is taken); [`encode_v2`] writes
//! the v2 header shoal sends to backends. Parsing is bounded and total: any
//! byte string yields a header, "need more", or an error, never a panic.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The twelve bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included.
pub const V1_MAX: usize = 107;

/// What a PROXY header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client, or `None` for `LOCAL` / `UNKNOWN` (health checks of the
    /// front balancer itself): then the connection's own peer stands.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when given.
    pub destination: Option<SocketAddr>,
}

/// A connection that does not start with a valid PROXY header.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Neither signature.
    #[error("PROXY header expected, got other bytes")]
    NotProxy,
    /// The header is malformed.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    /// The connection ended or stalled before the header was complete.
    #[error("PROXY header incomplete: {0}")]
    Io(#[from] io::Error),
}

/// The outcome of parsing a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A header of this many bytes.
    Done(ProxyHeader, usize),
    /// A valid prefix: at least this many bytes in all are needed.
    Need(usize),
}

/// Parses the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < V2_SIGNATURE.len() {
        let sig_prefix = V2_SIGNATURE.starts_with(buf);
        let v1_prefix = b"PROXY ".starts_with(&buf[..buf.len().min(6)]);
        return if sig_prefix || v1_prefix {
            Ok(Parsed::Need(V2_SIGNATURE.len()))
        } else {
            Err(ProxyError::NotProxy)
        };
    }
    if buf.starts_with(&V2_SIGNATURE) {
        parse_v2(buf)
    } else if buf.starts_with(b"PROXY ") {
        parse_v1(buf)
    } else {
        Err(ProxyError::NotProxy)
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < 16 {
        return Ok(Parsed::Need(16));
    }
    let (ver_cmd, fam, len) = (
        buf[12],
        buf[13],
        u16::from_be_bytes([buf[14], buf[15]]) as usize,
    );
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("version is not 2"));
    }
    let total = 16 + len;
    if buf.len() < total {
        return Ok(Parsed::Need(total));
    }
    let body = &buf[16..total];
    let local = ProxyHeader {
        source: None,
        destination: None,
    };
    match ver_cmd & 0x0f {
        0 => return Ok(Parsed::Done(local, total)),
        1 => {}
        _ => return Err(ProxyError::Malformed("unknown command")),
    }
    let header = match fam {
        0x11 | 0x12 => {
            if body.len() < 12 {
                return Err(ProxyError::Malformed("IPv4 address block too short"));
            }
            let ip = |o: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[o],
                    body[o + 1],
                    body[o + 2],
                    body[o + 3],
                ))
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            ProxyHeader {
                source: Some(SocketAddr::new(ip(0), port(8))),
                destination: Some(SocketAddr::new(ip(4), port(10))),
            }
        }
        0x21 | 0x22 => {
            if body.len() < 36 {
                return Err(ProxyError::Malformed("IPv6 address block too short"));
            }
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&body[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            ProxyHeader {
                source: Some(SocketAddr::new(ip(0), port(32))),
                destination: Some(SocketAddr::new(ip(16), port(34))),
            }
        }
        // UNSPEC or UNIX: no usable address; keep the connection's own.
        _ => local,
    };
    Ok(Parsed::Done(header, total))
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::Malformed("v1 line longer than 107 bytes"))
        } else {
            Ok(Parsed::Need(buf.len() + 1))
        };
    };
    let line = std::str::from_utf8(&buf[..end])
        .map_err(|_| ProxyError::Malformed("v1 line is not text"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let total = end + 2;
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Parsed::Done(
            ProxyHeader {
                source: None,
                destination: None,
            },
            total,
        )),
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                let ip: IpAddr = s.parse().map_err(|_| ProxyError::Malformed("v1 address"))?;
                match (ip, *fam) {
                    (IpAddr::V4(_), "TCP4") | (IpAddr::V6(_), "TCP6") => Ok(ip),
                    _ => Err(ProxyError::Malformed("v1 address family mismatch")),
                }
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                s.parse().map_err(|_| ProxyError::Malformed("v1 port"))
            };
            Ok(Parsed::Done(
                ProxyHeader {
                    source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                    destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
                },
                total,
            ))
        }
        _ => Err(ProxyError::Malformed("v1 line")),
    }
}

/// Reads and consumes a PROXY header from a fresh connection, waiting at
/// most `limit` for it. No byte after the header is consumed.
pub async fn read_header(
    stream: &mut TcpStream,
    limit: Duration,
) -> Result<ProxyHeader, ProxyError> {
    tokio::time::timeout(limit, async {
        let mut buf = vec![0u8; 256];
        let mut seen = 0;
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            match parse(&buf[..n])? {
                Parsed::Done(h, len) => {
                    let mut sink = vec![0u8; len];
                    stream.read_exact(&mut sink).await?;
                    return Ok(h);
                }
                Parsed::Need(want) => {
                    if want > buf.len() {
                        buf.resize(want, 0);
                    }
                    // Peeking leaves the socket readable: wait a moment for
                    // the rest instead of spinning (headers rarely split).
                    if n == seen {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    seen = n;
                }
            }
        }
    })
    .await
    .map_err(|_| {
        ProxyError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "no PROXY header in time",
        ))
    })?
}

/// The v2 header for a TCP connection from `source` to `destination`.
/// Mixed families are sent as IPv6 (IPv4-mapped).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(52);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v2_round_trips_for_both_families() {
        for (s, d) in [
            ("192.0.2.1:5000", "198.51.100.2:80"),
            ("[2001:db8::1]:5000", "[2001:db8::2]:443"),
        ] {
            let bytes = encode_v2(sa(s), sa(d));
            let Parsed::Done(h, n) = parse(&bytes).unwrap() else {
                panic!()
            };
            assert_eq!(n, bytes.len());
            assert_eq!((h.source, h.destination), (Some(sa(s)), Some(sa(d))));
        }
        // The exact bytes of a TCP4 header (HAProxy's documented layout).
        let b = encode_v2(sa("1.2.3.4:258"), sa("5.6.7.8:80"));
        assert_eq!(
            &b[12..],
            &[0x21, 0x11, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 0, 80]
        );
    }

    #[test]
    fn v1_lines() {
        let Parsed::Done(h, n) =
            parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 5000 80\r\nGET /").unwrap()
        else {
            panic!()
        };
        assert_eq!(n, 43);
        assert_eq!(h.source, Some(sa("192.0.2.1:5000")));
        let Parsed::Done(h, _) = parse(b"PROXY UNKNOWN\r\n").unwrap() else {
            panic!()
        };
        assert_eq!(h.source, None);
        assert!(matches!(
            parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 5000"),
            Ok(Parsed::Need(_))
        ));
        assert!(parse(b"PROXY TCP6 192.0.2.1 198.51.100.2 5000 80\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n").is_err());
    }

    #[test]
    fn local_and_partial_v2() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&local).unwrap(),
            Parsed::Done(
                ProxyHeader {
                    source: None,
                    destination: None
                },
                16
            )
        );
        let full = encode_v2(sa("1.2.3.4:1"), sa("5.6.7.8:2"));
        assert_eq!(parse(&full[..20]).unwrap(), Parsed::Need(28));
        assert_eq!(parse(&full[..5]).unwrap(), Parsed::Need(12));
    }

    #[test]
    fn other_bytes_are_not_proxy() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n"),
            Err(ProxyError::NotProxy)
        ));
        assert!(matches!(parse(b"G"), Err(ProxyError::NotProxy)));
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert!(matches!(parse(&bad), Err(ProxyError::Malformed(_))));
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(parse(&short), Err(ProxyError::Malformed(_))));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for i in 0..20_000 {
            let len = rng.gen_range(0..80);
            let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            // Half of the inputs start with a valid signature to reach deeper.
            if i % 2 == 0 && b.len() >= 16 {
                b[..12].copy_from_slice(&V2_SIGNATURE);
            } else if i % 4 == 1 && b.len() >= 6 {
                b[..6].copy_from_slice(b"PROXY ");
            }
            let _ = parse(&b);
        }
    }
}
