//! shoal-bench: benchmarks for shoal.
//!
//! # Layout
//! - `benches/pick.rs`: criterion, the cost of one pick per policy at 3, 100
//!   and 10 000 backends.
//! - `compare-haproxy.sh`: iperf3 throughput and connection rate through
//!   shoal-lb and HAProxy, side by side (see `bench/README.md`).
