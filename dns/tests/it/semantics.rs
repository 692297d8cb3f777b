//! NXDOMAIN vs NODATA, health, shuffling, refusal of what is not ours.

use std::collections::HashSet;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::str::FromStr;

use crate::support::*;

fn has_soa(m: &Message) -> bool {
    m.authorities.iter().any(|r| {
        matches!(&r.data, RData::SOA(soa) if soa.minimum == 5) && r.name.to_string() == "shoal."
    })
}

#[tokio::test]
async fn unknown_name_under_the_domain_is_nxdomain_with_soa() {
    let served = Served::start(RECORDS).await;
    let addr = served.addr("front");
    for name in [
        "nope.shoal.",
        "tasks.nope.shoal.",
        "nope.front.shoal.",
        "_x._tcp.web.shoal.",
    ] {
        let m = udp(addr, name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.metadata.authoritative, "{name}");
        assert!(m.answers.is_empty(), "{name}");
        assert!(has_soa(&m), "{name}: {m:?}");
    }
    served.stop().await;
}

#[tokio::test]
async fn known_name_without_the_type_is_nodata() {
    let served = Served::start(RECORDS).await;
    let addr = served.addr("front");
    // AAAA of an IPv4-only service; MX of a task; A of an SRV name.
    for (name, qtype) in [
        ("web.shoal.", RecordType::AAAA),
        ("web.1.shoal.", RecordType::MX),
        ("_http._tcp.web.shoal.", RecordType::A),
        ("front.shoal.", RecordType::A),
        ("shoal.", RecordType::A),
    ] {
        let m = udp(addr, name, qtype).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{name} {qtype}"
        );
        assert!(m.answers.is_empty(), "{name} {qtype}");
        assert!(has_soa(&m), "{name} {qtype}");
    }
    // Outside the domain too, but without an out-of-zone SOA.
    let m = udp(addr, "web.", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && m.authorities.is_empty());
    // The domain's own SOA.
    let m = udp(addr, "shoal.", RecordType::SOA).await;
    assert_eq!(m.answers.len(), 1);
    served.stop().await;
}

#[tokio::test]
async fn unhealthy_tasks_are_never_returned() {
    let served = Served::start(RECORDS).await;
    let addr = served.addr("front");
    let m = udp(addr, "web.3.shoal.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    for _ in 0..20 {
        let m = udp(addr, "tasks.web.shoal.", RecordType::A).await;
        assert!(!ips(&m).contains(&"10.77.0.13".to_string()));
        let m = udp(addr, "api.shoal.", RecordType::A).await;
        assert!(!ips(&m).contains(&"10.77.1.7".to_string()));
    }
    served.stop().await;
}

#[tokio::test]
async fn round_robin_names_are_shuffled_per_answer() {
    let served = Served::start(RECORDS).await;
    let addr = served.addr("front");
    let mut orders = HashSet::new();
    let mut firsts = HashSet::new();
    for _ in 0..60 {
        let m = udp(addr, "api.shoal.", RecordType::A).await;
        let got = ips(&m);
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted.len(), 6);
        firsts.insert(got[0].clone());
        orders.insert(got);
    }
    // 6! = 720 orders; 60 draws that all agree would be a broken shuffle.
    assert!(orders.len() > 10, "only {} distinct orders", orders.len());
    assert!(firsts.len() > 2, "first address barely varies: {firsts:?}");
    served.stop().await;
}

#[tokio::test]
async fn names_not_ours_are_refused_without_upstreams() {
    let served = Served::start(RECORDS).await;
    let m = udp(served.addr("front"), "example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.recursion_available);
    served.stop().await;
}

#[tokio::test]
async fn other_opcodes_and_classes_are_refused_cleanly() {
    let served = Served::start(RECORDS).await;
    let addr = served.addr("front");
    let mut m = query_message("web.shoal.", RecordType::A, None);
    m.metadata.op_code = OpCode::Status;
    assert_eq!(
        udp_message(addr, &m).await.metadata.response_code,
        ResponseCode::NotImp
    );

    let mut q = Query::query(Name::from_str("web.shoal.").unwrap(), RecordType::A);
    q.set_query_class(hickory_proto::rr::DNSClass::CH);
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(q);
    assert_eq!(
        udp_message(addr, &m).await.metadata.response_code,
        ResponseCode::Refused
    );

    let mut m = query_message("web.shoal.", RecordType::A, None);
    m.add_query(Query::query(
        Name::from_str("api.shoal.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        udp_message(addr, &m).await.metadata.response_code,
        ResponseCode::FormErr
    );

    let m = tcp(addr, "shoal.", RecordType::AXFR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);

    let mut m = query_message("web.shoal.", RecordType::A, Some(1232));
    m.edns.as_mut().unwrap().set_version(1);
    // BADVERS is 16, which decodes under its other name, BADSIG.
    let code = udp_message(addr, &m).await.metadata.response_code;
    assert_eq!(u16::from(code), u16::from(ResponseCode::BADVERS));
    served.stop().await;
}
