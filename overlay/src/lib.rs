//! shoal-overlay: the kernel datapath of a shoal node.
//!
//! This crate will own network namespaces, links, VXLAN devices, static
//! FDB/ARP entries, routes and WireGuard, driven by a desired state (see
//! issue "shoal-overlay: the kernel datapath"). It knows nothing of the
//! cluster: `shoal-netd` hands it plain inputs.
//!
//! # Layout
//! Nothing yet: the datapath lands with its own issue.
