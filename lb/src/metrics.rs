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

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: String,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Family {
            name,
            kind,
            help,
            samples: String::new(),
        }
    }

    fn add(&mut self, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.samples, "{}{{{labels}}} {value}", self.name);
    }
}

/// Escapes a label value.
fn esc(v: &str) -> String {
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

/// Renders all metrics.
pub fn render(listeners: &[Arc<Listener>]) -> String {
    let mut fams = [
        Family::new(
            "shoal_lb_listener_accepted_total",
            "counter",
            "Client connections accepted.",
        ),
        Family::new(
            "shoal_lb_listener_active",
            "gauge",
            "Client connections open.",
        ),
        Family::new(
            "shoal_lb_listener_no_backend_total",
            "counter",
            "Client connections closed because no backend could be reached.",
        ),
        Family::new(
            "shoal_lb_listener_panic",
            "gauge",
            "1 while the pool is below its panic threshold.",
        ),
        Family::new(
            "shoal_lb_backend_active",
            "gauge",
            "Connections open to the backend.",
        ),
        Family::new(
            "shoal_lb_backend_connections_total",
            "counter",
            "Connections handed to the backend (attempts included).",
        ),
        Family::new(
            "shoal_lb_backend_connect_failures_total",
            "counter",
            "Failed or timed-out connects to the backend.",
        ),
        Family::new(
            "shoal_lb_backend_sent_bytes_total",
            "counter",
            "Bytes sent to the backend.",
        ),
        Family::new(
            "shoal_lb_backend_received_bytes_total",
            "counter",
            "Bytes received from the backend.",
        ),
        Family::new(
            "shoal_lb_backend_weight",
            "gauge",
            "Configured weight (0 = draining).",
        ),
        Family::new(
            "shoal_lb_backend_health",
            "gauge",
            "1 for the backend's current state (up, down, ejected, draining).",
        ),
        Family::new(
            "shoal_lb_listener_bad_proxy_header_total",
            "counter",
            "Connections closed for a missing or malformed PROXY header.",
        ),
        Family::new(
            "shoal_lb_http_responses_total",
            "counter",
            "Responses sent to clients by status class.",
        ),
        Family::new(
            "shoal_lb_http_retries_total",
            "counter",
            "Requests retried on another backend.",
        ),
        Family::new(
            "shoal_lb_http_retries_denied_total",
            "counter",
            "Retries refused by the retry budget or the per-request limit.",
        ),
        Family::new(
            "shoal_lb_http_upstream_requests_total",
            "counter",
            "Upstream requests by whether the connection was reused from the pool.",
        ),
        Family::new(
            "shoal_lb_backend_http_responses_total",
            "counter",
            "Responses from the backend by status class.",
        ),
        Family::new(
            "shoal_lb_http_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its end, as the client saw it.",
        ),
        Family::new(
            "shoal_lb_backend_http_response_seconds",
            "histogram",
            "Time from picking the backend to its response header.",
        ),
    ];
    for l in listeners {
        let ll = format!("listener=\"{}\"", esc(l.name()));
        let st = l.stats();
        fams[0].add(&ll, st.accepted.load(Relaxed));
        fams[1].add(&ll, st.active.load(Relaxed).max(0));
        fams[2].add(&ll, st.no_backend.load(Relaxed));
        let pool = l.pool();
        fams[3].add(&ll, u8::from(pool.is_panicking()));
        fams[11].add(&ll, st.bad_proxy_header.load(Relaxed));
        let http = l.http();
        if let Some(h) = http {
            for (class, n) in h.stats.responses.snapshot() {
                fams[12].add(&format!("{ll},class=\"{class}\""), n);
            }
            fams[13].add(&ll, h.stats.retries.load(Relaxed));
            fams[14].add(&ll, h.stats.retries_denied.load(Relaxed));
            fams[15].add(
                &format!("{ll},reused=\"true\""),
                h.stats.upstream_reused.load(Relaxed),
            );
            fams[15].add(
                &format!("{ll},reused=\"false\""),
                h.stats.upstream_new.load(Relaxed),
            );
            histogram(&mut fams[17], &ll, &h.stats.latency);
        }
        for ep in pool.endpoints().iter() {
            let bl = format!("{ll},backend=\"{}\"", ep.addr());
            let (to, from) = ep.bytes();
            fams[4].add(&bl, ep.active());
            fams[5].add(&bl, ep.total());
            fams[6].add(&bl, ep.connect_failures());
            fams[7].add(&bl, to);
            fams[8].add(&bl, from);
            fams[9].add(&bl, ep.weight());
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
                fams[10].add(&format!("{bl},state=\"{name}\""), u8::from(s == now));
            }
            if http.is_some() {
                for (class, n) in ep.http.responses.snapshot() {
                    fams[16].add(&format!("{bl},class=\"{class}\""), n);
                }
                histogram(&mut fams[18], &bl, &ep.http.latency);
            }
        }
    }
    let mut out = String::new();
    for f in &fams {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            f.name, f.help, f.name, f.kind
        );
        out.push_str(&f.samples);
    }
    out
}
