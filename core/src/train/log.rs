//! The per-run metrics log: one JSON object per line (`metrics.jsonl`).

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

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

    pub fn write(&self, record: serde_json::Value) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        writeln!(f, "{record}").map_err(|e| Error::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
