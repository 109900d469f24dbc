//! Frozen-prefix caches kept on disk, so the trials of a sweep that share a model, a lowest
//! intervened layer and data build each cache once (`TrainOptions::prefix_cache_dir`). A file
//! is named by what determines its contents: the model (its fingerprint, and the size and
//! modification time of its weight files), the base dtype, the layer, and every example's
//! token ids. Anything else gets another name, never a stale cache.

use crate::error::{Error, Result};
use crate::model::{Backbone, PrefixCache};
use candle_core::{DType, Device};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The cache file for these inputs in `dir`.
pub fn path_for(dir: &Path, model_dir: &Path, dtype: DType, layer: usize, ids: &[Vec<u32>]) -> Result<PathBuf> {
    let mut h = Sha256::new();
    h.update(crate::adapter::fingerprint(model_dir)?.as_bytes());
    let mut weights: Vec<(String, u64, u128)> = Vec::new();
    let entries: Vec<PathBuf> = if model_dir.is_file() {
        vec![model_dir.to_path_buf()]
    } else {
        std::fs::read_dir(model_dir).map_err(|e| Error::io(model_dir, e))?.flatten().map(|e| e.path()).collect()
    };
    for p in entries {
        if p.extension().is_some_and(|e| e == "safetensors" || e == "gguf" || e == "bin") {
            let m = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?;
            let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
            weights.push((p.file_name().unwrap_or_default().to_string_lossy().into_owned(), m.len(), mtime));
        }
    }
    weights.sort();
    h.update(format!("{weights:?}|{dtype:?}|{layer}|{}", ids.len()).as_bytes());
    for row in ids {
        h.update((row.len() as u32).to_le_bytes());
        for id in row {
            h.update(id.to_le_bytes());
        }
    }
    let digest: String = h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    Ok(dir.join(format!("prefix-l{layer}-{digest}.safetensors")))
}

/// The cache of `ids` below `layer`: read from `dir` when there, else built and written there.
/// Returns the cache and whether it was read.
#[allow(clippy::too_many_arguments)]
pub fn load_or_build(
    dir: &Path,
    backbone: &dyn Backbone,
    model_dir: &Path,
    dtype: DType,
    layer: usize,
    ids: &[Vec<u32>],
    pad_id: u32,
    device: &Device,
) -> Result<(PrefixCache, bool)> {
    let path = path_for(dir, model_dir, dtype, layer, ids)?;
    let lengths: Vec<usize> = ids.iter().map(|r| r.len()).collect();
    if path.is_file() {
        if let Some(cache) = PrefixCache::load(&path, layer, &lengths, device)? {
            return Ok((cache, true));
        }
    }
    let cache = PrefixCache::build(backbone, layer, ids, pad_id, 64, device)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    cache.save(&path)?;
    Ok((cache, false))
}
