//! lbbench's command line and how it turns into a [`crate::run::Plan`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::proxy::{Balancer, Subject, POLICIES};
use crate::scenario::{Dur, Mode, Scenario};

/// lbbench: one scenario against every balancing policy; tail latency,
/// shares and imbalance in a table, JSON, CSV and SVG plots.
#[derive(Debug, Parser)]
#[command(name = "lbbench", version)]
pub struct Cli {
    /// Scenario file (TOML); see bench/scenarios/.
    #[arg(long, value_name = "FILE")]
    pub scenario: PathBuf,
    /// Policies: `all` or a comma list of shoal-lb policy names.
    #[arg(long, default_value = "all")]
    pub policies: String,
    /// shoal-lb modes, overriding the scenario's: tcp, http or tcp,http.
    #[arg(long, value_delimiter = ',')]
    pub modes: Vec<String>,
    /// Also run peers with equivalent algorithms: haproxy, nginx.
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Override the scenario's run length (e.g. 10s).
    #[arg(long)]
    pub duration: Option<humantime::Duration>,
    /// Override the scenario's base rate (requests per second).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Override the scenario's number of rounds.
    #[arg(long)]
    pub repeats: Option<u32>,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write summary.md, summary.json, samples.csv and SVG plots here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Do not run: redo the table and plots from `--out DIR`/samples.csv.
    #[arg(long, requires = "out")]
    pub replot: bool,
    /// The shoal-lb binary (default: next to lbbench, built if missing).
    #[arg(long, value_name = "PATH")]
    pub shoal_lb: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl Cli {
    /// Applies the overrides to `scenario`.
    pub fn apply(&self, scenario: &mut Scenario) -> Result<()> {
        if let Some(d) = self.duration {
            scenario.duration = Dur(d.into());
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                bail!("--rate {r}: must be above 0");
            }
            scenario.load.rate = r;
        }
        if let Some(r) = self.repeats {
            if r == 0 {
                bail!("--repeats 0: must be at least 1");
            }
            scenario.repeats = r;
        }
        if let Some(s) = self.seed {
            scenario.seed = s;
        }
        if !self.modes.is_empty() {
            scenario.modes = self
                .modes
                .iter()
                .map(|m| match m.as_str() {
                    "tcp" => Ok(Mode::Tcp),
                    "http" => Ok(Mode::Http),
                    other => bail!("--modes: unknown mode `{other}`, expected tcp or http"),
                })
                .collect::<Result<_>>()?;
        }
        Ok(())
    }

    /// The subjects to run: shoal-lb per mode and policy, then each peer
    /// for the policies it has an equivalent of.
    pub fn subjects(&self, scenario: &Scenario) -> Result<Vec<Subject>> {
        let policies: Vec<String> = if self.policies == "all" {
            POLICIES.iter().map(|p| p.to_string()).collect()
        } else {
            self.policies
                .split(',')
                .map(|p| p.trim().to_string())
                .collect()
        };
        for p in &policies {
            if !POLICIES.contains(&p.as_str()) {
                bail!(
                    "--policies: unknown policy `{p}`, expected all or some of {}",
                    POLICIES.join(", ")
                );
            }
        }
        let mut peers = vec![Balancer::Shoal];
        for p in &self.peers {
            peers.push(match p.as_str() {
                "haproxy" => Balancer::Haproxy,
                "nginx" => Balancer::Nginx,
                other => bail!("--peers: unknown peer `{other}`, expected haproxy or nginx"),
            });
        }
        let mut out = Vec::new();
        for balancer in peers {
            for &mode in &scenario.modes {
                for p in &policies {
                    let s = Subject {
                        balancer,
                        mode,
                        policy: p.clone(),
                    };
                    let supported = match balancer {
                        Balancer::Shoal => true,
                        Balancer::Haproxy => s.peer_algorithm().is_some(),
                        Balancer::Nginx => mode == Mode::Http && s.peer_algorithm().is_some(),
                    };
                    if supported {
                        out.push(s);
                    }
                }
            }
        }
        if out.is_empty() {
            bail!("nothing to run: no subject supports these policies and modes");
        }
        Ok(out)
    }

    /// The shoal-lb binary: `--shoal-lb`, or `shoal-lb` next to this
    /// program, built with cargo (same profile) when it is not there.
    pub fn shoal_bin(&self) -> Result<PathBuf> {
        if let Some(p) = &self.shoal_lb {
            return Ok(p.clone());
        }
        let exe = std::env::current_exe().context("current_exe")?;
        let dir = exe.parent().context("lbbench has no directory")?;
        // Test binaries live in target/PROFILE/deps.
        let dir = if dir.ends_with("deps") {
            dir.parent().unwrap_or(dir)
        } else {
            dir
        };
        let bin = dir.join("shoal-lb");
        if !bin.exists() {
            build_shoal(dir)?;
        }
        Ok(bin)
    }
}

fn build_shoal(profile_dir: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-q", "-p", "shoal-lb", "--bin", "shoal-lb"]);
    if profile_dir.ends_with("release") {
        cmd.arg("--release");
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    eprintln!("lbbench: building shoal-lb ({cmd:?})");
    let status = cmd.status().context("run cargo to build shoal-lb")?;
    if !status.success() {
        bail!("building shoal-lb failed ({status}); pass --shoal-lb PATH");
    }
    Ok(())
}
