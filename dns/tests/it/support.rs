//! Shared fixtures: a served config, a wire client, a resolver.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use shoal_dns::{server, Config, Dns, DnsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The bound on any single test step.
pub const STEP: Duration = Duration::from_secs(5);

/// Two networks and a third that also sees the second. `front` holds the
/// issue's example plus a dnsrr service, an IPv6 task and a big service.
pub const RECORDS: &str = r#"
domain = "shoal"
ttl = 5

[[network]]
name = "front"
listen = ["127.0.0.1:0"]

[[network.service]]
name = "web"
vip = "10.77.0.200"
endpoint_mode = "vip"
ports = [{ name = "http", port = 80, protocol = "tcp" }]
tasks = [
  { name = "web.1", ip = "10.77.0.11", healthy = true },
  { name = "web.2", ip = "10.77.0.12", healthy = true },
  { name = "web.3", ip = "10.77.0.13", healthy = false },
]

[[network.service]]
name = "api"
endpoint_mode = "dnsrr"
ports = [{ name = "grpc", port = 9000 }]
tasks = [
  { name = "api.1", ip = "10.77.1.1" },
  { name = "api.2", ip = "10.77.1.2" },
  { name = "api.3", ip = "10.77.1.3" },
  { name = "api.4", ip = "10.77.1.4" },
  { name = "api.5", ip = "10.77.1.5" },
  { name = "api.6", ip = "10.77.1.6" },
  { name = "api.7", ip = "10.77.1.7", healthy = false },
  { name = "api.8", ip = "fd00:77::8" },
]

[[network]]
name = "back"
listen = ["127.0.0.1:0"]

[[network.service]]
name = "db"
vip = "10.88.0.10"
tasks = [{ name = "db.1", ip = "10.88.0.11" }]

[[network]]
name = "ops"
listen = ["127.0.0.1:0"]
also = ["back"]

[[network.service]]
name = "mon"
vip = "10.99.0.10"
"#;

/// `count` healthy tasks of a dnsrr service `big` on network `front`.
pub fn big_service(count: usize) -> String {
    let tasks: Vec<String> = (0..count)
        .map(|i| {
            format!(
                "{{ name = \"big.{i}\", ip = \"10.66.{}.{}\" }}",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    format!(
        "[[network]]\nname = \"front\"\nlisten = [\"127.0.0.1:0\"]\n\n[[network.service]]\nname = \"big\"\ntasks = [\n{}\n]\n",
        tasks.join(",\n")
    )
}

/// A config served in-process on ephemeral ports.
pub struct Served {
    pub dns: Dns,
    addrs: HashMap<String, SocketAddr>,
    servers: Vec<DnsServer>,
}

impl Served {
    /// Serves `toml` with `extra` prepended (top-level keys).
    pub async fn start(toml: &str) -> Self {
        let config = Config::parse(toml, Path::new("test.toml")).expect("test config is valid");
        let dns = Dns::new(config.snapshot().unwrap());
        let mut addrs = HashMap::new();
        let mut servers = Vec::new();
        for (network, listen) in &config.listen {
            for addr in listen {
                let (udp, tcp) = server::bind(*addr).await.unwrap();
                addrs.insert(network.clone(), udp.local_addr().unwrap());
                servers.push(dns.serve(network, vec![udp], vec![tcp]));
            }
        }
        Self {
            dns,
            addrs,
            servers,
        }
    }

    pub fn addr(&self, network: &str) -> SocketAddr {
        self.addrs[network]
    }

    pub async fn stop(self) {
        for s in self.servers {
            within(s.shutdown()).await.unwrap();
        }
    }
}

/// Runs `f`, failing the test if it takes longer than [`STEP`].
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(STEP, f).await.expect("step timed out")
}

/// A query message for `name`/`qtype`, with EDNS when `edns` is set.
pub fn query_message(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    // from_ascii keeps the case as written (from_str would fold it).
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

/// Sends raw bytes over UDP and returns the reply's bytes, or `None` if
/// none came within `wait`.
pub async fn udp_raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, addr).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// One query over UDP (no EDNS unless asked), the parsed reply.
pub async fn udp(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    udp_message(addr, &query_message(name, qtype, None)).await
}

pub async fn udp_message(addr: SocketAddr, query: &Message) -> Message {
    let bytes = udp_raw(addr, &query.to_vec().unwrap(), STEP)
        .await
        .expect("a UDP reply");
    let reply = Message::from_vec(&bytes).unwrap();
    assert_eq!(reply.metadata.id, query.metadata.id);
    reply
}

/// One query over TCP, the parsed reply.
pub async fn tcp(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let query = query_message(name, qtype, None);
    let bytes = query.to_vec().unwrap();
    within(async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await.unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut buf).await.unwrap();
        let reply = Message::from_vec(&buf).unwrap();
        assert_eq!(reply.metadata.id, query.metadata.id);
        reply
    })
    .await
}

/// hickory's resolver pointed at `addr` only, UDP then TCP, no cache, no
/// hosts file, no search list.
pub fn resolver(addr: SocketAddr) -> TokioResolver {
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for c in &mut ns.connections {
        c.port = addr.port();
    }
    let config = ResolverConfig::from_name_servers(vec![ns]);
    let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ndots = 0;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 1;
    builder.build().unwrap()
}

/// The addresses (A and AAAA) in an answer section, as strings.
pub fn ips(message: &Message) -> Vec<String> {
    record_ips(&message.answers)
}

/// The addresses (A and AAAA) among `records`, as strings, in order.
pub fn record_ips(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// `ips`, sorted.
pub fn sorted_ips(message: &Message) -> Vec<String> {
    let mut v = ips(message);
    v.sort();
    v
}
