//! Training checkpoints: everything needed to continue a run exactly where it stopped.
//! A checkpoint folder is written whole beside the old one and swapped in by rename, so
//! a kill at any moment leaves either the old or the new checkpoint, never a mix.

use super::adamw::AdamW;
use crate::error::{Error, Result};
use crate::intervention::NamedVar;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CHECKPOINT_DIR: &str = "checkpoint";

/// Where the run stands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// Updates done.
    pub global_step: usize,
    /// The epoch in progress (0-based) and how many of its batches are done.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    /// The best epoch's score: dev accuracy, minus the dev loss for a causal LM, or minus
    /// the mean training loss without dev data (the name is kept so old checkpoints resume).
    pub best_dev_accuracy: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Dev metrics of each finished epoch.
    pub history: Vec<serde_json::Value>,
    /// Training seconds spent so far (excluding evaluation).
    pub train_seconds: f64,
    /// Sum of training losses in the epoch so far (for the epoch's mean loss).
    pub epoch_loss_sum: f64,
    /// The epoch (1-based) after which an early-stopping rule ended the run; a resumed run
    /// that was stopped stays stopped. Absent in checkpoints of older reft.
    #[serde(default)]
    pub stopped_after_epoch: Option<usize>,
}

pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join(CHECKPOINT_DIR)
}

/// Write a checkpoint of `params`, the optimizer and `progress` into `run_dir/checkpoint`.
pub fn save(run_dir: &Path, params: &[(String, NamedVar)], opt: &AdamW, progress: &Progress) -> Result<()> {
    let final_dir = path(run_dir);
    let tmp = run_dir.join(format!(".{CHECKPOINT_DIR}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, v) in params {
        tensors.insert(format!("param.{name}"), v.var.as_tensor().clone());
    }
    for (name, m, v) in &opt.moments {
        tensors.insert(format!("adam_m.{name}"), m.clone());
        tensors.insert(format!("adam_v.{name}"), v.clone());
    }
    crate::io::save_safetensors_atomic(&tensors, &tmp.join("state.safetensors"))?;
    let meta = serde_json::json!({ "progress": progress, "adam_t": opt.t });
    crate::io::write_atomic(&tmp.join("progress.json"), serde_json::to_string_pretty(&meta).unwrap().as_bytes())?;
    // Swap: old -> .old, tmp -> checkpoint, drop .old.
    let old = run_dir.join(format!(".{CHECKPOINT_DIR}.old"));
    let _ = std::fs::remove_dir_all(&old);
    if final_dir.exists() {
        std::fs::rename(&final_dir, &old).map_err(|e| Error::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Restore `params` and the optimizer from `run_dir`'s checkpoint (or the previous one,
/// if a swap was interrupted); return the progress it records.
pub fn load(run_dir: &Path, params: &[(String, NamedVar)], opt: &mut AdamW, device: &Device) -> Result<Progress> {
    let mut dir = path(run_dir);
    if !dir.exists() {
        let old = run_dir.join(format!(".{CHECKPOINT_DIR}.old"));
        if old.exists() {
            dir = old;
        } else {
            return Err(Error::Other(format!(
                "{}: no checkpoint to resume from (expected {}/)",
                run_dir.display(),
                CHECKPOINT_DIR
            )));
        }
    }
    let meta_path = dir.join("progress.json");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?,
    )
    .map_err(|e| Error::model(&meta_path, e.to_string()))?;
    let progress: Progress = serde_json::from_value(meta["progress"].clone())
        .map_err(|e| Error::model(&meta_path, e.to_string()))?;
    let state_path = dir.join("state.safetensors");
    let file = crate::model::safetensors_file::WeightFile::load(&state_path, params.first().map_or(candle_core::DType::F32, |p| p.1.var.dtype()), device)?;
    for (name, v) in params {
        v.var.set(&file.get(&format!("param.{name}"), v.var.dims())?)?;
    }
    for (name, m, v) in opt.moments.iter_mut() {
        *m = file.get(&format!("adam_m.{name}"), m.dims())?;
        *v = file.get(&format!("adam_v.{name}"), v.dims())?;
    }
    opt.t = meta["adam_t"].as_u64().unwrap_or(0);
    Ok(progress)
}
