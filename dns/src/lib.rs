//! shoal-dns: service DNS for a shoal network.
//!
//! This crate will serve a record snapshot (services, tasks, VIPs) through
//! hickory-server, swapping snapshots atomically so queries never wait on an
//! update (see issue "shoal-dns"). It knows nothing of the cluster.
//!
//! # Layout
//! Nothing yet: the DNS lands with its own issue.
