//! Cluster operations on the store (being written).
