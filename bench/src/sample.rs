//! One measured request, as the generator records it and `samples.csv`
//! writes it.

use std::time::Duration;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `200`.
    Ok,
    /// Any other HTTP status (a backend's `500`, the balancer's `502`).
    Status(u16),
    /// Connect refused or reset, or the connection closed mid-answer.
    Failed,
    /// No answer within the timeout.
    Timeout,
}

impl Outcome {
    /// `ok`, the status code, `failed` or `timeout`.
    pub fn label(self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Status(s) => s.to_string(),
            Outcome::Failed => "failed".into(),
            Outcome::Timeout => "timeout".into(),
        }
    }
}

/// One request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Intended send time, from the start of the run.
    pub intended: Duration,
    /// From the intended send time to the end of the answer (or the error).
    pub latency: Duration,
    /// Index of the backend that answered, when one did.
    pub backend: Option<u16>,
    /// How it ended.
    pub outcome: Outcome,
}
