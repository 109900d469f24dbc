//! The per-run metrics log: one JSON object per line (`metrics.jsonl`), each a [`Record`].
//! The trainer writes these types and `reft plot` reads the same ones back.

use super::TrainSummary;
use crate::error::{Error, Result};
use crate::task::metrics::TaskMetrics;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One line of `metrics.jsonl`, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    Step(StepRecord),
    Epoch(EpochRecord),
    Final(FinalRecord),
}

/// Every `log_every` updates: the loss of the last batch and how the update went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: usize,
    /// 1-based.
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub examples_per_sec: f64,
}

/// At the end of each epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub step: usize,
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Metrics on `data.eval`, none without an eval file.
    pub dev: Option<TaskMetrics>,
    /// Whether this epoch's adapter is the best so far (and was saved).
    pub best: bool,
    pub train_seconds: f64,
}

/// Once, when the run is done: the summary (as in `summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalRecord {
    pub step: usize,
    pub summary: TrainSummary,
}

impl Record {
    pub fn step(&self) -> usize {
        match self {
            Record::Step(r) => r.step,
            Record::Epoch(r) => r.step,
            Record::Final(r) => r.step,
        }
    }
}

pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// Start a fresh log, or, when resuming, keep only what the checkpoint saw: records up to
    /// update `step`, epoch records of the `epochs_done` finished epochs, and no `final`
    /// record. A run killed between an epoch's record and its checkpoint, or resumed after it
    /// finished, then logs exactly what an unbroken run logs.
    pub fn open(path: &Path, resume_from: Option<(usize, usize)>) -> Result<Self> {
        let kept = match resume_from {
            None => String::new(),
            Some((step, epochs_done)) => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else { return false };
                    let in_time = v["step"].as_u64().is_some_and(|s| s as usize <= step);
                    match v["type"].as_str() {
                        Some("final") => false,
                        Some("epoch") => in_time && v["epoch"].as_u64().is_some_and(|e| e as usize <= epochs_done),
                        _ => in_time,
                    }
                })
                .map(|l| format!("{l}\n"))
                .collect(),
        };
        crate::io::write_atomic(path, kept.as_bytes())?;
        Ok(MetricsLog { path: path.to_path_buf() })
    }

    pub fn write(&self, record: &Record) -> Result<()> {
        let line = serde_json::to_string(record).map_err(|e| Error::Other(format!("metrics record: {e}")))?;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        writeln!(f, "{line}").map_err(|e| Error::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        use crate::task::metrics::{ClassificationMetrics, LmMetrics};
        let summary = TrainSummary {
            run_dir: "out/x".into(),
            best_epoch: 2,
            dev: Some(TaskMetrics::CausalLm(LmMetrics::from_sum(12.0, 8, 2))),
            test: None,
            transfer: Default::default(),
            trainable_parameters: 10,
            steps: 8,
            seconds_per_epoch: 1.5,
            dev_by_epoch: vec![-1.5],
            stopped_after_epoch: Some(1),
        };
        let records = [
            Record::Step(StepRecord { step: 4, epoch: 1, loss: 0.7, lr: 1e-3, grad_norm: 0.2, examples_per_sec: 30.0 }),
            Record::Epoch(EpochRecord {
                step: 8,
                epoch: 1,
                train_loss: 0.6,
                dev: Some(TaskMetrics::Classification(ClassificationMetrics { accuracy: 0.75, macro_f1: 0.7, examples: 4, loss: 0.5 })),
                best: true,
                train_seconds: 3.0,
            }),
            Record::Epoch(EpochRecord { step: 8, epoch: 2, train_loss: 0.5, dev: None, best: false, train_seconds: 6.0 }),
            Record::Final(FinalRecord { step: 8, summary }),
        ];
        for r in records {
            let line = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r, "{line}");
        }
        let bad = r#"{"type":"epoch","step":1,"epoch":1,"train_loss":0.5,"dev":{"accuracy":"high"},"best":true,"train_seconds":1}"#;
        let e = serde_json::from_str::<Record>(bad).unwrap_err().to_string();
        assert!(e.contains("\"accuracy\" should be a number"), "{e}");
    }

    #[test]
    fn a_resumed_log_keeps_only_what_the_checkpoint_saw() {
        let dir = std::env::temp_dir().join(format!("reft-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        // Killed after epoch 2's record was written but before its checkpoint (at update 8,
        // one epoch done), and after a `final` record of an earlier finished attempt.
        let lines = [
            r#"{"type":"step","step":4,"loss":0.7}"#,
            r#"{"type":"epoch","step":4,"epoch":1,"train_loss":0.7}"#,
            r#"{"type":"step","step":8,"loss":0.6}"#,
            r#"{"type":"epoch","step":8,"epoch":2,"train_loss":0.6}"#,
            r#"{"type":"step","step":12,"loss":0.5}"#,
            r#"{"type":"final","step":8}"#,
        ];
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        MetricsLog::open(&path, Some((8, 1))).unwrap();
        let kept = std::fs::read_to_string(&path).unwrap();
        assert_eq!(kept, [lines[0], lines[1], lines[2]].join("\n") + "\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
