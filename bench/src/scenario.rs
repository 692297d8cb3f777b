//! Scenario files: what lbbench runs, as plain data read from TOML.
//!
//! A scenario names the backends (service time, concurrency, error rate,
//! a script of changes), the load (rate, steps, bursts, connection reuse) and
//! the shoal-lb settings shared by every policy. Unknown fields are errors;
//! every error names the field and the line ([`ScenarioError`]).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// A duration written as a humantime string (`"5ms"`, `"1.5s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration ({e})")))
    }
}

/// One scenario, as read from its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in titles and file names.
    pub name: String,
    /// One line saying what the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Length of one run (one policy, one round).
    pub duration: Dur,
    /// Seed of the arrival schedule and of every backend's randomness.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Runs per policy; rounds are interleaved across policies.
    #[serde(default = "one")]
    pub repeats: u32,
    /// shoal-lb modes to run: `tcp` (L4) and/or `http` (L7).
    #[serde(default = "default_modes")]
    pub modes: Vec<Mode>,
    /// The offered load.
    pub load: Load,
    /// Settings passed to every shoal-lb run.
    #[serde(default)]
    pub lb: LbSettings,
    /// The simulated backends, at least one.
    #[serde(rename = "backend")]
    pub backends: Vec<BackendSpec>,
}

fn default_seed() -> u64 {
    1
}
fn one() -> u32 {
    1
}
fn default_modes() -> Vec<Mode> {
    vec![Mode::Tcp]
}

/// How shoal-lb proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// L4: balanced per TCP connection.
    Tcp,
    /// L7: balanced per HTTP request.
    Http,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Tcp => "tcp",
            Mode::Http => "http",
        })
    }
}

/// The offered load: an open-loop schedule of requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Requests per second from t = 0.
    pub rate: f64,
    /// Later rates: from `at` on, `rate` requests per second.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Short bursts on top of the rate.
    #[serde(default)]
    pub bursts: Vec<Burst>,
    /// Spacing of arrivals: `poisson` (random, seeded) or `uniform`.
    #[serde(default)]
    pub arrivals: Arrivals,
    /// `new` (one TCP connection per request) or `keep-alive`.
    #[serde(default)]
    pub connection: ConnectionMode,
    /// A request still unanswered after this counts as an error.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}

/// A change of rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When the new rate starts, from the start of the run.
    pub at: Dur,
    /// Requests per second from then on.
    pub rate: f64,
}

/// Extra requests at a higher rate for a while.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// Start of the burst.
    pub at: Dur,
    /// How long it lasts.
    pub length: Dur,
    /// Extra requests per second during the burst.
    pub rate: f64,
}

/// Spacing of arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arrivals {
    /// Exponential gaps (a Poisson process) drawn from the seed.
    #[default]
    Poisson,
    /// Equal gaps.
    Uniform,
}

/// Connection reuse of the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionMode {
    /// A new TCP connection per request (`Connection: close`).
    #[default]
    New,
    /// HTTP/1.1 keep-alive: idle connections are reused, new ones opened
    /// when all are busy (the schedule never waits for a connection).
    KeepAlive,
}

/// Settings given to shoal-lb in every run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbSettings {
    /// Extra `shoal-lb` flags, e.g. `["--slow-start", "5s"]`.
    #[serde(default)]
    pub args: Vec<String>,
}

/// One simulated backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Name, returned in the `x-backend` header of every response.
    pub name: String,
    /// Weight given to the balancer (`ADDR@WEIGHT`).
    #[serde(default = "one")]
    pub weight: u32,
    /// Service time of one request.
    pub service: Service,
    /// Requests served at once; the rest wait in a FIFO queue.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Fraction of requests answered `500`, 0 to 1.
    #[serde(default)]
    pub error_rate: f64,
    /// Changes over time, from the start of each run.
    #[serde(default)]
    pub events: Vec<Event>,
}

fn default_concurrency() -> usize {
    64
}

/// A service-time distribution.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(tag = "dist", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Service {
    /// Always `value`.
    Fixed {
        /// The service time.
        value: Dur,
    },
    /// Exponential with this mean.
    Exponential {
        /// Mean service time.
        mean: Dur,
    },
    /// Log-normal: `median × e^(sigma × N(0,1))`.
    LogNormal {
        /// Median service time.
        median: Dur,
        /// Shape; 0.5 is moderate, 1.5 a heavy tail.
        sigma: f64,
    },
    /// `slow` with probability `p_slow`, else `fast`.
    Bimodal {
        /// The common service time.
        fast: Dur,
        /// The rare one.
        slow: Dur,
        /// Probability of `slow`, 0 to 1.
        p_slow: f64,
    },
}

/// A scripted change to one backend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawEvent")]
pub struct Event {
    /// When, from the start of the run.
    pub at: Duration,
    /// What changes.
    pub action: Action,
}

/// What a scripted event does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Multiply the configured service time by this factor (1 restores it).
    Slow(f64),
    /// Close the listener and every open connection.
    Die,
    /// Listen again on the same port.
    Revive,
    /// Set the error rate.
    ErrorRate(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: Dur,
    action: String,
    factor: Option<f64>,
    rate: Option<f64>,
}

impl TryFrom<RawEvent> for Event {
    type Error = String;
    fn try_from(r: RawEvent) -> Result<Self, String> {
        let action = match (r.action.as_str(), r.factor, r.rate) {
            ("slow", Some(f), None) if f > 0.0 => Action::Slow(f),
            ("slow", Some(f), None) => return Err(format!("factor {f}: must be above 0")),
            ("slow", None, _) => return Err("action `slow` needs `factor`".into()),
            ("die", None, None) => Action::Die,
            ("revive", None, None) => Action::Revive,
            ("error-rate", None, Some(p)) if (0.0..=1.0).contains(&p) => Action::ErrorRate(p),
            ("error-rate", None, Some(p)) => return Err(format!("rate {p}: must be 0 to 1")),
            ("error-rate", _, None) => return Err("action `error-rate` needs `rate`".into()),
            ("slow" | "die" | "revive" | "error-rate", _, _) => {
                return Err(format!("action `{}` takes no such field", r.action))
            }
            (other, _, _) => {
                return Err(format!(
                    "unknown action `{other}`, expected slow, die, revive or error-rate"
                ))
            }
        };
        Ok(Event { at: r.at.0, action })
    }
}

/// A scenario file that cannot be used; one line, naming field and line.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The path.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or a field is wrong.
    #[error("{file}:{line}: {field}: {message}")]
    Field {
        /// The path.
        file: String,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// Dotted path of the field (`backend[1].service.mean`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            file: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parses and checks scenario text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let de = toml::Deserializer::new(text);
        let sc: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            ScenarioError::Field {
                file: file.to_string(),
                line,
                field: if path == "." { "(top)".into() } else { path },
                message: inner.message().trim().to_string(),
            }
        })?;
        sc.check(text, file)?;
        Ok(sc)
    }

    /// Checks that span fields (names, sums) cannot express in serde.
    fn check(&self, text: &str, file: &str) -> Result<(), ScenarioError> {
        let err = |field: &str, needle: &str, message: String| ScenarioError::Field {
            file: file.to_string(),
            line: line_of(text, needle),
            field: field.to_string(),
            message,
        };
        if self.backends.is_empty() {
            return Err(err(
                "backend",
                "",
                "at least one [[backend]] is needed".into(),
            ));
        }
        if self.duration.0.is_zero() {
            return Err(err("duration", "duration", "must be above 0".into()));
        }
        if self.repeats == 0 {
            return Err(err("repeats", "repeats", "must be at least 1".into()));
        }
        if self.modes.is_empty() {
            return Err(err(
                "modes",
                "modes",
                "name at least one of tcp, http".into(),
            ));
        }
        if !(self.load.rate > 0.0 && self.load.rate.is_finite()) {
            return Err(err("load.rate", "rate", "must be above 0".into()));
        }
        for (i, s) in self.load.steps.iter().enumerate() {
            if !(s.rate >= 0.0 && s.rate.is_finite()) {
                return Err(err(
                    &format!("load.steps[{i}].rate"),
                    "steps",
                    "must be 0 or more".into(),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let f = |x: &str| format!("backend[{i}].{x}");
            let at = format!("\"{}\"", b.name);
            if !names.insert(&b.name) {
                return Err(err(&f("name"), &at, format!("`{}` is used twice", b.name)));
            }
            if b.concurrency == 0 {
                return Err(err(&f("concurrency"), &at, "must be at least 1".into()));
            }
            if !(0.0..=1.0).contains(&b.error_rate) {
                return Err(err(&f("error_rate"), &at, "must be 0 to 1".into()));
            }
            if let Service::Bimodal { p_slow, .. } = b.service {
                if !(0.0..=1.0).contains(&p_slow) {
                    return Err(err(&f("service.p_slow"), &at, "must be 0 to 1".into()));
                }
            }
            if let Service::LogNormal { sigma, .. } = b.service {
                if !(sigma >= 0.0 && sigma.is_finite()) {
                    return Err(err(&f("service.sigma"), &at, "must be 0 or more".into()));
                }
            }
        }
        Ok(())
    }

    /// Weights of the backends, in order.
    pub fn weights(&self) -> Vec<u32> {
        self.backends.iter().map(|b| b.weight).collect()
    }
}

/// 1-based line of the first occurrence of `needle` (1 when absent).
fn line_of(text: &str, needle: &str) -> usize {
    text.find(needle)
        .map(|i| text[..i].matches('\n').count() + 1)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "t"
duration = "2s"
[load]
rate = 100
[[backend]]
name = "a"
service = { dist = "exponential", mean = "5ms" }
events = [{ at = "1s", action = "slow", factor = 10 }]
"#;

    #[test]
    fn a_good_file_parses() {
        let s = Scenario::parse(OK, "t.toml").unwrap();
        assert_eq!(s.backends[0].events[0].action, Action::Slow(10.0));
        assert_eq!(s.load.connection, ConnectionMode::New);
    }

    fn error(text: &str) -> String {
        Scenario::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let e = error(&OK.replace("rate = 100", "rate = 100\nrat = 3"));
        assert!(
            e.starts_with("t.toml:6: load.rat: unknown field `rat`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn bad_duration_names_field_and_line() {
        let e = error(&OK.replace("mean = \"5ms\"", "mean = \"5 parsecs\""));
        assert!(
            e.starts_with("t.toml:8: backend[0].service: `5 parsecs` is not a duration"),
            "{e}"
        );
    }

    #[test]
    fn bad_event_names_field_and_line() {
        let e = error(&OK.replace("factor = 10", "rate = 10"));
        assert!(e.starts_with("t.toml:9: backend[0].events[0]:"), "{e}");
        assert!(e.contains("needs `factor`"), "{e}");
    }

    #[test]
    fn missing_field_and_checks_are_named() {
        let e = error(&OK.replace("duration = \"2s\"\n", ""));
        assert!(e.contains("missing field `duration`"), "{e}");
        let e = error(&OK.replace("name = \"a\"", "name = \"a\"\nerror_rate = 2.0"));
        assert!(
            e.starts_with("t.toml:7: backend[0].error_rate: must be 0 to 1"),
            "{e}"
        );
    }
}
