//! The per-run metrics log: one JSON object per line (`metrics.jsonl`).

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// Start a fresh log, or, when resuming, keep only the records up to update `keep_until`
    /// (what the checkpoint saw), so a resumed run's log reads like an unbroken one.
    pub fn open(path: &Path, keep_until: Option<usize>) -> Result<Self> {
        let kept = match keep_until {
            None => String::new(),
            Some(step) => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s as usize <= step)
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
