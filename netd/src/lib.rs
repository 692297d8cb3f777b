//! shoal-netd: the node agent.
//!
//! netd joins the cluster store (embedded or etcd) to the datapath
//! (`shoal-overlay`), service DNS (`shoal-dns`) and balancing (`shoal-lb`)
//! through a level-triggered reconcile loop. It is the only crate that
//! knows the cluster model. The `netd` binary ([`cli`]) runs it as `netd
//! agent` and talks to it as a Docker-like client.
//!
//! # Layout
//! - [`agent`]: the node's loop: lease, follow the store, reconcile.
//! - [`api`]: the agent's HTTP/JSON API (unix socket; TCP with a token) and its client.
//! - [`compose`]: compose files turned into network and service specs, with warnings for what netd ignores.
//! - [`container`]: container namespaces, entering them, and watching and stopping their processes.
//! - [`cli`]: the `netd` command: `netd agent` and the client subcommands.
//! - [`alloc`]: VNIs and VIPs, allocated cluster-wide by compare-and-swap.
//! - [`follow`]: a snapshot kept current from the store (read, watch,
//!   resync on compaction or a broken watch).
//! - [`handover`]: a graceful restart: the listening sockets passed to a new agent, the old one drained.
//! - [`health`]: checks of this node's replicas, transitions written to the store.
//! - [`ipam`]: address blocks per node, claimed by compare-and-swap.
//! - [`liveness`]: the node's lease, renewed, replaced and re-asserted.
//! - [`model`]: networks, services, nodes, endpoints, and snapshots of them.
//! - [`tasks`]: this node's tasks: namespace, address, endpoint, process, drain.
//! - [`translate`]: a snapshot turned into the overlay's desired state, the
//!   DNS record set and the balancer's listeners, for one node.
//! - [`netns_sockets`]: balancer sockets made inside a sandbox namespace.
//! - [`ops`]: cluster operations (networks, services, stacks) with all-or-nothing validation.
//! - [`node`]: one node's reconcile: overlay, then DNS, then the balancer.
//! - [`scheduler`]: replicas netd runs itself, one node per slot, claimed by CAS.
//! - [`spec`]: what users ask for (network and service specs, updates, short forms).
//! - [`store`]: the cluster store contract and its two backends, embedded
//!   ([`store::embedded`]) and etcd ([`store::etcd`]).

pub mod agent;
pub mod alloc;
pub mod api;
pub mod cli;
pub mod compose;
pub mod container;
pub mod follow;
pub mod handover;
pub mod health;
pub mod ipam;
pub mod liveness;
pub mod model;
pub mod netns_sockets;
pub mod node;
pub mod ops;
pub mod scheduler;
pub mod spec;
pub mod store;
pub mod tasks;
pub mod translate;
