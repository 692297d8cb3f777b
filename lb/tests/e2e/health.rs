//! Health through the real proxy: active checks, passive ejection, backups.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use crate::support::*;

/// A client that connects again and again until stopped, counting
/// connections that got no backend.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(lb: std::net::SocketAddr) -> Load {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, f, s) = (ok.clone(), failed.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Relaxed) {
                match connect(lb).await {
                    Ok(_) => o.fetch_add(1, Relaxed),
                    Err(_) => f.fetch_add(1, Relaxed),
                };
                sleep(Duration::from_millis(2)).await;
            }
        });
        Load {
            ok,
            failed,
            stop,
            task,
        }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Relaxed);
        self.task.await.unwrap();
        (self.ok.load(Relaxed), self.failed.load(Relaxed))
    }
}

async fn total_of(lb: &Lb, addr: std::net::SocketAddr) -> u64 {
    let v = lb.backends().await;
    v[0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == addr.to_string())
        .unwrap()["total"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn killed_backend_gets_nothing_after_interval_times_fall_and_no_client_fails() {
    let mut bs = backends(3).await;
    let mut args = vec![
        "--policy",
        "round-robin",
        "--health",
        "tcp",
        "--health-interval",
        "200ms",
        "--health-jitter",
        "20ms",
        "--rise",
        "1",
        "--fall",
        "2",
        // Passive ejection off: this test is about the active checks.
        "--eject-after",
        "0",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    args.extend(backend_flags(&bs, &[1, 1, 1]));
    let lb = Lb::flags(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let load = Load::start(lb.listen);
    sleep(Duration::from_millis(300)).await;
    let dead = bs[1].addr;
    bs[1].kill();
    let killed_at = Instant::now();
    // Poll until the checks call it down.
    let mut down_after = None;
    while killed_at.elapsed() < Duration::from_secs(5) {
        if lb.health_of(dead).await == "down" {
            down_after = Some(killed_at.elapsed());
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    let down_after = down_after.expect("never marked down");
    // interval x fall = 400 ms, plus at most two jitters (40 ms); the rest
    // is slack for a loaded machine, still well under a third check.
    assert!(
        down_after <= Duration::from_millis(400 + 40 + 300),
        "down after {down_after:?}"
    );
    let attempts = total_of(&lb, dead).await;
    sleep(Duration::from_millis(800)).await;
    assert_eq!(
        total_of(&lb, dead).await,
        attempts,
        "connections still sent to the dead backend"
    );
    let (ok, failed) = load.stop().await;
    assert_eq!(failed, 0, "client connections failed");
    assert!(ok > 100, "only {ok} connections made");
}

#[tokio::test]
async fn a_restarted_backend_rises_back_into_rotation() {
    let mut bs = backends(2).await;
    let mut args = vec![
        "--health",
        "tcp",
        "--health-interval",
        "100ms",
        "--rise",
        "2",
        "--fall",
        "1",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    args.extend(backend_flags(&bs, &[1, 1]));
    let lb = Lb::flags(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let addr = bs[1].addr;
    bs[1].kill();
    lb.wait_health(addr, "down", Duration::from_secs(3)).await;
    assert!(sequence(lb.listen, 4).await.iter().all(|b| b == "b0"));
    let _back = TestBackend::start_on("b1", addr).await;
    lb.wait_health(addr, "up", Duration::from_secs(3)).await;
    assert!(sequence(lb.listen, 4).await.iter().any(|b| b == "b1"));
}

#[tokio::test]
async fn consecutive_connect_failures_eject_and_retries_hide_them() {
    let mut bs = backends(3).await;
    let mut args = vec!["--eject-after", "2", "--ejection-time", "30s"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    args.extend(backend_flags(&bs, &[1, 1, 1]));
    let lb = Lb::flags(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let dead = bs[2].addr;
    bs[2].kill();
    // No active checks: only failed connects tell the balancer.
    let got = sequence(lb.listen, 12).await;
    assert!(got.iter().all(|b| b != "b2"));
    assert_eq!(lb.health_of(dead).await, "ejected");
    // Two failed attempts ejected it; no more are made.
    assert_eq!(total_of(&lb, dead).await, 2);
    let metrics = http_get(lb.admin, "/metrics").await.1;
    assert!(
        metrics.contains(&format!(
            "shoal_lb_backend_connect_failures_total{{listener=\"{}\",backend=\"{dead}\"}} 2",
            lb.listen
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn backup_serves_only_while_no_primary_is_up() {
    let mut bs = backends(2).await;
    let args = [
        "--health".to_string(),
        "tcp".into(),
        "--health-interval".into(),
        "100ms".into(),
        "--rise".into(),
        "1".into(),
        "--fall".into(),
        "1".into(),
        "--backend".into(),
        format!("{}", bs[0].addr),
        "--backend".into(),
        format!("{},backup", bs[1].addr),
    ];
    let lb = Lb::flags(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(sequence(lb.listen, 5).await.iter().all(|b| b == "b0"));
    let primary = bs[0].addr;
    bs[0].kill();
    lb.wait_health(primary, "down", Duration::from_secs(3))
        .await;
    assert!(sequence(lb.listen, 5).await.iter().all(|b| b == "b1"));
    let _back = TestBackend::start_on("b0", primary).await;
    lb.wait_health(primary, "up", Duration::from_secs(3)).await;
    assert!(sequence(lb.listen, 5).await.iter().all(|b| b == "b0"));
}
