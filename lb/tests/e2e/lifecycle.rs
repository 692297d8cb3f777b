//! Reload, drain on weight 0, and SIGTERM, through the real binary.

use std::time::Duration;

use crate::support::*;

fn config(bs: &[TestBackend], weights: &[u32], policy: &str) -> String {
    let list: Vec<String> = bs
        .iter()
        .zip(weights)
        .map(|(b, w)| format!("\"{}@{w}\"", b.addr))
        .collect();
    format!(
        "admin = \"{{admin}}\"\ndrain_timeout = \"5s\"\n\n[[listener]]\nname = \"web\"\nlisten = \"{{listen}}\"\npolicy = \"{policy}\"\nbackends = [{}]\n",
        list.join(", ")
    )
}

#[tokio::test]
async fn weight_zero_drains_and_reload_keeps_open_connections() {
    let bs = backends(3).await;
    let lb = Lb::file(&config(&bs[..2], &[1, 1], "round-robin")).await;
    let mut c0 = connect(lb.listen).await.unwrap();
    let mut c1 = connect(lb.listen).await.unwrap();
    assert_eq!((c0.backend.as_str(), c1.backend.as_str()), ("b0", "b1"));
    // Drain b1, add b2, switch policy: all in one reload.
    lb.reload(&config(&bs, &[1, 0, 1], "weighted")).await;
    assert!(lb.log().contains("configuration reloaded"), "{}", lb.log());
    let got = sequence(lb.listen, 10).await;
    assert!(got.iter().all(|b| b != "b1"), "{got:?}");
    assert!(got.iter().any(|b| b == "b2"), "{got:?}");
    assert_eq!(lb.health_of(bs[1].addr).await, "draining");
    // The open connections, drained one included, still work.
    assert_eq!(c1.echo(b"still here").await, b"still here");
    assert_eq!(c0.echo(b"me too").await, b"me too");
    let v = lb.backends().await;
    assert_eq!(v[0]["policy"], "weighted");
    assert_eq!(v[0]["backends"][1]["active"], 1);
}

#[tokio::test]
async fn a_bad_reload_changes_nothing() {
    let bs = backends(2).await;
    let lb = Lb::file(&config(&bs, &[1, 1], "round-robin")).await;
    lb.reload("[[listener]]\nname = \"web\"\nlisten = \"{listen}\"\nbackends = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n")
        .await;
    assert!(lb.log().contains("reload rejected"), "{}", lb.log());
    assert!(lb.log().contains("listed twice"), "{}", lb.log());
    assert_eq!(sequence(lb.listen, 4).await, ["b0", "b1", "b0", "b1"]);
}

#[tokio::test]
async fn sigterm_stops_accepting_and_drains_open_connections() {
    let bs = backends(1).await;
    let mut lb = Lb::file(&config(&bs, &[1], "round-robin")).await;
    let mut open = connect(lb.listen).await.unwrap();
    lb.signal("TERM");
    // New connections are refused once the listener closes...
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(lb.listen).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "still accepting after SIGTERM");
    // ...while the open one carries on, and the process waits for it.
    assert_eq!(open.echo(b"working").await, b"working");
    assert_eq!(lb.wait_exit(Duration::from_millis(300)).await, None);
    drop(open);
    assert_eq!(lb.wait_exit(Duration::from_secs(3)).await, Some(0));
}

#[tokio::test]
async fn sigterm_gives_up_on_stragglers_at_the_drain_deadline() {
    let bs = backends(1).await;
    let toml = config(&bs, &[1], "round-robin")
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"300ms\"");
    let mut lb = Lb::file(&toml).await;
    let _open = connect(lb.listen).await.unwrap();
    let t = std::time::Instant::now();
    lb.signal("TERM");
    assert_eq!(lb.wait_exit(Duration::from_secs(3)).await, Some(0));
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(lb.log().contains("drain deadline passed"), "{}", lb.log());
}
