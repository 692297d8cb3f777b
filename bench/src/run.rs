//! Running a scenario: for each round, each subject in turn gets fresh
//! backends, a fresh balancer and the same arrival schedule.
//!
//! Rounds rotate the order of subjects (and reverse it every other round),
//! so slow drift on a shared machine is spread over all of them instead of
//! favouring whoever runs first.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::backend::SimBackend;
use crate::loadgen::{self, Target};
use crate::proxy::{self, Launch, Subject};
use crate::sample::Sample;
use crate::scenario::Scenario;
use crate::schedule::schedule;

/// Everything a scenario run needs besides the scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What to measure, in table order.
    pub subjects: Vec<Subject>,
    /// The shoal-lb binary.
    pub shoal_bin: PathBuf,
    /// Scratch directory for configs and balancer logs.
    pub work_dir: PathBuf,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// The samples of one subject, every round.
#[derive(Debug, Clone)]
pub struct SubjectSamples {
    /// The subject.
    pub subject: Subject,
    /// `(round, sample)` for every request sent.
    pub samples: Vec<(u32, Sample)>,
}

/// The order of subject indices in `round`.
pub fn order(n: usize, round: u32) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    if n > 0 {
        v.rotate_left((round as usize / 2) % n);
    }
    if round % 2 == 1 {
        v.reverse();
    }
    v
}

/// Runs `scenario` against every subject of `plan`.
pub async fn run(scenario: &Scenario, plan: &Plan) -> Result<Vec<SubjectSamples>> {
    std::fs::create_dir_all(&plan.work_dir)?;
    let mut out: Vec<SubjectSamples> = plan
        .subjects
        .iter()
        .map(|s| SubjectSamples {
            subject: s.clone(),
            samples: Vec::new(),
        })
        .collect();
    let runs = plan.subjects.len() as u64 * scenario.repeats as u64;
    let dur_ms = scenario.duration.0.as_millis() as u64;
    let bar = if plan.progress {
        ProgressBar::new(runs * dur_ms)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {elapsed_precise}/{duration_precise} {msg}")
            .expect("valid template"),
    );
    let mut done = 0u64;
    for round in 0..scenario.repeats {
        for i in order(plan.subjects.len(), round) {
            let subject = &plan.subjects[i];
            bar.set_message(format!(
                "round {}/{} {subject}",
                round + 1,
                scenario.repeats
            ));
            let base = done * dur_ms;
            let ticker = {
                let bar = bar.clone();
                let start = std::time::Instant::now();
                tokio::spawn(async move {
                    loop {
                        let ms = (start.elapsed().as_millis() as u64).min(dur_ms);
                        bar.set_position(base + ms);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                })
            };
            let r = run_one(scenario, plan, subject, round).await;
            ticker.abort();
            let samples = r.with_context(|| format!("{subject}, round {}", round + 1))?;
            out[i]
                .samples
                .extend(samples.into_iter().map(|s| (round, s)));
            done += 1;
            bar.set_position(done * dur_ms);
        }
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Seed of backend `i` in `round`.
fn backend_seed(seed: u64, round: u32, i: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ ((round as u64) << 32)
        ^ (i as u64)
            .wrapping_add(1)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// One subject, one round.
pub async fn run_one(
    scenario: &Scenario,
    plan: &Plan,
    subject: &Subject,
    round: u32,
) -> Result<Vec<Sample>> {
    let mut backends = Vec::new();
    for (i, spec) in scenario.backends.iter().enumerate() {
        backends.push(SimBackend::start(spec, backend_seed(scenario.seed, round, i)).await?);
    }
    let addrs: Vec<(SocketAddr, u32)> = backends
        .iter()
        .zip(&scenario.backends)
        .map(|(b, s)| (b.addr(), s.weight))
        .collect();
    let launch = Launch {
        shoal_bin: &plan.shoal_bin,
        backends: &addrs,
        shoal_args: &scenario.lb.args,
        work_dir: &plan.work_dir,
    };
    let balancer = tokio::task::block_in_place(|| proxy::start(subject, &launch))?;
    let target = Target {
        addr: balancer.addr,
        connection: scenario.load.connection,
        timeout: scenario.load.timeout.0,
        backends: scenario.backends.iter().map(|b| b.name.clone()).collect(),
    };
    let times = schedule(
        &scenario.load,
        scenario.duration.0,
        scenario.seed ^ round as u64,
    );
    let t0 = Instant::now() + Duration::from_millis(50);
    for (b, spec) in backends.iter_mut().zip(&scenario.backends) {
        b.script(&spec.events, t0);
    }
    let samples = loadgen::run(&target, &times, t0).await;
    drop(balancer);
    drop(backends);
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::order;

    #[test]
    fn rounds_rotate_and_reverse() {
        assert_eq!(order(3, 0), [0, 1, 2]);
        assert_eq!(order(3, 1), [2, 1, 0]);
        assert_eq!(order(3, 2), [1, 2, 0]);
        assert_eq!(order(3, 3), [0, 2, 1]);
        // Over rounds, every subject is first at least once.
        let firsts: std::collections::HashSet<usize> = (0..6).map(|r| order(3, r)[0]).collect();
        assert_eq!(firsts.len(), 3);
    }
}
