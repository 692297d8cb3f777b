//! The cluster scenarios of issue #7, each on a fresh three-node cluster
//! (three etcd members on the underlay, a `netd agent` per node, lease TTL
//! 3 s) built by [`shoal_tests::Cluster`]. Each prints its numbers (run
//! with `--nocapture` to see them) and asserts behaviour; the only timing
//! asserted is a bound the issue states (a node's replicas leave within the
//! lease TTL + 1 s).
//!
//! The scenarios run one at a time (see [`common::serial`]): each cluster
//! is a dozen processes, and two at once on a small machine would measure
//! CPU contention rather than shoal.
//!
//! # Layout
//! - [`common`]: starting a cluster, the `web` service, reading tasks.
//! - [`deploy`]: 1. names, `tasks.` names, the VIP and the published port on every node.
//! - [`node_loss`]: 4. a node's link cut: its replicas leave everyone's DNS and balancing.
//! - [`etcd_leader`]: 5. the etcd leader killed: no request fails, changes resume.
//! - [`etcd_outage`]: 6. all of etcd down for 30 s: traffic flows, nothing is reassigned.
//! - [`partition`]: 8. one node partitioned (from peers and store): no split-brain allocation.
//! - [`partition_peers`]: 8, second variant: cut from peers, not from etcd: nothing allocated twice.
//! - [`http_web`]: `web` as the demo runs it (HTTP mode, keep-alive clients), for 2, 3 and 7.
//! - [`replica_crash`]: 2. a replica crashes under load: no request fails.
//! - [`rolling_update`]: 3. every replica replaced under load: no request fails.
//! - [`netd_restart`]: 7. an agent restarted under load: nothing fails, nothing changes.
//! - [`scale`]: 9. 200 services x 5 replicas: convergence, memory, answers still right.

mod common;
mod deploy;
mod etcd_leader;
mod etcd_outage;
mod http_web;
mod netd_restart;
mod node_loss;
mod partition;
mod partition_peers;
mod replica_crash;
mod rolling_update;
mod scale;
