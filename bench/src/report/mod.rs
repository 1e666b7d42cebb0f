//! The results: medians over rounds with ratios, written as a Markdown table, JSON and an SVG
//! chart under `<out>/<timestamp>/`, with copies at `<out>/latest.*`.

mod markdown;
mod svg;

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::{Plan, Suite};
use crate::contenders::ContenderKind;
use crate::load::Figures;
use crate::runner::{Entrant, Outcome, Sample, TestCase};
use crate::system::MachineInfo;

/// How and where the run happened.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// The exact command line.
    pub command_line: String,
    /// Start time, UTC, `YYYYMMDD-HHMMSS`.
    pub started_utc: String,
    /// Suite name.
    pub suite: Suite,
    /// Rounds per contender and test.
    pub rounds: u32,
    /// Thread (or process) counts per forwarder, each run in turn.
    pub threads: Vec<u32>,
    /// CPUs the forwarders were pinned to.
    pub forwarder_cpus: String,
    /// CPUs the load generators and sinks were pinned to.
    pub load_cpus: String,
    /// The machine.
    pub machine: MachineInfo,
    /// Things a reader must know to read the figures right.
    pub notes: Vec<String>,
}

impl RunInfo {
    /// The thread counts as text: `1`, or `1, 2`.
    pub fn threads_text(&self) -> String {
        let counts: Vec<String> = self.threads.iter().map(u32::to_string).collect();
        counts.join(", ")
    }
}

/// One contender's line in one test's table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Contender name.
    pub contender: String,
    /// Its threads or worker processes; absent for `direct`.
    pub threads: Option<u32>,
    /// The name shown: the contender's, with the thread count when a run has several.
    pub label: String,
    /// `ok`, `partial` (some rounds failed), `failed` or `n/a`.
    pub status: &'static str,
    /// Why it failed, which rounds failed, or why it does not apply.
    pub note: Option<String>,
    /// Rounds that produced figures.
    pub rounds_measured: u32,
    /// Median of every figure over the measured rounds.
    pub medians: Figures,
    /// Primary figure divided by `direct`'s.
    pub to_direct: Option<f64>,
    /// Primary figure divided by the best peer's (HAProxy, nginx, socat) at the same thread
    /// count.
    pub to_best_peer: Option<f64>,
}

/// How one contender's primary figure in one test changes with its thread count.
#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    /// Test name.
    pub test: String,
    /// Contender name.
    pub contender: String,
    /// The figure compared (the test's primary one).
    pub figure: &'static str,
    /// Whether more of it is better.
    pub higher_is_better: bool,
    /// The median at each thread count, in the run's order.
    pub by_threads: Vec<(u32, Option<f64>)>,
    /// Each later count's median over the first count's.
    pub ratios: Vec<(u32, Option<f64>)>,
}

/// One test's results.
#[derive(Debug, Clone, Serialize)]
pub struct TestSummary {
    /// Test name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The figure ratios are taken of.
    pub primary: &'static str,
    /// Whether more of the primary figure is better.
    pub higher_is_better: bool,
    /// One row per contender, in the order given.
    pub rows: Vec<Row>,
    #[serde(skip)]
    test: TestCase,
}

/// Everything the JSON file holds.
#[derive(Debug, Serialize)]
pub struct Report {
    /// How and where.
    pub run: RunInfo,
    /// Medians and ratios per test.
    pub tests: Vec<TestSummary>,
    /// Thread-count ratios, when the run had several counts.
    pub scaling: Vec<Scaling>,
    /// Every single outcome, for anyone who wants the spread.
    pub samples: Vec<Sample>,
}

impl Report {
    /// Summarises the samples of a run.
    pub fn new(plan: &Plan, run: RunInfo, samples: Vec<Sample>) -> Report {
        let tests = plan
            .tests
            .iter()
            .map(|&test| summarize(plan, test, &samples))
            .collect::<Vec<_>>();
        let scaling = if plan.threads.len() > 1 {
            tests.iter().flat_map(|test| scaling(plan, test)).collect()
        } else {
            Vec::new()
        };
        Report {
            run,
            tests,
            scaling,
            samples,
        }
    }

    /// Writes `results.md`, `results.json` and `chart.svg` into `dir` and copies them to
    /// `<out>/latest.{md,json,svg}`. Returns the Markdown text.
    pub fn write(&self, dir: &Path, out: &Path) -> Result<String> {
        let text = markdown::render(self);
        let json = serde_json::to_string_pretty(self).context("serialising the results")?;
        let chart = svg::render(self);
        for (name, latest, content) in [
            ("results.md", "latest.md", &text),
            ("results.json", "latest.json", &json),
            ("chart.svg", "latest.svg", &chart),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, content)
                .with_context(|| format!("writing {}", path.display()))?;
            let latest = out.join(latest);
            std::fs::write(&latest, content)
                .with_context(|| format!("writing {}", latest.display()))?;
        }
        Ok(text)
    }
}

fn summarize(plan: &Plan, test: TestCase, samples: &[Sample]) -> TestSummary {
    let (primary, higher_is_better) = test.primary_figure();
    let name = test.name();
    let mut rows: Vec<Row> = Entrant::all(plan)
        .into_iter()
        .map(|entrant| {
            let mine: Vec<&Sample> = samples
                .iter()
                .filter(|sample| {
                    sample.test == name
                        && sample.contender == entrant.kind.name()
                        && sample.threads == entrant.threads
                })
                .collect();
            let mut row = summarize_row(entrant.kind, &mine);
            row.threads = entrant.threads;
            row.label = entrant.label(plan);
            row
        })
        .collect();

    add_ratios(&mut rows, primary, higher_is_better);
    TestSummary {
        name,
        description: test.description(plan),
        primary,
        higher_is_better,
        rows,
        test,
    }
}

/// The scaling lines of one test: every contender that ran at more than one thread count.
fn scaling(plan: &Plan, test: &TestSummary) -> Vec<Scaling> {
    let mut lines = Vec::new();
    for kind in &plan.contenders {
        if *kind == ContenderKind::Direct {
            continue;
        }
        let by_threads: Vec<(u32, Option<f64>)> = plan
            .threads
            .iter()
            .map(|&threads| {
                let value = test
                    .rows
                    .iter()
                    .find(|row| row.contender == kind.name() && row.threads == Some(threads))
                    .and_then(|row| row.medians.get(test.primary).copied());
                (threads, value)
            })
            .collect();
        if by_threads.iter().all(|(_, value)| value.is_none()) {
            continue; // n/a everywhere (a peer in a namespace test, say)
        }
        let base = by_threads[0].1.filter(|value| *value > 0.0);
        let ratios = by_threads[1..]
            .iter()
            .map(|&(threads, value)| (threads, value.zip(base).map(|(value, base)| value / base)))
            .collect();
        lines.push(Scaling {
            test: test.name.clone(),
            contender: kind.name().to_owned(),
            figure: test.primary,
            higher_is_better: test.higher_is_better,
            by_threads,
            ratios,
        });
    }
    lines
}

/// Sets each row's primary figure over direct's and over the best peer's at its thread
/// count.
fn add_ratios(rows: &mut [Row], primary: &str, higher_is_better: bool) {
    let primary_of = |row: &Row| {
        row.medians
            .get(primary)
            .copied()
            .filter(|value| *value > 0.0)
    };
    let direct = rows
        .iter()
        .find(|row| row.contender == "direct")
        .and_then(primary_of);
    let best_peer = |threads: Option<u32>| {
        rows.iter()
            .filter(|row| {
                row.threads == threads
                    && row
                        .contender
                        .parse::<ContenderKind>()
                        .is_ok_and(ContenderKind::is_peer)
            })
            .filter_map(primary_of)
            .reduce(|best, value| {
                if (value > best) == higher_is_better {
                    value
                } else {
                    best
                }
            })
    };
    let best_peers: Vec<Option<f64>> = rows.iter().map(|row| best_peer(row.threads)).collect();
    for (row, best_peer) in rows.iter_mut().zip(best_peers) {
        if let Some(value) = primary_of(row) {
            row.to_direct = direct.map(|direct| value / direct);
            row.to_best_peer = best_peer.map(|best| value / best);
        }
    }
}

fn summarize_row(kind: ContenderKind, samples: &[&Sample]) -> Row {
    let mut measured: Vec<&Figures> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut not_applicable = None;
    for sample in samples {
        match &sample.outcome {
            Outcome::Measured { figures } => measured.push(figures),
            Outcome::Failed { error } => errors.push(format!("round {}: {error}", sample.round)),
            Outcome::NotApplicable { reason } => not_applicable = Some(reason.clone()),
        }
    }
    let mut medians = Figures::new();
    let keys: std::collections::BTreeSet<&String> =
        measured.iter().flat_map(|f| f.keys()).collect();
    for key in keys {
        let values: Vec<f64> = measured
            .iter()
            .filter_map(|figures| figures.get(key))
            .copied()
            .collect();
        if let Some(median) = median(values) {
            medians.insert(key.clone(), median);
        }
    }
    let (status, note) = match (not_applicable, measured.is_empty(), errors.is_empty()) {
        (Some(reason), _, _) => ("n/a", Some(reason)),
        (None, true, _) => ("failed", errors.first().cloned()),
        (None, false, true) => ("ok", None),
        (None, false, false) => ("partial", Some(errors.join("; "))),
    };
    Row {
        contender: kind.name().into(),
        threads: None,
        label: kind.name().into(),
        status,
        note,
        rounds_measured: measured.len() as u32,
        medians,
        to_direct: None,
        to_best_peer: None,
    }
}

/// The median (mean of the middle two for an even count); `None` when empty.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|value| value.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(contender: &str, primary: Option<f64>) -> Row {
        let mut medians = Figures::new();
        if let Some(value) = primary {
            medians.insert("p99_us".into(), value);
        }
        let status = if primary.is_some() { "ok" } else { "failed" };
        Row {
            contender: contender.into(),
            threads: (contender != "direct").then_some(1),
            label: contender.into(),
            status,
            note: None,
            rounds_measured: u32::from(primary.is_some()),
            medians,
            to_direct: None,
            to_best_peer: None,
        }
    }

    #[test]
    fn ratios_compare_with_direct_and_the_best_peer_where_lower_is_better() {
        let mut rows = vec![
            row("direct", Some(50.0)),
            row("uringgost", Some(100.0)),
            row("haproxy", Some(200.0)),
            row("nginx", Some(80.0)),
            row("socat", None),
        ];
        add_ratios(&mut rows, "p99_us", false);
        assert_eq!(rows[1].to_direct, Some(2.0));
        assert_eq!(rows[1].to_best_peer, Some(1.25));
        assert_eq!(rows[3].to_best_peer, Some(1.0));
        assert_eq!(rows[4].to_direct, None);
    }

    #[test]
    fn the_best_peer_is_taken_at_the_same_thread_count() {
        let mut rows = vec![
            row("uringgost", Some(100.0)),
            row("nginx", Some(50.0)),
            row("uringgost", Some(150.0)),
            row("nginx", Some(300.0)),
        ];
        rows[2].threads = Some(2);
        rows[3].threads = Some(2);
        add_ratios(&mut rows, "p99_us", true);
        assert_eq!(rows[0].to_best_peer, Some(2.0));
        assert_eq!(rows[2].to_best_peer, Some(0.5));
    }

    #[test]
    fn a_contender_failing_every_round_is_reported_failed_with_the_reason() {
        let sample = Sample {
            round: 1,
            test: "connrate".into(),
            contender: "haproxy".into(),
            threads: Some(1),
            outcome: Outcome::Failed {
                error: "exited during start-up".into(),
            },
        };
        let row = summarize_row(ContenderKind::Haproxy, &[&sample]);
        assert_eq!(row.status, "failed");
        assert_eq!(row.note.as_deref(), Some("round 1: exited during start-up"));
        assert!(row.medians.is_empty());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
