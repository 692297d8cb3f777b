//! shoal-netd: the node agent.
//!
//! netd will join the cluster store (embedded or etcd) to the datapath
//! (`shoal-overlay`), service DNS (`shoal-dns`) and balancing (`shoal-lb`)
//! through a level-triggered reconcile loop (see issue "netd: the node
//! agent"). It is the only crate that knows the cluster model.
//!
//! # Layout
//! Nothing yet: the agent lands with its own issue.
