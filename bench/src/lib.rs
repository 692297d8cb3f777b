//! shoal-bench: benchmarks for shoal, and lbbench, the harness that compares
//! balancing policies on a workload shape you describe.
//!
//! lbbench starts simulated backends (real HTTP/1.1 servers on 127.0.0.1),
//! the real `shoal-lb` binary in front of them (L4 or L7) with one policy at
//! a time, and an open-loop load generator; it reports latency percentiles
//! measured from each request's intended send time, throughput, errors and
//! each backend's share. See `bench/README.md`, section "lbbench".
//!
//! # Layout
//! - `benches/pick.rs`: criterion, the cost of one pick per policy at 3, 100
//!   and 10 000 backends.
//! - `compare-haproxy.sh`: iperf3 throughput and connection rate through
//!   shoal-lb and HAProxy, side by side (see `bench/README.md`).
//! - `src/bin/lbbench.rs`: the lbbench binary: flags, then run, then write.
//! - [`scenario`]: scenario files (TOML) as plain data; errors name the
//!   field and the line.
//! - [`dist`]: drawing service times (fixed, exponential, log-normal,
//!   bimodal) from a seeded generator.
//! - [`backend`]: a simulated backend: concurrency limit with a FIFO queue,
//!   error rate, and a script (slow down, die, revive) over time.
//! - [`schedule`]: every request's intended send time (constant, stepped and
//!   burst rates; Poisson or uniform), fixed before the run from the seed.
//! - [`loadgen`]: the open-loop generator; keep-alive or a new connection
//!   per request.
//! - [`sample`]: one measured request.
//! - [`stats`]: percentiles, throughput, shares, imbalance, time windows.
//! - [`child`]: child processes killed on drop; free ports.
//! - [`proxy`]: starting shoal-lb, HAProxy or nginx for a policy.
//! - [`run`]: a scenario against every subject, rounds interleaved.
//! - [`report`]: the table, `summary.json` and `samples.csv`.
//! - [`plot`]: the SVG plots (CDF and tail, share over time, p99 over time).
//! - [`cli`]: lbbench's flags and how they pick the subjects.

#![forbid(unsafe_code)]

pub mod backend;
pub mod child;
pub mod cli;
pub mod dist;
pub mod loadgen;
pub mod plot;
pub mod proxy;
pub mod report;
pub mod run;
pub mod sample;
pub mod scenario;
pub mod schedule;
pub mod stats;
