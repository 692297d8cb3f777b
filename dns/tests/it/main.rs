//! Integration tests of shoal-dns, built as one binary: real sockets on
//! 127.0.0.1 with ephemeral ports, real clients (hickory's resolver and a
//! plain wire client), and the built `shoal-dns` binary. Nothing leaves
//! loopback; every test is bounded in time.

mod binary;
mod forwarding;
mod malformed;
mod names;
mod semantics;
mod support;
mod truncation;
mod views;
