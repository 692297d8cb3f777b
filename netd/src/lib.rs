//! shoal-netd: the node agent.
//!
//! netd joins the cluster store (embedded or etcd) to the datapath
//! (`shoal-overlay`), service DNS (`shoal-dns`) and balancing (`shoal-lb`)
//! through a level-triggered reconcile loop. It is the only crate that
//! knows the cluster model. This issue is being built in steps; what exists
//! today is the store and cluster-wide allocation (VNIs, VIPs, address
//! blocks).
//!
//! # Layout
//! - [`agent`]: the node's loop: lease, follow the store, reconcile.
//! - [`alloc`]: VNIs and VIPs, allocated cluster-wide by compare-and-swap.
//! - [`follow`]: a snapshot kept current from the store (read, watch,
//!   resync on compaction or a broken watch).
//! - [`health`]: checks of this node's replicas, transitions written to the store.
//! - [`ipam`]: address blocks per node, claimed by compare-and-swap.
//! - [`liveness`]: the node's lease, renewed, replaced and re-asserted.
//! - [`model`]: networks, services, nodes, endpoints, and snapshots of them.
//! - [`translate`]: a snapshot turned into the overlay's desired state, the
//!   DNS record set and the balancer's listeners, for one node.
//! - [`netns_sockets`]: balancer sockets made inside a sandbox namespace.
//! - [`node`]: one node's reconcile: overlay, then DNS, then the balancer.
//! - [`spec`]: what users ask for (network and service specs, updates, short forms).
//! - [`store`]: the cluster store contract and its two backends, embedded
//!   ([`store::memory`]) and etcd ([`store::etcd`]).

pub mod agent;
pub mod alloc;
pub mod compose;
pub mod container;
pub mod follow;
pub mod health;
pub mod ipam;
pub mod liveness;
pub mod model;
pub mod netns_sockets;
pub mod node;
pub mod ops;
pub mod spec;
pub mod store;
pub mod translate;
