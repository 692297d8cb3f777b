//! The `shoal-lb` configuration: plain data, built from flags ([`crate::cli`])
//! or from a TOML file ([`Config::from_toml`]), validated before anything
//! runs. Errors name the field (and the line, for files).
//!
//! A file holds any number of listeners:
//!
//! ```toml
//! admin = "127.0.0.1:7001"     # optional admin listener
//! drain_timeout = "30s"        # SIGTERM waits this long for open connections
//!
//! [[listener]]
//! name = "web"                 # default: the listen address
//! listen = "127.0.0.1:7000"
//! backends = ["127.0.0.1:9001", "127.0.0.1:9002@5", "127.0.0.1:9003,backup"]
//! policy = "weighted"          # default: round-robin
//! connect_timeout = "2s"
//! connect_attempts = 3         # backends tried per client connection
//! idle_timeout = "0s"          # 0s = never
//! keepalive = "60s"            # TCP keepalive idle time, both sides; 0s = off
//! panic_threshold = 0          # % healthy primaries below which all take traffic
//! mode = "tcp"                 # tcp | http
//! accept_proxy = false         # expect a PROXY v1/v2 header from a front balancer
//! send_proxy_v2 = false        # send the client's address to backends as PROXY v2
//!
//! [listener.http]              # HTTP mode only
//! hash_key = "client-ip"       # client-ip | header:NAME | cookie:NAME (maglev, ring-hash)
//! read_timeout = "30s"         # longest wait for a read from a backend, first byte too
//! total_timeout = "0s"         # longest a request may take, retries included; 0s = none
//! retries = 2                  # retries of an idempotent request on another backend
//! retry_budget_percent = 20    # retries allowed as a share of requests ...
//! retry_budget_min_per_sec = 10  # ... but at least this many per second
//! upstream_h2 = false          # HTTP/2 (prior knowledge) to backends
//! h2c = true                   # accept HTTP/2 prior knowledge from clients
//! forwarded_headers = true     # X-Forwarded-For, Forwarded, X-Forwarded-Proto
//! pool_size = 128              # idle upstream connections kept for reuse
//! tls_cert = "/etc/shoal/cert.pem"  # serve TLS (ALPN h2, http/1.1) with this chain ...
//! tls_key = "/etc/shoal/key.pem"    # ... and this key; both or neither
//!
//! [listener.health]            # active checks
//! check = "tcp"                # none | tcp | http:/PATH
//! interval = "2s"
//! timeout = "1s"
//! rise = 2
//! fall = 3
//! jitter = "200ms"
//!
//! [listener.outlier]           # passive health
//! consecutive_failures = 3     # 0 = never eject
//! base_ejection = "10s"
//! max_ejection = "5m"
//! max_ejected_percent = 50
//!
//! [listener.tuning]            # policy tunables
//! slow_start = "0s"
//! slow_start_min_percent = 10
//! p2c_bias = 1.0
//! ewma_decay = "10s"
//! ring_hash_c = 1.25
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::backend::Backend;
use crate::health::{HealthSettings, OutlierSettings};
use crate::http::{HashKey, HttpSettings};
use crate::policy::humantime_serde_compat as hts;
use crate::policy::{PolicyKind, PolicyOptions};
use crate::pool::PoolConfig;
use crate::proxy::ProxySettings;

/// Default time SIGTERM waits for open connections.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything `shoal-lb` runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Admin listener (`/metrics`, `/backends`), if any.
    pub admin: Option<SocketAddr>,
    /// How long SIGTERM waits for open connections.
    pub drain_timeout: Duration,
    /// The proxy listeners.
    pub listeners: Vec<ListenerConfig>,
}

/// One proxy listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Unique name (reload matches listeners by it).
    pub name: String,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Backends, policy and health.
    pub pool: PoolConfig,
    /// Connect and idle behaviour, PROXY protocol.
    pub proxy: ProxySettings,
    /// TCP or HTTP.
    pub mode: Mode,
    /// HTTP-mode settings (ignored in TCP mode).
    pub http: HttpSettings,
}

/// What a listener proxies.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Bytes, balanced per connection.
    #[default]
    Tcp,
    /// HTTP/1.1 and HTTP/2, balanced per request.
    Http,
}

/// A configuration that cannot be used. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    admin: Option<SocketAddr>,
    #[serde(default = "default_drain", with = "hts")]
    drain_timeout: Duration,
    #[serde(default)]
    listener: Vec<FileListener>,
}

fn default_drain() -> Duration {
    DEFAULT_DRAIN_TIMEOUT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListener {
    name: Option<String>,
    listen: SocketAddr,
    backends: Vec<Backend>,
    #[serde(default = "default_policy")]
    policy: PolicyKind,
    #[serde(default, with = "opt_hts")]
    connect_timeout: Option<Duration>,
    connect_attempts: Option<u32>,
    #[serde(default, with = "opt_hts")]
    idle_timeout: Option<Duration>,
    #[serde(default, with = "opt_hts")]
    keepalive: Option<Duration>,
    #[serde(default)]
    panic_threshold: u32,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    accept_proxy: bool,
    #[serde(default)]
    send_proxy_v2: bool,
    #[serde(default)]
    http: HttpSettings,
    #[serde(default)]
    health: HealthSettings,
    #[serde(default)]
    outlier: OutlierSettings,
    #[serde(default)]
    tuning: PolicyOptions,
}

fn default_policy() -> PolicyKind {
    PolicyKind::RoundRobin
}

mod opt_hts {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("duration `{s}`: {e}")))
    }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Config::from_toml(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().trim().replace('\n', " ");
            ConfigError(match line {
                Some(l) => format!("line {l}: {msg}"),
                None => msg,
            })
        })?;
        let defaults = ProxySettings::default();
        let listeners = file
            .listener
            .into_iter()
            .map(|l| ListenerConfig {
                name: l.name.unwrap_or_else(|| l.listen.to_string()),
                listen: l.listen,
                pool: PoolConfig {
                    backends: l.backends,
                    policy: l.policy,
                    options: l.tuning,
                    health: l.health,
                    outlier: l.outlier,
                    panic_threshold: l.panic_threshold,
                },
                proxy: ProxySettings {
                    connect_timeout: l.connect_timeout.unwrap_or(defaults.connect_timeout),
                    connect_attempts: l.connect_attempts.unwrap_or(defaults.connect_attempts),
                    idle_timeout: l.idle_timeout.unwrap_or(defaults.idle_timeout),
                    keepalive: l.keepalive.unwrap_or(defaults.keepalive),
                    accept_proxy: l.accept_proxy,
                    send_proxy_v2: l.send_proxy_v2,
                },
                mode: l.mode,
                http: l.http,
            })
            .collect();
        let config = Config {
            admin: file.admin,
            drain_timeout: file.drain_timeout,
            listeners,
        };
        config.validate_for_user()?;
        Ok(config)
    }

    /// Checks what parsing alone cannot: at least one listener, unique names
    /// and addresses, and each pool's own rules.
    /// What a user's file or flags must also satisfy: at least one
    /// listener, each with at least one backend. (An embedder such as netd
    /// may run none, or a listener whose service has no replica yet: its
    /// connections are closed, its HTTP requests answered 503.)
    pub fn validate_for_user(&self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(ConfigError(
                "listener: at least one listener is required".into(),
            ));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.pool.backends.is_empty() {
                return Err(ConfigError(format!(
                    "listener[{i}] `{}`: backends: at least one backend is required",
                    l.name
                )));
            }
        }
        self.validate()
    }

    /// What the runtime needs: unique names and addresses, each pool's own
    /// rules, settings in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let at = format!("listener[{i}] `{}`", l.name);
            if !names.insert(&l.name) {
                return Err(ConfigError(format!("{at}: name: used by two listeners")));
            }
            if !addrs.insert(l.listen) {
                return Err(ConfigError(format!(
                    "{at}: listen: {} is used by two listeners",
                    l.listen
                )));
            }
            if Some(l.listen) == self.admin {
                return Err(ConfigError(format!(
                    "{at}: listen: {} is also the admin address",
                    l.listen
                )));
            }
            if l.proxy.connect_timeout.is_zero() {
                return Err(ConfigError(format!(
                    "{at}: connect_timeout: must be above 0"
                )));
            }
            if l.proxy.connect_attempts == 0 {
                return Err(ConfigError(format!(
                    "{at}: connect_attempts: must be 1 or more"
                )));
            }
            if l.mode == Mode::Tcp && l.http.hash_key != HashKey::ClientIp {
                return Err(ConfigError(format!(
                    "{at}: http.hash_key: `{}` needs mode = \"http\" (TCP mode hashes the client address)",
                    l.http.hash_key
                )));
            }
            if l.mode == Mode::Http {
                crate::http::tls::from_paths(l.http.tls_cert.as_deref(), l.http.tls_key.as_deref())
                    .map_err(|e| ConfigError(format!("{at}: http: {e}")))?;
            } else if l.http.tls_cert.is_some() || l.http.tls_key.is_some() {
                return Err(ConfigError(format!(
                    "{at}: http.tls_cert: TLS needs mode = \"http\""
                )));
            }
            l.pool
                .validate()
                .map_err(|e| ConfigError(format!("{at}: {e}")))?;
        }
        Ok(())
    }

    /// Listeners whose backends all have weight 0: they accept and close
    /// every connection (everything drains). Worth a warning, not an error.
    pub fn fully_drained(&self) -> impl Iterator<Item = &ListenerConfig> {
        self.listeners
            .iter()
            .filter(|l| l.pool.backends.iter().all(|b| b.weight == 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Check;

    const FULL: &str = r#"
admin = "127.0.0.1:7001"
drain_timeout = "5s"

[[listener]]
name = "web"
listen = "127.0.0.1:7000"
backends = ["127.0.0.1:9001", "127.0.0.1:9002@5", "127.0.0.1:9003,backup"]
policy = "weighted"
idle_timeout = "10m"

[listener.health]
check = "http:/healthz"
interval = "200ms"
rise = 1
fall = 2

[listener.tuning]
slow_start = "30s"

[[listener]]
listen = "127.0.0.1:7100"
backends = ["127.0.0.1:9101"]
"#;

    #[test]
    fn full_file_parses_with_defaults_filled_in() {
        let c = Config::from_toml(FULL).unwrap();
        assert_eq!(c.admin, Some("127.0.0.1:7001".parse().unwrap()));
        assert_eq!(c.drain_timeout, Duration::from_secs(5));
        let web = &c.listeners[0];
        assert_eq!(web.pool.policy, PolicyKind::Weighted);
        assert_eq!(web.pool.backends[1].weight, 5);
        assert!(web.pool.backends[2].backup);
        assert_eq!(
            web.pool.health.check,
            Check::Http {
                path: "/healthz".into()
            }
        );
        assert_eq!(web.pool.health.interval, Duration::from_millis(200));
        assert_eq!(web.pool.health.timeout, HealthSettings::default().timeout);
        assert_eq!(web.pool.options.slow_start, Duration::from_secs(30));
        assert_eq!(web.proxy.idle_timeout, Duration::from_secs(600));
        assert_eq!(web.proxy.connect_attempts, 3);
        let second = &c.listeners[1];
        assert_eq!(second.name, "127.0.0.1:7100");
        assert_eq!(second.pool.policy, PolicyKind::RoundRobin);
    }

    fn err(text: &str) -> String {
        Config::from_toml(text).unwrap_err().0
    }

    #[test]
    fn errors_name_the_field_and_line() {
        let e = err("[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"nowhere:80\"]\n");
        assert!(e.starts_with("line 3:"), "{e}");
        assert!(e.contains("backend `nowhere:80`"), "{e}");
        let e = err("[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\npolcy = \"p2c\"\n");
        assert!(
            e.starts_with("line 4:") && e.contains("unknown field `polcy`"),
            "{e}"
        );
        let e = err("[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\npolicy = \"fastest\"\n");
        assert!(e.contains("fastest"), "{e}");
        let e = err("[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\n[listener.health]\ninterval = \"soon\"\n");
        assert!(
            e.starts_with("line 5:") && e.contains("duration `soon`"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn semantic_errors_name_the_listener_and_field() {
        let e = err("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\", \"127.0.0.1:2@3\"]\n");
        assert_eq!(e, "listener[0] `a`: backend 127.0.0.1:2 is listed twice");
        let e = err("[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = []\n");
        assert!(
            e.ends_with("backends: at least one backend is required"),
            "{e}"
        );
        assert_eq!(err(""), "listener: at least one listener is required");
        let e = err("[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\n[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\n");
        assert!(e.contains("used by two listeners"), "{e}");
        let e = err("[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\npanic_threshold = 101\n");
        assert!(e.contains("panic_threshold"), "{e}");
    }

    #[test]
    fn embedders_may_run_empty_configs_and_pools_users_may_not() {
        let mut c = Config::from_toml(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\n",
        )
        .unwrap();
        c.listeners[0].pool.backends.clear();
        assert!(c.validate().is_ok());
        assert!(c
            .validate_for_user()
            .unwrap_err()
            .0
            .ends_with("at least one backend is required"));
        c.listeners.clear();
        assert!(c.validate().is_ok());
        assert!(c.validate_for_user().is_err());
    }

    #[test]
    fn all_zero_weights_is_a_defined_drain_not_an_error() {
        let c = Config::from_toml(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2@0\"]\n",
        )
        .unwrap();
        assert_eq!(c.fully_drained().count(), 1);
    }

    #[test]
    fn untrusted_bytes_never_panic() {
        for text in [
            "\u{0}",
            "[[listener]",
            "listener = 3",
            "[[listener]]\nlisten = 7",
            "a = \"\\u{d800}\"",
        ] {
            assert!(Config::from_toml(text).is_err());
        }
    }
}
