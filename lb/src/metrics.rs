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
    ];
    for l in listeners {
        let ll = format!("listener=\"{}\"", esc(l.name()));
        let st = l.stats();
        fams[0].add(&ll, st.accepted.load(Relaxed));
        fams[1].add(&ll, st.active.load(Relaxed).max(0));
        fams[2].add(&ll, st.no_backend.load(Relaxed));
        let pool = l.pool();
        fams[3].add(&ll, u8::from(pool.is_panicking()));
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
