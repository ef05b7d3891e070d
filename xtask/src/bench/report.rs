//! One scenario's results: `target/bench/<scenario>.json` and a table on
//! stdout.
//!
//! The JSON file:
//!
//! ```text
//! {
//!   "format": 1,
//!   "scenario": "place_order",
//!   "quick": false,                      // --quick: figures not meaningful
//!   "skipped": null,                     // or why the scenario did not run
//!   "machine": {cores, cpu_model, memory_mb, kernel, date, load_average,
//!               git_commit, git_dirty, rustc},
//!   "load_average": {"before": [1, 5, 15 min], "after": [...]},
//!   "elapsed_s": 123.4,                  // the scenario's wall time
//!   "server": {server_version, fsync, synchronous_commit, shared_buffers, ...},
//!   "plan": {...},                       // sizes and durations of this run
//!   "profiled": false,                   // --perf: one run per scenario sampled
//!   "config": {...},                     // what this scenario did
//!   "results": {...},                    // every figure (scenario-specific)
//!   "targets": [{"name", "goal", "measured", "met": true|false|null, "note"}],
//!   "notes": ["..."]
//! }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::Plan;
use super::procstat::round3;

/// What every verdict of a `--quick` run says.
const QUICK_NOTE: &str = "--quick: tiny counts, the verdict is not meaningful";

/// Format version of the JSON files.
const FORMAT: u32 = 1;

/// A target of the issue, and whether this run met it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Short name, e.g. `persistence_overhead_c64`.
    pub name: String,
    /// The goal, in words.
    pub goal: String,
    /// What was measured, in words.
    pub measured: String,
    /// `None` when it could not be measured (skipped, quick run, errors).
    pub met: Option<bool>,
    /// Why, when missed or unknown.
    pub note: Option<String>,
}

impl Target {
    /// A target with its verdict.
    pub fn new(name: &str, goal: &str, measured: String, met: Option<bool>) -> Target {
        Target {
            name: name.into(),
            goal: goal.into(),
            measured,
            met,
            note: None,
        }
    }

    /// Adds why it was missed (or not measured).
    pub fn note(mut self, note: impl Into<String>) -> Target {
        self.note = Some(note.into());
        self
    }

    fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "n/a",
        }
    }
}

/// A plain text table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Column headings.
    pub headers: Vec<String>,
    /// Rows, as many cells as headings.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headings.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints it, columns aligned: numbers right, text left.
    pub fn print(&self) {
        let columns = self.headers.len();
        let numeric: Vec<bool> = (0..columns)
            .map(|i| {
                self.rows.iter().all(|row| {
                    row.get(i)
                        .is_none_or(|c| c == "-" || c.parse::<f64>().is_ok())
                })
            })
            .collect();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut text = String::from("    ");
            for (i, cell) in cells.iter().enumerate().take(columns) {
                if i > 0 {
                    text.push_str("  ");
                }
                if numeric[i] {
                    text.push_str(&format!("{cell:>width$}", width = widths[i]));
                } else {
                    text.push_str(&format!("{cell:<width$}", width = widths[i]));
                }
            }
            println!("{}", text.trim_end());
        };
        line(&self.headers);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(&rule);
        for row in &self.rows {
            line(row);
        }
    }
}

/// A scenario's results.
#[derive(Debug, Clone)]
pub struct Report {
    /// Its name, also the file name.
    pub scenario: &'static str,
    /// What it did.
    pub config: Value,
    /// Every figure.
    pub results: Value,
    /// The issue's targets it measures.
    pub targets: Vec<Target>,
    /// Remarks for the reader.
    pub notes: Vec<String>,
    /// Why it did not run, when it did not.
    pub skipped: Option<String>,
    /// The stdout table(s).
    pub tables: Vec<(String, Table)>,
    envelope: Value,
}

impl Report {
    /// An empty report for `scenario`.
    pub fn new(scenario: &'static str) -> Report {
        Report {
            scenario,
            config: json!({}),
            results: json!({}),
            targets: Vec::new(),
            notes: Vec::new(),
            skipped: None,
            tables: Vec::new(),
            envelope: json!({}),
        }
    }

    /// A report that says the scenario did not run, and why.
    pub fn skipped(scenario: &'static str, why: &str) -> Report {
        let mut report = Report::new(scenario);
        report.skipped = Some(why.into());
        report
    }

    /// Adds what is common to every file: machine, load, plan, server.
    pub fn finish(
        &mut self,
        machine: &Value,
        plan: &Plan,
        server: &Value,
        load_before: Vec<f64>,
        elapsed: Duration,
        profiled: bool,
    ) {
        self.envelope = json!({
            "profiled": profiled,
            "machine": machine,
            "load_average": {"before": load_before, "after": super::machine::load_average()},
            "elapsed_s": round3(elapsed.as_secs_f64()),
            "server": server,
            "plan": plan.to_json(),
        });
        if plan.quick {
            for target in &mut self.targets {
                if target.met.is_some() {
                    target.note =
                        Some("--quick: tiny counts, the verdict is not meaningful".into());
                }
            }
        }
    }

    /// The whole JSON document.
    pub fn to_json(&self) -> Value {
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(|t| {
                json!({
                    "name": t.name, "goal": t.goal, "measured": t.measured,
                    "met": t.met, "note": t.note,
                })
            })
            .collect();
        json!({
            "format": FORMAT,
            "scenario": self.scenario,
            "quick": self.envelope["plan"]["quick"],
            "skipped": self.skipped,
            "machine": self.envelope["machine"],
            "load_average": self.envelope["load_average"],
            "elapsed_s": self.envelope["elapsed_s"],
            "server": self.envelope["server"],
            "plan": self.envelope["plan"],
            "profiled": self.envelope["profiled"],
            "config": self.config,
            "results": self.results,
            "targets": targets,
            "notes": self.notes,
        })
    }

    /// Writes `<out>/<scenario>.json`.
    pub fn write(&self, out: &Path) -> anyhow::Result<PathBuf> {
        let path = out.join(format!("{}.json", self.scenario));
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// Prints the tables, targets and notes.
    pub fn print(&self) {
        if let Some(why) = &self.skipped {
            println!("    {why}");
            return;
        }
        for (title, table) in &self.tables {
            println!("\n    {title}");
            table.print();
        }
        for note in &self.notes {
            println!("    note: {note}");
        }
    }
}

/// The targets of every report, one table.
pub fn print_targets(reports: &[Report]) {
    let mut table = Table::new(&["scenario", "target", "goal", "measured", "verdict"]);
    for report in reports {
        if let Some(why) = &report.skipped {
            table.row(vec![
                report.scenario.into(),
                "-".into(),
                "-".into(),
                why.clone(),
                "skipped".into(),
            ]);
        }
        for target in &report.targets {
            table.row(vec![
                report.scenario.into(),
                target.name.clone(),
                target.goal.clone(),
                target.measured.clone(),
                target.verdict().into(),
            ]);
        }
    }
    table.print();
    let mut quick = false;
    for report in reports {
        for target in &report.targets {
            match &target.note {
                Some(note) if note == QUICK_NOTE => quick = true,
                Some(note) => println!("    {}: {note}", target.name),
                None => {}
            }
        }
    }
    if quick {
        println!("    {QUICK_NOTE}");
    }
}

/// `x` with `digits` decimals.
pub fn fmt(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.digits$}")
    }
}
