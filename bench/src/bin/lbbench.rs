//! `lbbench`: runs one scenario against every requested balancing policy
//! through the real `shoal-lb` and reports tail latency and shares.
//!
//! Exit codes: 0 done, 1 a run failed, 2 bad flags or scenario file.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use shoal_bench::cli::Cli;
use shoal_bench::proxy::Subject;
use shoal_bench::run::{self, Plan, SubjectSamples};
use shoal_bench::scenario::Scenario;
use shoal_bench::{plot, report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut scenario = match Scenario::load(&cli.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lbbench: error: {e}");
            return ExitCode::from(2);
        }
    };
    let subjects = match cli
        .apply(&mut scenario)
        .and_then(|()| cli.subjects(&scenario))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lbbench: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match bench(&cli, &scenario, subjects) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lbbench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(cli: &Cli, scenario: &Scenario, subjects: Vec<Subject>) -> Result<()> {
    let results = match (&cli.out, cli.replot) {
        (Some(dir), true) => report::read_csv(&dir.join("samples.csv"), scenario)?,
        _ => measure(cli, scenario, subjects)?,
    };
    write(cli, scenario, &results)
}

fn measure(cli: &Cli, scenario: &Scenario, subjects: Vec<Subject>) -> Result<Vec<SubjectSamples>> {
    let plan = Plan {
        shoal_bin: cli.shoal_bin()?,
        work_dir: std::env::temp_dir().join(format!("lbbench-{}", std::process::id())),
        progress: !cli.no_progress,
        subjects,
    };
    eprintln!(
        "lbbench: {} ({} subjects x {} rounds x {:?}, rate {}/s, seed {})",
        scenario.name,
        plan.subjects.len(),
        scenario.repeats,
        scenario.duration.0,
        scenario.load.rate,
        scenario.seed
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = rt.block_on(run::run(scenario, &plan));
    let _ = std::fs::remove_dir_all(&plan.work_dir);
    results
}

fn write(cli: &Cli, scenario: &Scenario, results: &[SubjectSamples]) -> Result<()> {
    let sums = report::summaries(scenario, results);
    let table = report::table(scenario, &sums);
    println!("{table}");
    if let Some(dir) = &cli.out {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let header = format!(
            "# lbbench: {}\n\n{}\n\n{} rounds of {:?} per target at {} req/s (seed {}).\n\n",
            scenario.name,
            scenario.description,
            scenario.repeats,
            scenario.duration.0,
            scenario.load.rate,
            scenario.seed
        );
        std::fs::write(dir.join("summary.md"), header + &table)?;
        report::write_json(&dir.join("summary.json"), scenario, &sums)?;
        if !cli.replot {
            report::write_csv(&dir.join("samples.csv"), scenario, results)?;
        }
        plot::cdf(&dir.join("cdf.svg"), scenario, results)?;
        plot::share(&dir.join("share.svg"), scenario, results)?;
        plot::p99(&dir.join("p99.svg"), scenario, results)?;
        eprintln!("lbbench: wrote {}", dir.display());
    }
    Ok(())
}
