//! Tests of lbbench itself: the generator holds its rate, latency counts
//! from the intended send time, and a run through shoal-lb adds up.
//!
//! Everything listens on 127.0.0.1; every child process is killed on drop.

use std::time::Duration;

use shoal_bench::backend::SimBackend;
use shoal_bench::loadgen::{self, Target};
use shoal_bench::sample::Outcome;
use shoal_bench::scenario::{Action, Arrivals, BackendSpec, ConnectionMode, Dur, Load, Service};
use shoal_bench::schedule::schedule;
use shoal_bench::stats::{latencies_ms, quantile};
use tokio::time::Instant;

fn backend(name: &str, service: Duration, concurrency: usize) -> BackendSpec {
    BackendSpec {
        name: name.into(),
        weight: 1,
        service: Service::Fixed {
            value: Dur(service),
        },
        concurrency,
        error_rate: 0.0,
        events: vec![],
    }
}

fn load(rate: f64, connection: ConnectionMode) -> Load {
    Load {
        rate,
        steps: vec![],
        bursts: vec![],
        arrivals: Arrivals::Uniform,
        connection,
        timeout: Dur(Duration::from_secs(5)),
    }
}

fn target(addr: std::net::SocketAddr, connection: ConnectionMode) -> Target {
    Target {
        addr,
        connection,
        timeout: Duration::from_secs(5),
        backends: vec!["a".into()],
    }
}

/// Requests reach the backend at the scheduled rate even when each takes
/// 100 ms to answer: the generator never waits for an answer before sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generator_holds_its_rate_against_a_slow_backend() {
    for connection in [ConnectionMode::New, ConnectionMode::KeepAlive] {
        let b = SimBackend::start(&backend("a", Duration::from_millis(100), 1000), 1)
            .await
            .unwrap();
        let times = schedule(&load(200.0, connection), Duration::from_secs(2), 1);
        assert!((399..=400).contains(&times.len()), "{}", times.len());
        let t0 = Instant::now() + Duration::from_millis(20);
        let samples = loadgen::run(&target(b.addr(), connection), &times, t0).await;
        assert!(samples
            .iter()
            .all(|s| s.outcome == Outcome::Ok && s.backend == Some(0)));
        let arrivals = b.arrivals();
        assert_eq!(arrivals.len(), times.len(), "{connection:?}");
        // Per 250 ms window of wall time, 50 arrivals are due; allow jitter.
        for w in 0..8u32 {
            let from = t0 + Duration::from_millis(250) * w;
            let to = from + Duration::from_millis(250);
            let n = arrivals.iter().filter(|&&a| a >= from && a < to).count();
            assert!(
                (35..=65).contains(&n),
                "{connection:?} window {w}: {n} arrivals, want ~50"
            );
        }
        let last = *arrivals.last().unwrap() - t0;
        assert!(
            last < Duration::from_millis(2100),
            "{connection:?}: last arrival at {last:?}"
        );
    }
}

/// A backend that stalls for one second (the request due at 1.02 s, the
/// only one starting service between 1.005 s and 1.035 s, takes 1 s; the
/// rest queue behind it, concurrency 1): the ~50 requests due during the stall
/// all carry the wait, so p99 is near a second even though only one
/// request was slow to serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_backend_shows_in_the_percentiles() {
    let mut b = SimBackend::start(&backend("a", Duration::from_millis(1), 1), 1)
        .await
        .unwrap();
    let times = schedule(
        &load(50.0, ConnectionMode::KeepAlive),
        Duration::from_secs(4),
        1,
    );
    let t0 = Instant::now() + Duration::from_millis(20);
    b.script(
        &[
            shoal_bench::scenario::Event {
                at: Duration::from_millis(1005),
                action: Action::Slow(1000.0),
            },
            shoal_bench::scenario::Event {
                at: Duration::from_millis(1035),
                action: Action::Slow(1.0),
            },
        ],
        t0,
    );
    let samples = loadgen::run(&target(b.addr(), ConnectionMode::KeepAlive), &times, t0).await;
    assert!(samples.iter().all(|s| s.outcome == Outcome::Ok));
    let lat = latencies_ms(&samples);
    let (p50, p99) = (quantile(&lat, 0.5), quantile(&lat, 0.99));
    assert!(p50 < 50.0, "p50 {p50} ms");
    assert!(p99 > 700.0, "p99 {p99} ms: the stall is hidden");
    let charged = lat.iter().filter(|&&l| l > 100.0).count();
    assert!(charged >= 40, "only {charged} requests carry the stall");
}

/// When the generator itself is held up (its only thread blocked for
/// 400 ms), requests due meanwhile go out late and their latency includes
/// the delay: it is measured from the intended send time, not the actual.
#[tokio::test(flavor = "current_thread")]
async fn latency_counts_from_the_intended_send_time() {
    let b = SimBackend::start(&backend("a", Duration::from_millis(1), 100), 1)
        .await
        .unwrap();
    let times = schedule(
        &load(100.0, ConnectionMode::KeepAlive),
        Duration::from_secs(1),
        1,
    );
    let t0 = Instant::now() + Duration::from_millis(20);
    let blocker = tokio::spawn(async move {
        tokio::time::sleep_until(t0 + Duration::from_millis(300)).await;
        std::thread::sleep(Duration::from_millis(400));
    });
    let samples = loadgen::run(&target(b.addr(), ConnectionMode::KeepAlive), &times, t0).await;
    blocker.await.unwrap();
    for s in &samples {
        let due = s.intended;
        if due > Duration::from_millis(320) && due < Duration::from_millis(680) {
            let delay = Duration::from_millis(700) - due;
            assert!(
                s.latency + Duration::from_millis(20) >= delay,
                "request due at {due:?} shows {:?}, the generator held it ~{delay:?}",
                s.latency
            );
        }
    }
    let lat = latencies_ms(&samples);
    assert!(quantile(&lat, 0.99) > 300.0);
}
