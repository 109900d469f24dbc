//! `sweep.jsonl`: one line per finished trial, appended as each ends (a killed sweep loses at
//! most the trial it was in, and resumes from the lines it finds).

use crate::error::{Error, Result};
use crate::task::metrics::TaskMetrics;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

pub const RECORDS_FILE: &str = "sweep.jsonl";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrialRecord {
    /// `c003-s42`: configuration 3, train.seed 42 (also the run folder's name).
    pub trial: String,
    pub config: usize,
    pub seed: u64,
    /// The swept keys' values, as `--set` gives them (`train.lr=0.001`).
    pub overrides: Vec<String>,
    /// The base recipe, when the sweep has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    /// The selection metric on `data.eval` (higher is better; see [`Direction`]).
    pub dev: f64,
    /// The same metric on `data.test`, reported, never used to select.
    pub test: Option<f64>,
    /// The same metric on each `data.transfer` set, by name (reported, never used to select).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub transfer: std::collections::BTreeMap<String, f64>,
    pub trainable_parameters: usize,
    pub seconds: f64,
    pub dev_metrics: Option<TaskMetrics>,
    pub test_metrics: Option<TaskMetrics>,
    /// The dev score ([`TaskMetrics::score`]: higher is better) after each epoch: what the
    /// median rule compares later trials with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dev_by_epoch: Vec<f64>,
    /// Set when the median rule stopped the trial after this epoch (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_after_epoch: Option<usize>,
}

/// Which way the selection metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Accuracy (classification).
    Higher,
    /// Response loss (causal LM).
    Lower,
}

/// The number a trial is selected by, and its direction: dev accuracy for a classifier,
/// dev response loss for a causal LM.
pub fn score(m: &TaskMetrics) -> (f64, Direction) {
    match m {
        TaskMetrics::Classification(c) => (c.accuracy, Direction::Higher),
        TaskMetrics::CausalLm(c) => (c.loss, Direction::Lower),
    }
}

pub fn read(dir: &Path) -> Result<Vec<TrialRecord>> {
    let path = dir.join(RECORDS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            // A line cut by a kill mid-write is the last one: that trial runs again.
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => return Err(Error::Other(format!("{}:{}: not a trial record: {e}", path.display(), i + 1))),
        }
    }
    Ok(out)
}

/// Append one record (one `write` of a whole line, flushed to disk).
pub fn append(dir: &Path, record: &TrialRecord) -> Result<()> {
    let path = dir.join(RECORDS_FILE);
    let mut line = serde_json::to_string(record).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
    // A previous run killed mid-line left no newline: start on a fresh line.
    let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
    if len > 0 {
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if text.last() != Some(&b'\n') {
            line.insert(0, '\n');
        }
    }
    f.write_all(line.as_bytes()).and_then(|_| f.sync_data()).map_err(|e| Error::io(&path, e))
}
