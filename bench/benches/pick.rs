//! The cost of one pick per policy at 3, 100 and 10 000 backends.
//!
//! Run: `cargo bench -p shoal-bench --bench pick`. Each pick goes through
//! the pool (policy snapshot load + the algorithm), with a varying key, and
//! the picked connection is opened and closed so load-aware policies see
//! real counters move.

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use shoal_lb::hash::mix;
use shoal_lb::{Backend, PolicyKind, Pool, PoolConfig};

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 80));
            Backend::new(addr).with_weight(1 + (i % 3) as u32)
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    for policy in PolicyKind::ALL {
        for n in [3usize, 100, 10_000] {
            let pool = Pool::new(PoolConfig::new(backends(n), policy)).expect("valid pool");
            let mut k = 0u64;
            group.bench_with_input(BenchmarkId::new(policy.name(), n), &n, |b, _| {
                b.iter(|| {
                    k = k.wrapping_add(1);
                    let ep = pool.pick(mix(k), &[]).expect("a candidate");
                    drop(ep.open());
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
