//! Writing results: the table (terminal and `summary.md`), `summary.json`
//! and `samples.csv`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::proxy::Subject;
use crate::run::SubjectSamples;
use crate::sample::{Outcome, Sample};
use crate::scenario::Scenario;
use crate::stats::{summarize, Summary};

/// One summary per subject, every round merged.
pub fn summaries(scenario: &Scenario, results: &[SubjectSamples]) -> Vec<Summary> {
    let elapsed = scenario.duration.0 * scenario.repeats;
    let weights = scenario.weights();
    results
        .iter()
        .map(|r| {
            let samples: Vec<_> = r.samples.iter().map(|(_, s)| *s).collect();
            summarize(&r.subject.to_string(), &samples, &weights, elapsed)
        })
        .collect()
}

/// The results table, in Markdown (it reads fine in a terminal too).
///
/// `p99 / rr` is each row's p99 over the p99 of round-robin of the same
/// balancer and mode, when that was run.
pub fn table(scenario: &Scenario, sums: &[Summary]) -> String {
    let names: Vec<&str> = scenario.backends.iter().map(|b| b.name.as_str()).collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| target | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | p99 / rr | ok req/s | errors | share {} | CV |",
        names.join("/")
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for x in sums {
        let rr = x
            .target
            .rsplit_once('/')
            .map(|(prefix, _)| format!("{prefix}/round-robin"));
        let ratio = sums
            .iter()
            .find(|y| Some(&y.target) == rr.as_ref())
            .filter(|y| y.p99_ms > 0.0)
            .map_or("-".to_string(), |y| format!("{:.2}", x.p99_ms / y.p99_ms));
        let shares: Vec<String> = x
            .shares
            .iter()
            .map(|v| format!("{:.0}", v * 100.0))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {} | {} % | {:.2} |",
            x.target,
            x.p50_ms,
            x.p90_ms,
            x.p99_ms,
            x.p999_ms,
            x.max_ms,
            ratio,
            x.throughput,
            x.errors,
            shares.join("/"),
            x.imbalance_cv
        );
    }
    s
}

#[derive(Serialize)]
struct Json<'a> {
    scenario: &'a str,
    duration_s: f64,
    repeats: u32,
    seed: u64,
    backends: Vec<&'a str>,
    results: &'a [Summary],
}

/// `summary.json`: the scenario's shape and one [`Summary`] per subject.
pub fn write_json(path: &Path, scenario: &Scenario, sums: &[Summary]) -> Result<()> {
    let j = Json {
        scenario: &scenario.name,
        duration_s: scenario.duration.0.as_secs_f64(),
        repeats: scenario.repeats,
        seed: scenario.seed,
        backends: scenario.backends.iter().map(|b| b.name.as_str()).collect(),
        results: sums,
    };
    std::fs::write(path, serde_json::to_string_pretty(&j)? + "\n")?;
    Ok(())
}

/// `samples.csv`: one row per request.
pub fn write_csv(path: &Path, scenario: &Scenario, results: &[SubjectSamples]) -> Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "target,round,intended_ms,latency_ms,backend,outcome")?;
    for r in results {
        let target = r.subject.to_string();
        for (round, s) in &r.samples {
            let backend = s
                .backend
                .map_or("", |b| scenario.backends[b as usize].name.as_str());
            writeln!(
                w,
                "{target},{round},{:.3},{:.3},{backend},{}",
                s.intended.as_secs_f64() * 1e3,
                s.latency.as_secs_f64() * 1e3,
                s.outcome.label()
            )?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Reads back a `samples.csv` written by [`write_csv`] (for `--replot`).
pub fn read_csv(path: &Path, scenario: &Scenario) -> Result<Vec<SubjectSamples>> {
    let text = std::fs::read_to_string(path)?;
    let mut out: Vec<SubjectSamples> = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let bad = || anyhow::anyhow!("{}:{}: not a samples.csv row", path.display(), n + 1);
        let f: Vec<&str> = line.split(',').collect();
        let [target, round, intended, latency, backend, outcome] = f[..] else {
            return Err(bad());
        };
        let subject = Subject::parse(target).ok_or_else(bad)?;
        let ms = |x: &str| {
            x.parse::<f64>()
                .map(|v| std::time::Duration::from_secs_f64(v / 1e3))
        };
        let sample = Sample {
            intended: ms(intended).map_err(|_| bad())?,
            latency: ms(latency).map_err(|_| bad())?,
            backend: match backend {
                "" => None,
                name => Some(
                    scenario
                        .backends
                        .iter()
                        .position(|b| b.name == name)
                        .ok_or_else(bad)? as u16,
                ),
            },
            outcome: match outcome {
                "ok" => Outcome::Ok,
                "failed" => Outcome::Failed,
                "timeout" => Outcome::Timeout,
                code => Outcome::Status(code.parse().map_err(|_| bad())?),
            },
        };
        let round: u32 = round.parse().map_err(|_| bad())?;
        match out.iter_mut().find(|s| s.subject == subject) {
            Some(s) => s.samples.push((round, sample)),
            None => out.push(SubjectSamples {
                subject,
                samples: vec![(round, sample)],
            }),
        }
    }
    Ok(out)
}
