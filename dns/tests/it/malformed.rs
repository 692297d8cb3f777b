//! Untrusted bytes: malformed requests get FORMERR (or silence when there
//! is no header to answer), never a crash; random bytes through the same
//! request path as the fuzz target.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_server::net::xfer::Protocol;
use proptest::prelude::*;
use shoal_dns::{wire, Config, Dns};

use crate::support::*;

/// A header: id 0x1234, RD, `qd` questions.
fn header(qd: u16) -> Vec<u8> {
    let mut h = vec![0x12, 0x34, 0x01, 0x00];
    h.extend_from_slice(&qd.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    h
}

fn oversized_name_query() -> Vec<u8> {
    let mut q = header(1);
    for _ in 0..5 {
        q.push(63);
        q.extend(std::iter::repeat_n(b'a', 63));
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

fn malformed_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut cut = header(1);
    cut.extend_from_slice(b"\x03www");
    let mut pointer_loop = header(1);
    pointer_loop.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    let mut missing = header(3);
    missing.extend_from_slice(b"\x03web\x05shoal\x00\x00\x01\x00\x01");
    let mut bad_label = header(1);
    bad_label.extend_from_slice(&[0x80, b'x', 0, 0, 1, 0, 1]);
    vec![
        ("cut question", cut),
        ("compression pointer loop", pointer_loop),
        ("fewer questions than counted", missing),
        ("reserved label type", bad_label),
        ("name over 255 bytes", oversized_name_query()),
    ]
}

#[tokio::test]
async fn malformed_requests_get_formerr_over_udp_and_tcp_path() {
    let served = Served::start(RECORDS).await;
    let addr = served.addr("front");
    for (what, bytes) in malformed_cases() {
        let reply = udp_raw(addr, &bytes, STEP)
            .await
            .unwrap_or_else(|| panic!("{what}: no reply"));
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.id, 0x1234, "{what}");
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{what}");
    }
    served.stop().await;
}

#[tokio::test]
async fn headerless_junk_is_ignored_and_the_server_lives_on() {
    let served = Served::start(RECORDS).await;
    let addr = served.addr("front");
    assert!(udp_raw(addr, b"\x00\x01\x02", Duration::from_millis(200))
        .await
        .is_none());
    assert!(udp_raw(addr, b"", Duration::from_millis(200))
        .await
        .is_none());
    // Hundreds of random datagrams, then a real query still answers.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..500u32 {
        let len = (i as usize * 7) % 300;
        let junk: Vec<u8> = (0..len).map(|_| rand::random()).collect();
        socket.send_to(&junk, addr).await.unwrap();
    }
    assert_eq!(
        ips(&udp(addr, "web.shoal.", RecordType::A).await),
        ["10.77.0.200"]
    );
    served.stop().await;
}

fn handler() -> shoal_dns::ViewHandler {
    let config = Config::parse(RECORDS, Path::new("t.toml")).unwrap();
    Dns::new(config.snapshot().unwrap()).handler("front")
}

fn respond(bytes: &[u8], protocol: Protocol) -> Option<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let h = handler();
    rt.block_on(wire::respond(&h, bytes, src, protocol))
}

/// Nothing answers less than a header; a query (QR clear) always gets a
/// reply; every reply parses, carries the request's ID and fits UDP.
/// (Like hickory's loop, a malformed message with QR set gets FORMERR.)
fn check(bytes: &[u8], protocol: Protocol) -> Result<(), TestCaseError> {
    let reply = respond(bytes, protocol);
    if bytes.len() < 12 {
        prop_assert!(reply.is_none());
        return Ok(());
    }
    if bytes[2] & 0x80 == 0 {
        prop_assert!(reply.is_some(), "no reply to a query");
    }
    if let Some(reply) = reply {
        let m = Message::from_vec(&reply).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(m.metadata.id, u16::from_be_bytes([bytes[0], bytes[1]]));
        if protocol == Protocol::Udp {
            prop_assert!(reply.len() <= 1232);
        }
    }
    Ok(())
}

#[test]
fn wire_path_answers_malformed_with_formerr() {
    for (what, bytes) in malformed_cases() {
        let m = Message::from_vec(&respond(&bytes, Protocol::Udp).unwrap()).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{what}");
    }
}

fn valid_queries() -> Vec<Vec<u8>> {
    [
        "web.shoal.",
        "tasks.api.",
        "_http._tcp.web.",
        "11.0.77.10.in-addr.arpa.",
        "x.test.",
    ]
    .iter()
    .map(|n| {
        query_message(n, RecordType::A, Some(1232))
            .to_vec()
            .unwrap()
    })
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), tcp in any::<bool>()) {
        check(&bytes, if tcp { Protocol::Tcp } else { Protocol::Udp })?;
    }

    #[test]
    fn mutated_queries_never_panic(
        which in 0usize..5,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<Option<usize>>(),
    ) {
        let mut bytes = valid_queries()[which].clone();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        if let Some(c) = cut {
            bytes.truncate(c % (bytes.len() + 1));
        }
        check(&bytes, Protocol::Udp)?;
    }
}
