//! The `shoal-lb` command line. Flags describe one listener; `--config FILE`
//! describes any number and can be reloaded with SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::backend::Backend;
use crate::config::{Config, ConfigError, ListenerConfig, Mode, DEFAULT_DRAIN_TIMEOUT};
use crate::health::{Check, HealthSettings, OutlierSettings};
use crate::http::{HashKey, HttpSettings};
use crate::policy::{PolicyKind, PolicyOptions};
use crate::pool::PoolConfig;
use crate::proxy::ProxySettings;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (write e.g. 200ms, 2s, 5m)"))
}

/// shoal-lb: a TCP load balancer with health checks and eight policies.
#[derive(Debug, Parser)]
#[command(name = "shoal-lb", version, about, long_about = None)]
pub struct Cli {
    /// TOML file with one or more listeners (reloaded on SIGHUP).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "backend"])]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", required_unless_present = "config")]
    pub listen: Option<SocketAddr>,
    /// A backend: ADDR[@WEIGHT][,backup]; repeat for more.
    #[arg(
        long,
        value_name = "ADDR[@WEIGHT][,backup]",
        required_unless_present = "config"
    )]
    pub backend: Vec<Backend>,
    /// Balancing policy: round-robin, weighted, least-conn, random, p2c,
    /// peak-ewma, maglev, ring-hash.
    #[arg(long, default_value = "round-robin")]
    pub policy: PolicyKind,
    /// Active health check: none, tcp or http:/PATH.
    #[arg(long, default_value = "none")]
    pub health: Check,
    /// Time between health checks of one backend.
    #[arg(long, value_parser = duration, default_value = "2s")]
    pub health_interval: Duration,
    /// A health check slower than this fails.
    #[arg(long, value_parser = duration, default_value = "1s")]
    pub health_timeout: Duration,
    /// Random extra delay before each check (the first too).
    #[arg(long, value_parser = duration)]
    pub health_jitter: Option<Duration>,
    /// Passed checks that bring a backend up.
    #[arg(long, default_value_t = 2)]
    pub rise: u32,
    /// Failed checks that take a backend down.
    #[arg(long, default_value_t = 3)]
    pub fall: u32,
    /// Consecutive connect failures that eject a backend (0 = never).
    #[arg(long, default_value_t = 3)]
    pub eject_after: u32,
    /// First ejection time; the n-th ejection lasts n times as long.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub ejection_time: Duration,
    /// Longest ejection.
    #[arg(long, value_parser = duration, default_value = "5m")]
    pub max_ejection_time: Duration,
    /// Most backends ejected at once, in percent (one may always be).
    #[arg(long, default_value_t = 50)]
    pub max_ejected_percent: u32,
    /// Below this percent of healthy primaries, all primaries take traffic.
    #[arg(long, default_value_t = 0)]
    pub panic_threshold: u32,
    /// Slow-start window for recovered and new backends (0s = off).
    #[arg(long, value_parser = duration, default_value = "0s")]
    pub slow_start: Duration,
    /// Active-request bias of p2c (Envoy's active_request_bias).
    #[arg(long, default_value_t = 1.0)]
    pub p2c_bias: f64,
    /// Load bound of ring-hash: no backend above c × the average.
    #[arg(long, default_value_t = 1.25)]
    pub ring_hash_c: f64,
    /// Backend connect timeout (a timed-out connect tries another backend).
    #[arg(long, value_parser = duration, default_value = "2s")]
    pub connect_timeout: Duration,
    /// Backends tried per client connection.
    #[arg(long, default_value_t = 3)]
    pub connect_attempts: u32,
    /// Close connections idle this long (0s = never).
    #[arg(long, value_parser = duration, default_value = "0s")]
    pub idle_timeout: Duration,
    /// TCP keepalive idle time on both sides (0s = off).
    #[arg(long, value_parser = duration, default_value = "60s")]
    pub keepalive: Duration,
    /// What to proxy: tcp (per connection) or http (per request).
    #[arg(long, value_enum, default_value = "tcp")]
    pub mode: Mode,
    /// HTTP mode: key of maglev/ring-hash: client-ip, header:NAME or cookie:NAME.
    #[arg(long, default_value = "client-ip")]
    pub hash_key: HashKey,
    /// HTTP mode: retries of an idempotent request on another backend.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// HTTP mode: longest wait for a read from a backend (0s = none).
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub read_timeout: Duration,
    /// HTTP mode: longest a request may take, retries included (0s = none).
    #[arg(long, value_parser = duration, default_value = "0s")]
    pub total_timeout: Duration,
    /// HTTP mode: speak HTTP/2 (prior knowledge) to backends.
    #[arg(long)]
    pub upstream_h2: bool,
    /// HTTP mode: serve TLS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// HTTP mode: the private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Expect a PROXY v1/v2 header on every client connection.
    #[arg(long)]
    pub accept_proxy: bool,
    /// Send the client's address to backends as a PROXY v2 header.
    #[arg(long)]
    pub send_proxy_v2: bool,
    /// Admin listener for /metrics and /backends.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// How long SIGTERM waits for open connections.
    #[arg(long, value_parser = duration)]
    pub drain_timeout: Option<Duration>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Log filter, e.g. info or shoal_lb=debug (or set RUST_LOG).
    #[arg(long, default_value = "info")]
    pub log: String,
}

impl Cli {
    /// The configuration these flags describe (reading `--config` if given).
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        if self.threads == Some(0) {
            return Err(ConfigError("--threads: must be 1 or more".into()));
        }
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => self.flag_config()?,
        };
        if self.admin.is_some() {
            config.admin = self.admin;
        }
        if let Some(d) = self.drain_timeout {
            config.drain_timeout = d;
        }
        config.validate_for_user().map_err(|e| match self.config {
            Some(_) => e,
            None => ConfigError(e.0.replacen("listener[0] `", "--listen `", 1)),
        })?;
        Ok(config)
    }

    fn flag_config(&self) -> Result<Config, ConfigError> {
        let listen = self
            .listen
            .ok_or_else(|| ConfigError("--listen: required".into()))?;
        let health = HealthSettings {
            check: self.health.clone(),
            interval: self.health_interval,
            timeout: self.health_timeout,
            rise: self.rise,
            fall: self.fall,
            jitter: self.health_jitter.unwrap_or(self.health_interval / 10),
        };
        let pool = PoolConfig {
            backends: self.backend.clone(),
            policy: self.policy,
            options: PolicyOptions {
                slow_start: self.slow_start,
                p2c_bias: self.p2c_bias,
                ring_hash_c: self.ring_hash_c,
                ..PolicyOptions::default()
            },
            health,
            outlier: OutlierSettings {
                consecutive_failures: self.eject_after,
                base_ejection: self.ejection_time,
                max_ejection: self.max_ejection_time,
                max_ejected_percent: self.max_ejected_percent,
            },
            panic_threshold: self.panic_threshold,
        };
        Ok(Config {
            admin: self.admin,
            drain_timeout: self.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            listeners: vec![ListenerConfig {
                name: listen.to_string(),
                listen,
                pool,
                proxy: ProxySettings {
                    connect_timeout: self.connect_timeout,
                    connect_attempts: self.connect_attempts,
                    idle_timeout: self.idle_timeout,
                    keepalive: self.keepalive,
                    accept_proxy: self.accept_proxy,
                    send_proxy_v2: self.send_proxy_v2,
                },
                mode: self.mode,
                http: HttpSettings {
                    hash_key: self.hash_key.clone(),
                    read_timeout: self.read_timeout,
                    total_timeout: self.total_timeout,
                    retries: self.retries,
                    upstream_h2: self.upstream_h2,
                    tls_cert: self.tls_cert.clone(),
                    tls_key: self.tls_key.clone(),
                    ..HttpSettings::default()
                },
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shoal-lb").chain(args.iter().copied()))
    }

    #[test]
    fn the_issue_example_parses() {
        let cli = parse(&[
            "--listen",
            "127.0.0.1:7000",
            "--backend",
            "127.0.0.1:9001",
            "--backend",
            "127.0.0.1:9002@5",
            "--policy",
            "weighted",
            "--health",
            "tcp",
            "--health-interval",
            "200ms",
            "--rise",
            "1",
            "--fall",
            "2",
            "--admin",
            "127.0.0.1:7001",
        ])
        .unwrap();
        let c = cli.to_config().unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.pool.backends[1].weight, 5);
        assert_eq!(l.pool.policy, PolicyKind::Weighted);
        assert_eq!(l.pool.health.check, Check::Tcp);
        assert_eq!(l.pool.health.interval, Duration::from_millis(200));
        assert_eq!(l.pool.health.jitter, Duration::from_millis(20));
        assert_eq!((l.pool.health.rise, l.pool.health.fall), (1, 2));
        assert_eq!(c.admin, Some("127.0.0.1:7001".parse().unwrap()));
    }

    #[test]
    fn bad_flags_are_usage_errors_naming_the_flag() {
        for (args, needle) in [
            (
                &["--listen", "127.0.0.1:1", "--backend", "x"][..],
                "--backend",
            ),
            (
                &[
                    "--listen",
                    "127.0.0.1:1",
                    "--backend",
                    "127.0.0.1:2",
                    "--policy",
                    "best",
                ],
                "--policy",
            ),
            (
                &[
                    "--listen",
                    "127.0.0.1:1",
                    "--backend",
                    "127.0.0.1:2",
                    "--health-interval",
                    "1 fortnight",
                ],
                "--health-interval",
            ),
            (&["--listen", "127.0.0.1:1"], "--backend"),
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn duplicate_backends_are_rejected() {
        let cli = parse(&[
            "--listen",
            "127.0.0.1:1",
            "--backend",
            "127.0.0.1:2",
            "--backend",
            "127.0.0.1:2@4",
        ])
        .unwrap();
        let e = cli.to_config().unwrap_err();
        assert_eq!(
            e.0,
            "--listen `127.0.0.1:1`: backend 127.0.0.1:2 is listed twice"
        );
    }
}
