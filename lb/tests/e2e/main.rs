//! End-to-end tests of `shoal-lb` on loopback: the real binary, real
//! sockets, real backends. One test binary (the hickory habit); each module
//! is one concern.

mod admin;
mod cli;
mod distribution;
mod haproxy;
mod health;
mod http;
mod http_fast;
mod http_support;
mod lifecycle;
mod proxy_protocol;
mod sockets;
mod support;
mod tls;
