//! SVG plots with plotters: latency CDF per subject, per-backend share over
//! time, and p99 over time with the scenario's events marked.
//!
//! Each plot has one panel per balancer and mode (share: one per subject).

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::run::SubjectSamples;
use crate::sample::Sample;
use crate::scenario::Scenario;
use crate::stats::{latencies_ms, windows};

/// Width of the time windows of the share and p99 plots.
pub const WINDOW: Duration = Duration::from_millis(500);

/// Ten distinct colours (Tableau 10), cycled.
fn color(i: usize) -> RGBAColor {
    const C: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b).to_rgba()
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}

/// Groups subject indices by `balancer-mode` (the label before the `/`).
fn groups(results: &[SubjectSamples]) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in results.iter().enumerate() {
        let label = r.subject.to_string();
        let key = label.split('/').next().unwrap_or("").to_string();
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(i),
            None => out.push((key, vec![i])),
        }
    }
    out
}

fn samples(r: &SubjectSamples) -> Vec<Sample> {
    r.samples.iter().map(|(_, s)| *s).collect()
}

fn policy(r: &SubjectSamples) -> String {
    r.subject.policy.clone()
}

/// `cdf.svg`: per balancer and mode, the latency CDF (top) and, to show
/// the tail, the fraction of requests slower than each latency on a log
/// scale (bottom). Both x axes are log-scaled latency.
pub fn cdf(path: &Path, scenario: &Scenario, results: &[SubjectSamples]) -> Result<()> {
    let groups = groups(results);
    let root = SVGBackend::new(path, (560 * groups.len() as u32, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((2, groups.len()));
    let max = results
        .iter()
        .flat_map(|r| r.samples.iter().map(|(_, s)| s.latency.as_secs_f64() * 1e3))
        .fold(1.0f64, f64::max);
    let curves: Vec<Vec<(f64, f64)>> = results
        .iter()
        .map(|r| {
            let lat = latencies_ms(&samples(r));
            let n = lat.len().max(1) as f64;
            // Thin the body, keep every point of the last 1 %.
            let step = (lat.len() / 400).max(1);
            let tail = lat.len() - lat.len() / 100;
            lat.iter()
                .enumerate()
                .filter(|(k, _)| k % step == 0 || *k >= tail)
                .map(|(k, &v)| (v.max(0.1), (k + 1) as f64 / n))
                .collect()
        })
        .collect();
    let cols = groups.len();
    // One panel; the two differ in the y axis type, hence a macro.
    macro_rules! panel {
        ($area:expr, $title:expr, $y:expr, $y_desc:expr, $map:expr, $pos:expr, $idx:expr) => {{
            let mut chart = ChartBuilder::on($area)
                .caption($title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d((0.1f64..max * 1.2).log_scale(), $y)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("latency (ms, from intended send time)")
                .y_desc($y_desc)
                .draw()
                .map_err(err)?;
            for (c, &i) in $idx.iter().enumerate() {
                let color = color(c);
                let pts = curves[i].iter().map(|&(x, f)| (x, $map(f)));
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(err)?
                    .label(policy(&results[i]))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position($pos)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }};
    }
    for (g, (key, idx)) in groups.iter().enumerate() {
        panel!(
            &panels[g],
            format!("{}: latency CDF, {key}", scenario.name),
            0f64..1f64,
            "fraction of requests",
            |f: f64| f,
            SeriesLabelPosition::LowerRight,
            idx
        );
        panel!(
            &panels[cols + g],
            format!("{}: tail, {key}", scenario.name),
            (1e-4f64..1f64).log_scale(),
            "fraction slower (1 - CDF, log)",
            |f: f64| (1.0 - f).max(1e-4),
            SeriesLabelPosition::UpperRight,
            idx
        );
    }
    root.present().map_err(err)?;
    Ok(())
}

/// `share.svg`: share of each backend per time window, one panel per subject.
pub fn share(path: &Path, scenario: &Scenario, results: &[SubjectSamples]) -> Result<()> {
    const COLS: usize = 4;
    // Each balancer-mode group starts a new row of at most COLS panels.
    let mut cells: Vec<(usize, usize, usize)> = Vec::new(); // (row, col, subject)
    let mut row = 0;
    for (_, idx) in groups(results) {
        for (k, &i) in idx.iter().enumerate() {
            cells.push((row + k / COLS, k % COLS, i));
        }
        row += idx.len().div_ceil(COLS);
    }
    let rows = row.max(1);
    let root = SVGBackend::new(path, (300 * COLS as u32, 220 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((rows, COLS));
    let run = scenario.duration.0;
    let names: Vec<&str> = scenario.backends.iter().map(|b| b.name.as_str()).collect();
    for &(r, col, i) in &cells {
        let area = &panels[r * COLS + col];
        let w = windows(&samples(&results[i]), names.len(), WINDOW, run);
        let mut chart = ChartBuilder::on(area)
            .caption(results[i].subject.to_string(), ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(36)
            .build_cartesian_2d(0f64..run.as_secs_f64(), 0f64..1f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("s")
            .y_desc("share")
            .x_labels(5)
            .y_labels(5)
            .draw()
            .map_err(err)?;
        for (b, name) in names.iter().enumerate() {
            let color = color(b);
            let pts = w.iter().map(|x| {
                (
                    x.start.as_secs_f64() + WINDOW.as_secs_f64() / 2.0,
                    x.shares[b],
                )
            });
            let s = chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(err)?;
            if col == 0 {
                s.label(*name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            }
        }
        if col == 0 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Times of every scripted event, step and burst start, with a label.
fn events(scenario: &Scenario) -> Vec<(f64, String)> {
    let mut v = Vec::new();
    for b in &scenario.backends {
        for e in &b.events {
            v.push((
                e.at.as_secs_f64(),
                format!("{} {:?}", b.name, e.action).to_lowercase(),
            ));
        }
    }
    for s in &scenario.load.steps {
        v.push((s.at.0.as_secs_f64(), format!("rate {}", s.rate)));
    }
    for b in &scenario.load.bursts {
        v.push((b.at.0.as_secs_f64(), format!("burst +{}", b.rate)));
    }
    v
}

/// `p99.svg`: p99 per time window, one line per policy, events as dashed
/// vertical lines.
pub fn p99(path: &Path, scenario: &Scenario, results: &[SubjectSamples]) -> Result<()> {
    let groups = groups(results);
    let root = SVGBackend::new(path, (560 * groups.len() as u32, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, groups.len()));
    let run = scenario.duration.0;
    let n = scenario.backends.len();
    let series: Vec<Vec<(f64, f64)>> = results
        .iter()
        .map(|r| {
            windows(&samples(r), n, WINDOW, run)
                .iter()
                .map(|w| {
                    (
                        w.start.as_secs_f64() + WINDOW.as_secs_f64() / 2.0,
                        w.p99_ms.max(0.1),
                    )
                })
                .collect()
        })
        .collect();
    let max = series.iter().flatten().map(|p| p.1).fold(1.0f64, f64::max);
    let marks = events(scenario);
    for ((key, idx), area) in groups.iter().zip(panels.iter()) {
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "{}: p99 per {} ms, {key}",
                    scenario.name,
                    WINDOW.as_millis()
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..run.as_secs_f64(), (0.1f64..max * 1.5).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time in run (s)")
            .y_desc("p99 latency (ms)")
            .draw()
            .map_err(err)?;
        for (t, label) in &marks {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(*t, 0.1), (*t, max * 1.5)],
                    6,
                    4,
                    BLACK.mix(0.6).into(),
                ))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    label.clone(),
                    (*t, max),
                    ("sans-serif", 12),
                )))
                .map_err(err)?;
        }
        for (c, &i) in idx.iter().enumerate() {
            let color = color(c);
            chart
                .draw_series(LineSeries::new(series[i].clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(policy(&results[i]))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
