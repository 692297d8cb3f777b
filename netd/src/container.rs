//! Container namespaces and their processes (being written).
