//! Prometheus text exposition of the running listeners and their backends.
//!
//! The counters already live in atomics on the datapath ([`ListenerStats`],
//! [`Endpoint`]); rendering reads them directly instead of keeping a second
//! registry in step.
//!
//! [`ListenerStats`]: crate::proxy::ListenerStats
//! [`Endpoint`]: crate::endpoint::Endpoint

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::http::stats::Histogram;
use crate::pool::HealthState;
use crate::proxy::Listener;

/// One metric family in Prometheus text: its `HELP` and `TYPE` lines and
/// its samples. The one writer of the format for shoal-lb and netd alike.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: String,
}

impl Family {
    /// A family `name` of `kind` (`counter`, `gauge`, `histogram`).
    pub fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Family {
            name,
            kind,
            help,
            samples: String::new(),
        }
    }

    /// Adds a sample; `labels` is `k="v",...` (values escaped with
    /// [`esc`]) or empty.
    pub fn add(&mut self, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.samples, "{} {value}", self.name);
        } else {
            let _ = writeln!(self.samples, "{}{{{labels}}} {value}", self.name);
        }
    }

    /// Appends the family, announced once, to `out`.
    pub fn write_to(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            self.name, self.help, self.name, self.kind
        );
        out.push_str(&self.samples);
    }
}

/// Escapes a label value.
pub fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Adds a histogram's `_bucket`, `_sum` and `_count` samples.
fn histogram(f: &mut Family, labels: &str, h: &Histogram) {
    let (buckets, count, sum) = h.snapshot();
    for (le, n) in buckets {
        let _ = writeln!(f.samples, "{}_bucket{{{labels},le=\"{le}\"}} {n}", f.name);
    }
    let _ = writeln!(
        f.samples,
        "{}_bucket{{{labels},le=\"+Inf\"}} {count}",
        f.name
    );
    let _ = writeln!(f.samples, "{}_sum{{{labels}}} {sum}", f.name);
    let _ = writeln!(f.samples, "{}_count{{{labels}}} {count}", f.name);
}

/// Every metric family, in the order they are rendered.
#[derive(Debug, Clone, Copy)]
enum M {
    Accepted,
    Active,
    NoBackend,
    Panic,
    BackendActive,
    BackendTotal,
    BackendFailures,
    BackendEjections,
    BackendSent,
    BackendReceived,
    BackendWeight,
    BackendHealth,
    BadProxyHeader,
    HttpResponses,
    HttpRetries,
    HttpRetriesDenied,
    HttpUpstream,
    HttpHandOffs,
    HttpIdleUpstream,
    BackendHttpResponses,
    HttpDuration,
    BackendHttpDuration,
}

impl M {
    const ALL: [M; 22] = [
        M::Accepted,
        M::Active,
        M::NoBackend,
        M::Panic,
        M::BackendActive,
        M::BackendTotal,
        M::BackendFailures,
        M::BackendEjections,
        M::BackendSent,
        M::BackendReceived,
        M::BackendWeight,
        M::BackendHealth,
        M::BadProxyHeader,
        M::HttpResponses,
        M::HttpRetries,
        M::HttpRetriesDenied,
        M::HttpUpstream,
        M::HttpHandOffs,
        M::HttpIdleUpstream,
        M::BackendHttpResponses,
        M::HttpDuration,
        M::BackendHttpDuration,
    ];

    /// Name, type and help of the family.
    fn describe(self) -> (&'static str, &'static str, &'static str) {
        match self {
            M::Accepted => (
                "shoal_lb_listener_accepted_total",
                "counter",
                "Client connections accepted.",
            ),
            M::Active => (
                "shoal_lb_listener_active",
                "gauge",
                "Client connections open.",
            ),
            M::NoBackend => (
                "shoal_lb_listener_no_backend_total",
                "counter",
                "Client connections closed because no backend could be reached.",
            ),
            M::Panic => (
                "shoal_lb_listener_panic",
                "gauge",
                "1 while the pool is below its panic threshold.",
            ),
            M::BackendActive => (
                "shoal_lb_backend_active",
                "gauge",
                "Connections open to the backend.",
            ),
            M::BackendTotal => (
                "shoal_lb_backend_connections_total",
                "counter",
                "Connections handed to the backend (attempts included).",
            ),
            M::BackendFailures => (
                "shoal_lb_backend_connect_failures_total",
                "counter",
                "Failed or timed-out connects to the backend.",
            ),
            M::BackendEjections => (
                "shoal_lb_backend_ejections_total",
                "counter",
                "Times passive health ejected the backend (consecutive connect failures, 5xx or resets).",
            ),
            M::BackendSent => (
                "shoal_lb_backend_sent_bytes_total",
                "counter",
                "Bytes sent to the backend.",
            ),
            M::BackendReceived => (
                "shoal_lb_backend_received_bytes_total",
                "counter",
                "Bytes received from the backend.",
            ),
            M::BackendWeight => (
                "shoal_lb_backend_weight",
                "gauge",
                "Configured weight (0 = draining).",
            ),
            M::BackendHealth => (
                "shoal_lb_backend_health",
                "gauge",
                "1 for the backend's current state (up, down, ejected, draining).",
            ),
            M::BadProxyHeader => (
                "shoal_lb_listener_bad_proxy_header_total",
                "counter",
                "Connections closed for a missing or malformed PROXY header.",
            ),
            M::HttpResponses => (
                "shoal_lb_http_responses_total",
                "counter",
                "Responses sent to clients by status class.",
            ),
            M::HttpRetries => (
                "shoal_lb_http_retries_total",
                "counter",
                "Requests retried on another backend.",
            ),
            M::HttpRetriesDenied => (
                "shoal_lb_http_retries_denied_total",
                "counter",
                "Retries refused by the retry budget or the per-request limit.",
            ),
            M::HttpUpstream => (
                "shoal_lb_http_upstream_requests_total",
                "counter",
                "Upstream requests by whether the connection was reused from the pool.",
            ),
            M::HttpHandOffs => (
                "shoal_lb_http_handoffs_total",
                "counter",
                "Client connections the HTTP/1.1 fast path handed to pingora (h2c, upgrades, Expect, chunked or large request bodies, HTTP/1.0).",
            ),
            M::HttpIdleUpstream => (
                "shoal_lb_http_idle_upstream_connections",
                "gauge",
                "Idle upstream connections the HTTP/1.1 fast path keeps for reuse.",
            ),
            M::BackendHttpResponses => (
                "shoal_lb_backend_http_responses_total",
                "counter",
                "Responses from the backend by status class.",
            ),
            M::HttpDuration => (
                "shoal_lb_http_request_duration_seconds",
                "histogram",
                "Time from a request's arrival to its end, as the client saw it.",
            ),
            M::BackendHttpDuration => (
                "shoal_lb_backend_http_response_seconds",
                "histogram",
                "Time from picking the backend to its response header.",
            ),
        }
    }
}

/// Renders all metrics.
pub fn render(listeners: &[Arc<Listener>]) -> String {
    let mut fams = M::ALL.map(|m| {
        let (name, kind, help) = m.describe();
        Family::new(name, kind, help)
    });
    for l in listeners {
        let ll = format!("listener=\"{}\"", esc(l.name()));
        let st = l.stats();
        fams[M::Accepted as usize].add(&ll, st.accepted.load(Relaxed));
        fams[M::Active as usize].add(&ll, st.active.load(Relaxed).max(0));
        fams[M::NoBackend as usize].add(&ll, st.no_backend.load(Relaxed));
        let pool = l.pool();
        fams[M::Panic as usize].add(&ll, u8::from(pool.is_panicking()));
        fams[M::BadProxyHeader as usize].add(&ll, st.bad_proxy_header.load(Relaxed));
        let http = l.http();
        if let Some(h) = http {
            for (class, n) in h.stats.responses.snapshot() {
                fams[M::HttpResponses as usize].add(&format!("{ll},class=\"{class}\""), n);
            }
            fams[M::HttpRetries as usize].add(&ll, h.stats.retries.load(Relaxed));
            fams[M::HttpRetriesDenied as usize].add(&ll, h.stats.retries_denied.load(Relaxed));
            fams[M::HttpUpstream as usize].add(
                &format!("{ll},reused=\"true\""),
                h.stats.upstream_reused.load(Relaxed),
            );
            fams[M::HttpUpstream as usize].add(
                &format!("{ll},reused=\"false\""),
                h.stats.upstream_new.load(Relaxed),
            );
            fams[M::HttpHandOffs as usize].add(&ll, h.stats.handoffs.load(Relaxed));
            fams[M::HttpIdleUpstream as usize].add(&ll, h.idle.len());
            histogram(&mut fams[M::HttpDuration as usize], &ll, &h.stats.latency);
        }
        for ep in pool.endpoints().iter() {
            let bl = format!("{ll},backend=\"{}\"", ep.addr());
            let (to, from) = ep.bytes();
            fams[M::BackendActive as usize].add(&bl, ep.active());
            fams[M::BackendTotal as usize].add(&bl, ep.total());
            fams[M::BackendFailures as usize].add(&bl, ep.connect_failures());
            fams[M::BackendEjections as usize].add(&bl, ep.ejections());
            fams[M::BackendSent as usize].add(&bl, to);
            fams[M::BackendReceived as usize].add(&bl, from);
            fams[M::BackendWeight as usize].add(&bl, ep.weight());
            let now = pool.health_of(ep);
            for s in [
                HealthState::Up,
                HealthState::Down,
                HealthState::Ejected,
                HealthState::Draining,
            ] {
                let name = serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                fams[M::BackendHealth as usize]
                    .add(&format!("{bl},state=\"{name}\""), u8::from(s == now));
            }
            if http.is_some() {
                for (class, n) in ep.http.responses.snapshot() {
                    fams[M::BackendHttpResponses as usize]
                        .add(&format!("{bl},class=\"{class}\""), n);
                }
                histogram(
                    &mut fams[M::BackendHttpDuration as usize],
                    &bl,
                    &ep.http.latency,
                );
            }
        }
    }
    let mut out = String::new();
    for f in &fams {
        f.write_to(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_announced_once() {
        let text = render(&[]);
        let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
        assert_eq!(helps.len(), M::ALL.len());
        let mut names: Vec<&str> = helps.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), M::ALL.len(), "a family name is used twice");
        assert!(text.contains("# TYPE shoal_lb_http_request_duration_seconds histogram"));
    }
}
