//! shoal-tests: shared test support and end-to-end suites.
//!
//! Test hosts as network namespaces on an underlay bridge, with guards that
//! remove everything on drop, land here with the overlay and cluster issues.
//! Suites that need only loopback live next to the crate they test (for
//! example `lb/tests/`), where Cargo can hand them the crate's binaries.
//!
//! # Layout
//! Nothing yet.
