//! A minimal DNS client for tests: one A question over UDP from inside a
//! namespace, and the answer's rcode and addresses.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::sock::in_netns;

/// Asks `server` for `name` (type A) from namespace `ns`. Returns the rcode
/// and the A records; rcode 255 means no answer arrived (timeout, no
/// route).
pub fn query_a(ns: &str, server: SocketAddr, name: &str) -> (u8, Vec<Ipv4Addr>) {
    let mut q = vec![0x43, 0x21, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let qlen = q.len();
    in_netns(ns, move || {
        let Ok(s) = UdpSocket::bind("0.0.0.0:0") else {
            return (255, vec![]);
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.send_to(&q, server).is_err() {
            return (255, vec![]);
        }
        let mut buf = [0u8; 1500];
        let Ok(n) = s.recv(&mut buf) else {
            return (255, vec![]);
        };
        if n < 12 {
            return (255, vec![]);
        }
        let rcode = buf[3] & 0x0f;
        let answers = u16::from_be_bytes([buf[6], buf[7]]);
        // Answers follow the question; each A record is a 2-byte name
        // pointer, type, class, TTL, length and 4 bytes of address.
        let mut ips = Vec::new();
        let mut at = qlen;
        for _ in 0..answers {
            if at + 16 > n {
                break;
            }
            ips.push(Ipv4Addr::new(
                buf[at + 12],
                buf[at + 13],
                buf[at + 14],
                buf[at + 15],
            ));
            at += 16;
        }
        (rcode, ips)
    })
}
