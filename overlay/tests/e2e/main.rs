//! End-to-end suites for the `shoal-overlay` binary: nodes and containers
//! are namespaces built by `shoal-tests`' [`Lab`](shoal_tests::Lab), which
//! removes them on drop, panic included. Root only (namespaces need it).

mod cli;
mod datapath;
mod encrypted;
mod mesh;
mod reconcile;
mod support;
