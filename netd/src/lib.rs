//! shoal-netd: the node agent.
//!
//! netd joins the cluster store (embedded or etcd) to the datapath
//! (`shoal-overlay`), service DNS (`shoal-dns`) and balancing (`shoal-lb`)
//! through a level-triggered reconcile loop. It is the only crate that
//! knows the cluster model. This issue is being built in steps; what exists
//! today is the store.
//!
//! # Layout
//! - [`store`]: the cluster store contract and its two backends, embedded
//!   ([`store::memory`]) and etcd ([`store::etcd`]).

pub mod store;
