//! The `shoal-dns` config file (TOML): parsing, checking, and turning it
//! into a [`RecordSet`], [`Forwarding`] settings and listen addresses.
//! Every key is documented in `dns/README.md`.
//!
//! Errors name the file, the line and the field, on one line.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use crate::error::{ConfigError, RecordError};
use crate::forward::{Forwarding, DEFAULT_CACHE_SIZE};
use crate::records::{self, EndpointMode, Protocol, RecordSet};
use crate::snapshot::Snapshot;

/// A checked config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The records to serve.
    pub records: RecordSet,
    /// Forwarding settings.
    pub forwarding: Forwarding,
    /// For each network (in file order), its listen addresses.
    pub listen: Vec<(String, Vec<SocketAddr>)>,
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks `text`, naming `path` in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::parse_with_snapshot(text, path).map(|(config, _)| config)
    }

    /// Reads and checks the file at `path`, and returns the snapshot built
    /// while checking it (building is the check: this saves a second one).
    pub fn load_with_snapshot(path: &Path) -> Result<(Self, Snapshot), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_with_snapshot(&text, path)
    }

    fn parse_with_snapshot(text: &str, path: &Path) -> Result<(Self, Snapshot), ConfigError> {
        let invalid = |line, field: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            field,
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| {
            let start = e.span().map(|s| s.start);
            let line = start.map(|s| line_of(text, s));
            let field = start.and_then(|s| key_before(text, s)).unwrap_or_default();
            let message = e.message().replace('\n', " ");
            invalid(line, field, message)
        })?;
        let config = file.into_config();
        // Check the records now, so a bad file is refused before serving.
        let snapshot =
            Snapshot::build(&config.records, config.forwarding.clone()).map_err(|e| {
                let line = record_error_line(text, &e, &config_spans(text));
                invalid(line, e.location.to_string(), e.problem.to_string())
            })?;
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, (_, addrs)) in config.listen.iter().enumerate() {
            for addr in addrs {
                if let Some(j) = seen.insert(*addr, i) {
                    if addr.port() != 0 {
                        return Err(invalid(
                            find_line(text, &addr.to_string()),
                            format!("network[{i}].listen"),
                            format!("{addr} is already a listen address of network[{j}]"),
                        ));
                    }
                }
            }
        }
        Ok((config, snapshot))
    }

    /// The snapshot this config describes.
    pub fn snapshot(&self) -> Result<Snapshot, RecordError> {
        Snapshot::build(&self.records, self.forwarding.clone())
    }
}

/// The spans of the network and service tables, for error lines.
struct Spans {
    networks: Vec<(usize, Vec<usize>)>,
}

fn config_spans(text: &str) -> Spans {
    let file: Result<File, _> = toml::from_str(text);
    let networks = file
        .map(|f| {
            f.network
                .iter()
                .map(|n| {
                    let services = n.get_ref().service.iter().map(|s| s.span().start).collect();
                    (n.span().start, services)
                })
                .collect()
        })
        .unwrap_or_default();
    Spans { networks }
}

fn record_error_line(text: &str, e: &RecordError, spans: &Spans) -> Option<usize> {
    let at = match (e.location.network, e.location.service) {
        (Some(n), Some(s)) => spans.networks.get(n)?.1.get(s).copied(),
        (Some(n), None) => spans.networks.get(n).map(|n| n.0),
        _ => return find_key_line(text, &e.location.field),
    }?;
    Some(line_of(text, at))
}

/// The 1-based line holding byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key whose value starts near `offset`: the word before the last `=`
/// on that line before `offset` (good enough for a message).
fn key_before(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let before = text.get(line_start..offset)?;
    let eq = before.rfind('=')?;
    let key = before[..eq]
        .trim_end()
        .rsplit(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .next()?;
    (!key.is_empty()).then(|| key.to_string())
}

fn find_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

fn find_line(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

// ---- the file's shape ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default = "default_domain")]
    domain: String,
    #[serde(default = "default_ttl")]
    ttl: u32,
    #[serde(default)]
    upstreams: Vec<Addr<53>>,
    #[serde(default = "default_timeout_ms")]
    upstream_timeout_ms: u64,
    #[serde(default = "default_cache_size")]
    cache_size: usize,
    #[serde(default)]
    network: Vec<Spanned<NetworkFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    name: String,
    #[serde(default)]
    listen: Vec<Addr<53>>,
    #[serde(default)]
    also: Vec<String>,
    #[serde(default)]
    service: Vec<Spanned<ServiceFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    #[serde(default)]
    vip: Option<IpAddr>,
    #[serde(default)]
    endpoint_mode: Option<ModeFile>,
    #[serde(default)]
    ports: Vec<PortFile>,
    #[serde(default)]
    tasks: Vec<TaskFile>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ModeFile {
    Vip,
    Dnsrr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortFile {
    name: String,
    port: u16,
    #[serde(default)]
    protocol: ProtocolFile,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ProtocolFile {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    name: String,
    ip: IpAddr,
    #[serde(default = "default_true")]
    healthy: bool,
}

fn default_domain() -> String {
    records::DEFAULT_DOMAIN.to_string()
}
fn default_ttl() -> u32 {
    records::DEFAULT_TTL
}
fn default_timeout_ms() -> u64 {
    crate::forward::DEFAULT_UPSTREAM_TIMEOUT.as_millis() as u64
}
fn default_cache_size() -> usize {
    DEFAULT_CACHE_SIZE
}
fn default_true() -> bool {
    true
}

/// A socket address written `IP:PORT`, `[IPv6]:PORT` or a bare IP (port
/// `DEFAULT_PORT`).
struct Addr<const DEFAULT_PORT: u16>(SocketAddr);

impl<'de, const P: u16> Deserialize<'de> for Addr<P> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<const P: u16>;
        impl<const P: u16> de::Visitor<'_> for Visit<P> {
            type Value = Addr<P>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an address like \"127.0.0.1:{P}\" or \"127.0.0.1\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Addr<P>, E> {
                if let Ok(addr) = s.parse::<SocketAddr>() {
                    return Ok(Addr(addr));
                }
                s.parse::<IpAddr>()
                    .map(|ip| Addr(SocketAddr::new(ip, P)))
                    .map_err(|_| {
                        E::custom(format!("invalid address {s:?}, expected IP:PORT or IP"))
                    })
            }
        }
        d.deserialize_str(Visit::<P>)
    }
}

impl File {
    fn into_config(self) -> Config {
        let mut networks = Vec::with_capacity(self.network.len());
        let mut listen = Vec::with_capacity(self.network.len());
        for net in self.network {
            let net = net.into_inner();
            listen.push((net.name.clone(), net.listen.iter().map(|a| a.0).collect()));
            networks.push(records::Network {
                name: net.name,
                also: net.also,
                services: net
                    .service
                    .into_iter()
                    .map(|s| s.into_inner().into_service())
                    .collect(),
            });
        }
        Config {
            records: RecordSet {
                domain: self.domain,
                ttl: self.ttl,
                networks,
            },
            forwarding: Forwarding {
                upstreams: self.upstreams.iter().map(|a| a.0).collect(),
                timeout: Duration::from_millis(self.upstream_timeout_ms),
                cache_size: self.cache_size,
            },
            listen,
        }
    }
}

impl ServiceFile {
    fn into_service(self) -> records::Service {
        let endpoint_mode = match (self.endpoint_mode, self.vip) {
            (Some(ModeFile::Vip), _) | (None, Some(_)) => EndpointMode::Vip,
            (Some(ModeFile::Dnsrr), _) | (None, None) => EndpointMode::Dnsrr,
        };
        records::Service {
            name: self.name,
            vip: self.vip,
            endpoint_mode,
            ports: self
                .ports
                .into_iter()
                .map(|p| records::Port {
                    name: p.name,
                    port: p.port,
                    protocol: match p.protocol {
                        ProtocolFile::Tcp => Protocol::Tcp,
                        ProtocolFile::Udp => Protocol::Udp,
                        ProtocolFile::Sctp => Protocol::Sctp,
                    },
                })
                .collect(),
            tasks: self
                .tasks
                .into_iter()
                .map(|t| records::Task {
                    name: t.name,
                    ip: t.ip,
                    healthy: t.healthy,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("t.toml"))
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let c = parse("[[network]]\nname = \"n\"\n[[network.service]]\nname = \"s\"\n").unwrap();
        assert_eq!(c.records.domain, "shoal");
        assert_eq!(c.records.ttl, 5);
        assert_eq!(c.forwarding, Forwarding::default());
        let s = &c.records.networks[0].services[0];
        assert_eq!(s.endpoint_mode, EndpointMode::Dnsrr, "no vip: dnsrr");
        assert!(c.listen[0].1.is_empty());
    }

    #[test]
    fn endpoint_mode_follows_the_vip_unless_given() {
        let c = parse(
            "[[network]]\nname = \"n\"\n[[network.service]]\nname = \"s\"\nvip = \"10.0.0.1\"\n\
             ports = [{ name = \"dns\", port = 53, protocol = \"udp\" }]\n\
             tasks = [{ name = \"s.1\", ip = \"fd00::1\", healthy = false }]\n",
        )
        .unwrap();
        let s = &c.records.networks[0].services[0];
        assert_eq!(s.endpoint_mode, EndpointMode::Vip);
        assert_eq!(s.ports[0].protocol, Protocol::Udp);
        assert!(!s.tasks[0].healthy);
    }

    #[test]
    fn addresses_take_a_default_port() {
        let c = parse(
            "upstreams = [\"127.0.0.1\", \"[::1]:5300\"]\nupstream_timeout_ms = 250\ncache_size = 0\n\
             [[network]]\nname = \"n\"\nlisten = [\"127.0.0.1\", \"[::1]:0\"]\n",
        )
        .unwrap();
        assert_eq!(c.forwarding.upstreams[0], "127.0.0.1:53".parse().unwrap());
        assert_eq!(c.forwarding.upstreams[1], "[::1]:5300".parse().unwrap());
        assert_eq!(c.forwarding.timeout, Duration::from_millis(250));
        assert_eq!(c.forwarding.cache_size, 0);
        assert_eq!(c.listen[0].1[0], "127.0.0.1:53".parse().unwrap());
    }

    #[test]
    fn errors_are_one_line_with_file_line_and_field() {
        let err = parse("ttl = 5\n[[network]]\nname = \"n\"\nlisten = [\"x:1\"]\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("t.toml:4: listen: "), "{text}");
        assert!(!text.contains('\n'));

        let err = parse("[[network]]\nname = \"n\"\n[[network]]\nname = \"n\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.toml:3: network[1].name: duplicate network name \"n\""
        );

        let text = "[[network]]\nname = \"a\"\nlisten = [\"127.0.0.1:53\"]\n\
                    [[network]]\nname = \"b\"\nlisten = [\"127.0.0.1:53\"]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("network[1].listen"), "{err}");

        let err = parse("ttl = 3000000000\n").unwrap_err().to_string();
        assert_eq!(err, "t.toml:1: ttl: ttl 3000000000 is above 2147483647");
    }
}
