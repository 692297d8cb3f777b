//! The demo's terminal view: acts as headings, notes, and a live table of
//! which replica answered how often while traffic runs (redrawn in place
//! on a terminal, printed as snapshots otherwise).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use shoal_tests::cluster::{Cluster, Traffic};

/// How often the live table refreshes.
const TICK: Duration = Duration::from_millis(500);

/// Prints the demo.
pub struct View {
    tty: bool,
    started: Instant,
    acts: usize,
}

impl View {
    /// A view on stdout.
    pub fn new() -> View {
        View {
            tty: std::io::stdout().is_terminal(),
            started: Instant::now(),
            acts: 0,
        }
    }

    /// A new act.
    pub fn act(&mut self, title: &str) {
        self.acts += 1;
        let (b, r) = if self.tty {
            ("\x1b[1m", "\x1b[0m")
        } else {
            ("", "")
        };
        println!(
            "\n{b}[{:>5.1}s] {}. {title}{r}",
            self.started.elapsed().as_secs_f64(),
            self.acts
        );
    }

    /// A line under the current act.
    pub fn note(&self, line: impl AsRef<str>) {
        for l in line.as_ref().lines() {
            println!("    {l}");
        }
    }

    /// Shows, for `length`, the answers per replica over the last second,
    /// the failures so far, and what node 1's DNS says `tasks.web` is. With
    /// `mark`, also the time since that event.
    pub fn watch(
        &self,
        c: &Cluster,
        traffic: &Traffic,
        length: Duration,
        mark: Option<(&str, Instant)>,
    ) {
        let end = Instant::now() + length;
        let mut drawn = 0;
        while Instant::now() < end {
            std::thread::sleep(TICK);
            let now = Instant::now();
            let samples = traffic.samples();
            let mut recent: BTreeMap<String, usize> = BTreeMap::new();
            let mut failed = 0;
            for s in &samples {
                match &s.result {
                    Ok(b) if now - s.at <= Duration::from_secs(1) => {
                        *recent.entry(b.trim().to_string()).or_default() += 1
                    }
                    Ok(_) => {}
                    Err(_) => failed += 1,
                }
            }
            let dns = c
                .dns(0, "front", "tasks.web")
                .map_or("no answer".to_string(), |ips| {
                    format!("{} addresses", ips.len())
                });
            let mut lines = vec![format!(
                "{}requests so far {}, failed {failed}; node 1's DNS: tasks.web = {dns}",
                mark.map_or(String::new(), |(what, at)| format!(
                    "{what} {:.1?} ago; ",
                    now - at
                )),
                samples.len()
            )];
            let total: usize = recent.values().sum();
            for (replica, n) in &recent {
                let bar = "#".repeat((n * 40).checked_div(total).unwrap_or(0));
                lines.push(format!("  {replica:<8} {n:>5}/s {bar}"));
            }
            if self.tty && drawn > 0 {
                print!("\x1b[{drawn}A\x1b[J");
            }
            for l in &lines {
                println!("    {l}");
            }
            let _ = std::io::stdout().flush();
            drawn = if self.tty { lines.len() } else { 0 };
        }
    }

    /// The share of answers per replica over a whole act.
    pub fn shares(&self, answers: &BTreeMap<String, usize>, failed: usize) {
        let total: usize = answers.values().sum();
        let shares: Vec<String> = answers
            .iter()
            .map(|(r, n)| {
                format!(
                    "{} {:.0}%",
                    r.trim(),
                    100.0 * *n as f64 / total.max(1) as f64
                )
            })
            .collect();
        self.note(format!(
            "{total} answered, {failed} failed: {}",
            shares.join(", ")
        ));
    }
}
