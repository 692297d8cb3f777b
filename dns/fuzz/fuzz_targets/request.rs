//! Fuzz the request path: arbitrary bytes as a UDP and a TCP request to a
//! view with services, tasks, SRV and PTR names (no upstreams, so nothing
//! leaves the process). The same path runs under `cargo test` as the
//! proptests in `dns/tests/it/malformed.rs`.
//!
//! Run: `cd dns/fuzz && cargo +nightly fuzz run request -- -max_total_time=60`

#![no_main]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;

use hickory_server::net::xfer::Protocol;
use libfuzzer_sys::fuzz_target;
use shoal_dns::{wire, Config, Dns, ViewHandler};

const RECORDS: &str = r#"
[[network]]
name = "front"
[[network.service]]
name = "web"
vip = "10.77.0.200"
ports = [{ name = "http", port = 80 }]
tasks = [
  { name = "web.1", ip = "10.77.0.11" },
  { name = "web.2", ip = "fd00::12" },
  { name = "web.3", ip = "10.77.0.13", healthy = false },
]
[[network.service]]
name = "api"
ports = [{ name = "grpc", port = 9000, protocol = "udp" }]
tasks = [{ name = "api.1", ip = "10.77.1.1" }, { name = "api.2", ip = "10.77.1.2" }]
"#;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    handler: ViewHandler,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = Config::parse(RECORDS, Path::new("fuzz.toml")).expect("fixture is valid");
        let dns = Dns::new(config.snapshot().expect("fixture builds"));
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            handler: dns.handler("front"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let src: SocketAddr = ([127, 0, 0, 1], 5000).into();
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        let reply = f
            .runtime
            .block_on(wire::respond(&f.handler, data, src, protocol));
        if let Some(reply) = reply {
            assert!(reply.len() >= 12, "a reply has a header");
            if protocol == Protocol::Udp {
                assert!(reply.len() <= 1232, "UDP replies fit");
            }
            assert_eq!(reply[..2], data[..2], "the reply carries the ID");
        } else if data.len() >= 12 {
            assert!(data[2] & 0x80 != 0, "every query gets a reply");
        }
    }
});
