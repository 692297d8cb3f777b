//! Names that are not ours go to the upstreams: a tiny upstream runs in the
//! test on loopback. SERVFAIL comes within the timeout when none answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::support::*;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Answers A 127.0.0.53 (TTL 60), or NXDOMAIN for names starting `nx`.
    Answer,
    /// Reads queries and never answers.
    Silent,
    /// Over UDP answers with TC and nothing else; over TCP with 3 records.
    TruncateUdp,
}

struct Upstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn reply_to(query: &Message, mode: Mode, over_tcp: bool) -> Message {
    let mut reply = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    reply.metadata.recursion_available = true;
    reply.add_queries(query.queries.clone());
    let q = &query.queries[0];
    let name = q.name().clone();
    if name.to_string().starts_with("nx") {
        reply.metadata.response_code = ResponseCode::NXDomain;
        let soa = SOA::new(Name::root(), Name::root(), 1, 1, 1, 1, 30);
        reply.add_authority(Record::from_rdata(Name::root(), 30, RData::SOA(soa)));
        return reply;
    }
    match mode {
        Mode::TruncateUdp if !over_tcp => reply.metadata.truncation = true,
        Mode::TruncateUdp => {
            for i in 1..=3 {
                reply.add_answer(Record::from_rdata(
                    name.clone(),
                    60,
                    RData::A(A::new(127, 0, 0, 50 + i)),
                ));
            }
        }
        _ => {
            reply.add_answer(Record::from_rdata(
                name,
                60,
                RData::A(A::new(127, 0, 0, 53)),
            ));
        }
    }
    reply
}

async fn upstream(mode: Mode) -> Upstream {
    let (udp, tcp) = shoal_dns::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = udp.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let count = queries.clone();
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            count.fetch_add(1, Ordering::SeqCst);
            if mode == Mode::Silent {
                continue;
            }
            if let Ok(q) = Message::from_vec(&buf[..n]) {
                let bytes = reply_to(&q, mode, false).to_vec().unwrap();
                let _ = udp.send_to(&bytes, from).await;
            }
        }
    });
    let count = queries.clone();
    let tcp_task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            if stream.read_exact(&mut buf).await.is_err() {
                continue;
            }
            if let Ok(q) = Message::from_vec(&buf) {
                let bytes = reply_to(&q, mode, true).to_vec().unwrap();
                let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&bytes);
                let _ = stream.write_all(&framed).await;
            }
        }
    });
    Upstream {
        addr,
        queries,
        tasks: vec![udp_task, tcp_task],
    }
}

fn with_upstreams(upstreams: &[SocketAddr], timeout_ms: u64) -> String {
    let list: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "upstreams = [{}]\nupstream_timeout_ms = {timeout_ms}\n{RECORDS}",
        list.join(", ")
    )
}

#[tokio::test]
async fn forwards_other_names_and_caches_the_answer() {
    let up = upstream(Mode::Answer).await;
    let served = Served::start(&with_upstreams(&[up.addr], 2000)).await;
    let addr = served.addr("front");
    let m = udp(addr, "example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.recursion_available && !m.metadata.authoritative);
    assert_eq!(ips(&m), ["127.0.0.53"]);
    let again = udp(addr, "EXAMPLE.test.", RecordType::A).await;
    assert_eq!(ips(&again), ["127.0.0.53"]);
    assert_eq!(
        up.queries.load(Ordering::SeqCst),
        1,
        "second answer from the cache"
    );

    // NXDOMAIN is passed on (and cached by its SOA).
    let m = udp(addr, "nx.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    udp(addr, "nx.example.test.", RecordType::A).await;
    assert_eq!(up.queries.load(Ordering::SeqCst), 2);

    // Our own names are never forwarded.
    udp(addr, "nope.shoal.", RecordType::A).await;
    udp(addr, "web.", RecordType::A).await;
    assert_eq!(up.queries.load(Ordering::SeqCst), 2);

    // hickory's resolver gets the same through us.
    let lookup = within(resolver(addr).lookup("other.test.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(record_ips(lookup.answers()), ["127.0.0.53"]);
    served.stop().await;
}

#[tokio::test]
async fn silent_upstream_gives_servfail_within_the_timeout() {
    let up = upstream(Mode::Silent).await;
    let served = Served::start(&with_upstreams(&[up.addr], 400)).await;
    let start = Instant::now();
    let m = udp(served.addr("front"), "example.test.", RecordType::A).await;
    let took = start.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(took >= Duration::from_millis(350), "too early: {took:?}");
    assert!(took < Duration::from_millis(1500), "too late: {took:?}");
    assert!(up.queries.load(Ordering::SeqCst) >= 1);
    served.stop().await;
}

#[tokio::test]
async fn upstream_down_gives_servfail_promptly() {
    // A port nobody listens on: the kernel refuses at once.
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let served = Served::start(&with_upstreams(&[closed], 3000)).await;
    let start = Instant::now();
    let m = udp(served.addr("front"), "example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(start.elapsed() < Duration::from_millis(3500));
    served.stop().await;
}

#[tokio::test]
async fn a_silent_first_upstream_leaves_time_for_the_second() {
    let silent = upstream(Mode::Silent).await;
    let good = upstream(Mode::Answer).await;
    let served = Served::start(&with_upstreams(&[silent.addr, good.addr], 1000)).await;
    let start = Instant::now();
    let m = udp(served.addr("front"), "example.test.", RecordType::A).await;
    assert_eq!(ips(&m), ["127.0.0.53"]);
    assert!(start.elapsed() < Duration::from_millis(1000));
    served.stop().await;
}

#[tokio::test]
async fn truncated_upstream_answers_are_fetched_over_tcp() {
    let up = upstream(Mode::TruncateUdp).await;
    let served = Served::start(&with_upstreams(&[up.addr], 2000)).await;
    let m = tcp(served.addr("front"), "example.test.", RecordType::A).await;
    assert_eq!(sorted_ips(&m), ["127.0.0.51", "127.0.0.52", "127.0.0.53"]);
    served.stop().await;
}

#[tokio::test]
async fn a_slow_forward_does_not_hold_up_local_answers() {
    let up = upstream(Mode::Silent).await;
    let served = Served::start(&with_upstreams(&[up.addr], 1500)).await;
    let addr = served.addr("front");
    let forwarded = tokio::spawn(async move { udp(addr, "example.test.", RecordType::A).await });
    // Let the forwarded query reach the server first.
    while up.queries.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            ips(&udp(addr, "web.shoal.", RecordType::A).await),
            ["10.77.0.200"]
        );
    }
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
    assert!(!forwarded.is_finished(), "the forward is still waiting");
    let m = within(forwarded).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    served.stop().await;
}
