//! A query is answered from the view of the listener it arrived on.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

#[tokio::test]
async fn networks_do_not_see_each_other() {
    let served = Served::start(RECORDS).await;
    let (front, back) = (served.addr("front"), served.addr("back"));

    // front sees web, not db; back sees db, not web.
    assert_eq!(
        ips(&udp(front, "web.shoal.", RecordType::A).await),
        ["10.77.0.200"]
    );
    assert_eq!(
        ips(&udp(back, "db.shoal.", RecordType::A).await),
        ["10.88.0.10"]
    );
    for (addr, name) in [
        (front, "db.shoal."),
        (front, "db.back.shoal."),
        (front, "tasks.db.shoal."),
        (back, "web.shoal."),
        (back, "web.1.front.shoal."),
    ] {
        let m = udp(addr, name, RecordType::A).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "{name} via {addr}"
        );
        assert!(m.answers.is_empty());
    }
    // Not even a PTR across views (and no upstream here: REFUSED).
    let m = udp(front, "10.0.88.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let m = udp(back, "10.0.88.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.answers.len(), 1);
    served.stop().await;
}

#[tokio::test]
async fn also_adds_another_networks_names_to_a_view() {
    let served = Served::start(RECORDS).await;
    let ops = served.addr("ops");
    assert_eq!(
        ips(&udp(ops, "mon.shoal.", RecordType::A).await),
        ["10.99.0.10"]
    );
    assert_eq!(
        ips(&udp(ops, "db.shoal.", RecordType::A).await),
        ["10.88.0.10"]
    );
    assert_eq!(
        ips(&udp(ops, "db.1.back.shoal.", RecordType::A).await),
        ["10.88.0.11"]
    );
    let m = udp(ops, "web.shoal.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // ...and back does not see ops.
    let m = udp(served.addr("back"), "mon.shoal.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    served.stop().await;
}

#[tokio::test]
async fn an_update_swaps_the_records_for_the_next_query() {
    let served = Served::start(RECORDS).await;
    let front = served.addr("front");
    let mut records = shoal_dns::Config::parse(RECORDS, std::path::Path::new("t.toml"))
        .unwrap()
        .records;
    records.networks[0].services[0].vip = Some("10.77.0.201".parse().unwrap());
    served.dns.update(&records).unwrap();
    assert_eq!(
        ips(&udp(front, "web.shoal.", RecordType::A).await),
        ["10.77.0.201"]
    );
    // A bad update leaves the current records in place.
    records.networks[0].services[0].vip = None;
    assert!(served.dns.update(&records).is_err());
    assert_eq!(
        ips(&udp(front, "web.shoal.", RecordType::A).await),
        ["10.77.0.201"]
    );
    served.stop().await;
}
