//! Answers that do not fit a UDP message are truncated (TC) and come whole
//! over TCP; clients fall back by themselves.

use hickory_proto::rr::RecordType;

use crate::support::*;

#[tokio::test]
async fn too_big_for_udp_sets_tc_and_tcp_has_everything() {
    let served = Served::start(&big_service(100)).await;
    let addr = served.addr("front");

    // No EDNS: 512 bytes at most, TC set, some answers.
    let m = udp(addr, "tasks.big.shoal.", RecordType::A).await;
    assert!(m.metadata.truncation, "TC expected");
    assert!(m.to_vec().unwrap().len() <= 512);

    // EDNS 1232: more fits, still not 100 A records.
    let m = udp_message(
        addr,
        &query_message("big.shoal.", RecordType::A, Some(4096)),
    )
    .await;
    assert!(m.metadata.truncation);
    assert!(m.to_vec().unwrap().len() <= 1232);

    // TCP: all 100.
    let m = tcp(addr, "tasks.big.shoal.", RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);

    // A real resolver retries over TCP on its own.
    let resolver = resolver(addr);
    let lookup = within(resolver.lookup("tasks.big.shoal.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(lookup.answers().len(), 100);
    served.stop().await;
}

#[tokio::test]
async fn small_answers_are_not_truncated() {
    let served = Served::start(&big_service(5)).await;
    let m = udp(served.addr("front"), "tasks.big.shoal.", RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 5);
    served.stop().await;
}
