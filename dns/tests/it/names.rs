//! Every name form and record type, through hickory's resolver and the
//! wire client.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::*;

fn lookup_ips(lookup: &hickory_resolver::lookup::Lookup) -> Vec<String> {
    let mut v = record_ips(lookup.answers());
    v.sort();
    v
}

#[tokio::test]
async fn service_name_in_every_form_answers_the_vip() {
    let served = Served::start(RECORDS).await;
    let resolver = resolver(served.addr("front"));
    for name in [
        "web.",
        "web.shoal.",
        "web.front.",
        "web.front.shoal.",
        "WEB.Front.SHOAL.",
    ] {
        let lookup = within(resolver.lookup(name, RecordType::A)).await.unwrap();
        assert_eq!(lookup_ips(&lookup), ["10.77.0.200"], "{name}");
        assert!(lookup.answers().iter().all(|r| r.ttl == 5), "{name}: ttl");
    }
    served.stop().await;
}

#[tokio::test]
async fn tasks_name_answers_healthy_task_ips() {
    let served = Served::start(RECORDS).await;
    let resolver = resolver(served.addr("front"));
    for name in ["tasks.web.", "tasks.web.shoal.", "tasks.web.front.shoal."] {
        let lookup = within(resolver.lookup(name, RecordType::A)).await.unwrap();
        assert_eq!(lookup_ips(&lookup), ["10.77.0.11", "10.77.0.12"], "{name}");
    }
    served.stop().await;
}

#[tokio::test]
async fn dnsrr_service_answers_healthy_task_ips_v4_and_v6() {
    let served = Served::start(RECORDS).await;
    let addr = served.addr("front");
    let a = udp(addr, "api.shoal.", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.authoritative);
    assert_eq!(
        sorted_ips(&a),
        [
            "10.77.1.1",
            "10.77.1.2",
            "10.77.1.3",
            "10.77.1.4",
            "10.77.1.5",
            "10.77.1.6"
        ]
    );
    let aaaa = udp(addr, "api.shoal.", RecordType::AAAA).await;
    assert_eq!(sorted_ips(&aaaa), ["fd00:77::8"]);
    let resolver = resolver(addr);
    let ip = within(resolver.lookup_ip("api.8.shoal.")).await.unwrap();
    assert_eq!(
        ip.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        ["fd00:77::8"]
    );
    served.stop().await;
}

#[tokio::test]
async fn task_name_answers_its_ip() {
    let served = Served::start(RECORDS).await;
    let resolver = resolver(served.addr("front"));
    for name in [
        "web.1.",
        "web.1.shoal.",
        "web.1.front.",
        "web.1.front.shoal.",
    ] {
        let lookup = within(resolver.lookup(name, RecordType::A)).await.unwrap();
        assert_eq!(lookup_ips(&lookup), ["10.77.0.11"], "{name}");
    }
    served.stop().await;
}

#[tokio::test]
async fn srv_names_give_port_and_targets() {
    let served = Served::start(RECORDS).await;
    let addr = served.addr("front");
    // vip mode: one target, the service, with its VIP as glue.
    let m = udp(addr, "_http._tcp.web.shoal.", RecordType::SRV).await;
    assert_eq!(m.answers.len(), 1);
    let RData::SRV(srv) = &m.answers[0].data else {
        panic!("not SRV: {:?}", m.answers[0])
    };
    assert_eq!(srv.port, 80);
    assert_eq!(srv.target.to_string(), "web.front.shoal.");
    assert_eq!(record_ips(&m.additionals), ["10.77.0.200"]);

    // dnsrr mode: one target per healthy task, default protocol tcp.
    let resolver = resolver(addr);
    let lookup = within(resolver.lookup("_grpc._tcp.api.", RecordType::SRV))
        .await
        .unwrap();
    let mut targets: Vec<(u16, String)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.port, s.target.to_string())),
            _ => None,
        })
        .collect();
    targets.sort();
    assert_eq!(targets.len(), 7, "{targets:?}");
    assert!(targets.iter().all(|(p, _)| *p == 9000));
    assert!(targets.contains(&(9000, "api.1.front.shoal.".into())));
    assert!(
        !targets.iter().any(|(_, t)| t.starts_with("api.7.")),
        "unhealthy"
    );
    served.stop().await;
}

#[tokio::test]
async fn ptr_for_task_ips_and_vips() {
    let served = Served::start(RECORDS).await;
    let addr = served.addr("front");
    let resolver = resolver(addr);
    for (arpa, target) in [
        ("11.0.77.10.in-addr.arpa.", "web.1.front.shoal."),
        ("200.0.77.10.in-addr.arpa.", "web.front.shoal."),
        (
            "8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.7.0.0.0.0.d.f.ip6.arpa.",
            "api.8.front.shoal.",
        ),
    ] {
        let lookup = within(resolver.lookup(arpa, RecordType::PTR))
            .await
            .unwrap();
        let names: Vec<String> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(p) => Some(p.0.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(names, [target], "{arpa}");
    }
    // The unhealthy task's address is not ours (no upstream: REFUSED).
    let m = udp(addr, "13.0.77.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty());
    served.stop().await;
}

#[tokio::test]
async fn answers_keep_the_question_case_and_work_over_tcp() {
    let served = Served::start(RECORDS).await;
    let m = tcp(served.addr("front"), "Web.1.FRONT.shoal.", RecordType::A).await;
    assert_eq!(ips(&m), ["10.77.0.11"]);
    // The question goes back as asked (0x20-style clients check it), and
    // the answer's owner keeps that case too.
    assert_eq!(m.queries[0].name().to_string(), "Web.1.FRONT.shoal.");
    assert_eq!(m.answers[0].name.to_string(), "Web.1.FRONT.shoal.");
    served.stop().await;
}

#[tokio::test]
async fn any_answers_what_the_name_holds() {
    let served = Served::start(RECORDS).await;
    let addr = served.addr("front");
    let m = udp(addr, "api.shoal.", RecordType::ANY).await;
    assert_eq!(m.answers.len(), 7, "six IPv4 and one IPv6 task");
    let m = udp(addr, "web.shoal.", RecordType::ANY).await;
    assert_eq!(ips(&m), ["10.77.0.200"]);
    let m = udp(addr, "_http._tcp.web.shoal.", RecordType::ANY).await;
    assert!(matches!(m.answers[0].data, RData::SRV(_)));
    served.stop().await;
}
