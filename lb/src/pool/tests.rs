//! The pool's candidate rules and state handling.

use std::time::Duration;

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(backends: &[Backend]) -> PoolConfig {
    PoolConfig::new(backends.to_vec(), PolicyKind::RoundRobin)
}

fn ports(v: &[Arc<Endpoint>]) -> Vec<u16> {
    v.iter().map(|e| e.addr().port()).collect()
}

#[test]
fn backups_stand_in_only_while_no_primary_is_available() {
    let pool = Pool::new(config(&[
        Backend::new(addr(1)),
        Backend::new(addr(2)).as_backup(),
    ]))
    .unwrap();
    assert_eq!(ports(&pool.candidates()), [1]);
    pool.set_checked(&pool.endpoints()[0], false);
    assert_eq!(ports(&pool.candidates()), [2]);
    pool.set_checked(&pool.endpoints()[0], true);
    assert_eq!(ports(&pool.candidates()), [1]);
}

#[test]
fn weight_zero_drains_and_all_zero_means_no_new_connections() {
    let pool = Pool::new(config(&[
        Backend::new(addr(1)).with_weight(0),
        Backend::new(addr(2)),
    ]))
    .unwrap();
    assert_eq!(ports(&pool.candidates()), [2]);
    assert_eq!(pool.health_of(&pool.endpoints()[0]), HealthState::Draining);
    pool.update(config(&[Backend::new(addr(1)).with_weight(0)]))
        .unwrap();
    assert!(pool.pick(0, &[]).is_none());
}

#[test]
fn below_the_panic_threshold_every_primary_takes_traffic() {
    let mut c = config(&(1..=4).map(|p| Backend::new(addr(p))).collect::<Vec<_>>());
    c.panic_threshold = 50;
    let pool = Pool::new(c).unwrap();
    let eps = pool.endpoints();
    pool.set_checked(&eps[0], false);
    // 3 of 4 healthy: 75 % is above 50 %.
    assert_eq!(ports(&pool.candidates()), [2, 3, 4]);
    assert!(!pool.is_panicking());
    pool.set_checked(&eps[1], false);
    // 2 of 4: exactly 50 %, not below.
    assert_eq!(ports(&pool.candidates()), [3, 4]);
    pool.set_checked(&eps[2], false);
    // 1 of 4: panic, all four.
    assert_eq!(ports(&pool.candidates()), [1, 2, 3, 4]);
    assert!(pool.is_panicking());
}

#[test]
fn without_a_threshold_an_all_down_pool_has_no_candidates() {
    let pool = Pool::new(config(&[Backend::new(addr(1))])).unwrap();
    pool.set_checked(&pool.endpoints()[0], false);
    assert!(pool.candidates().is_empty());
    assert!(!pool.is_panicking());
}

#[test]
fn a_bad_update_changes_nothing() {
    let pool = Pool::new(config(&[Backend::new(addr(1))])).unwrap();
    let err = pool
        .update(config(&[Backend::new(addr(2)), Backend::new(addr(2))]))
        .unwrap_err();
    assert_eq!(err, PoolError::DuplicateBackend(addr(2)));
    assert_eq!(ports(&pool.endpoints()), [1]);
}

#[tokio::test(start_paused = true)]
async fn state_survives_updates_and_new_backends_ramp_up() {
    let mut c = config(&[Backend::new(addr(1))]);
    c.policy = PolicyKind::Weighted;
    c.options.slow_start = Duration::from_secs(10);
    let pool = Pool::new(c.clone()).unwrap();
    let first = Arc::clone(&pool.endpoints()[0]);
    // At start nothing ramps: there was no traffic to protect it from.
    assert!(!first.in_slow_start(Instant::now(), Duration::from_secs(10)));
    let guard = first.open();
    c.backends = vec![Backend::new(addr(1)).with_weight(3), Backend::new(addr(2))];
    pool.update(c).unwrap();
    let eps = pool.endpoints();
    assert!(Arc::ptr_eq(&eps[0], &first), "endpoint replaced on update");
    assert_eq!((eps[0].active(), eps[0].weight()), (1, 3));
    assert!(eps[1].in_slow_start(Instant::now(), Duration::from_secs(10)));
    drop(guard);
    assert_eq!(first.active(), 0);
}

#[tokio::test(start_paused = true)]
async fn ejection_ends_on_time_and_the_backend_ramps_back() {
    let mut c = config(&[Backend::new(addr(1)), Backend::new(addr(2))]);
    c.outlier.consecutive_failures = 2;
    c.outlier.base_ejection = Duration::from_secs(5);
    c.options.slow_start = Duration::from_secs(10);
    let pool = Pool::new(c).unwrap();
    let ep = Arc::clone(&pool.endpoints()[0]);
    pool.report_failure(&ep);
    assert_eq!(ports(&pool.candidates()), [1, 2]);
    pool.report_failure(&ep);
    assert_eq!(ports(&pool.candidates()), [2]);
    assert_eq!(pool.health_of(&ep), HealthState::Ejected);
    // The second backend may not be ejected too: 2 of 2 is over 50 %.
    let other = Arc::clone(&pool.endpoints()[1]);
    pool.report_failure(&other);
    pool.report_failure(&other);
    assert_eq!(ports(&pool.candidates()), [2]);
    tokio::time::sleep(Duration::from_millis(5001)).await;
    // The pool's own timer brought it back, ramping.
    assert_eq!(ports(&pool.candidates()), [1, 2]);
    assert_eq!(pool.health_of(&ep), HealthState::Up);
    assert!(ep.in_slow_start(Instant::now(), Duration::from_secs(10)));
}

#[test]
fn a_success_resets_the_failure_streak() {
    let mut c = config(&[Backend::new(addr(1)), Backend::new(addr(2))]);
    c.outlier.consecutive_failures = 2;
    let pool = Pool::new(c).unwrap();
    let ep = Arc::clone(&pool.endpoints()[0]);
    pool.report_failure(&ep);
    pool.report_success(&ep, Duration::from_millis(1));
    pool.report_failure(&ep);
    assert_eq!(ports(&pool.candidates()), [1, 2]);
    assert_eq!(ep.connect_failures(), 2);
}
