//! Folding mergeable interventions (LoRA) into the base model's weights: W' = W + ΔW, written
//! as a model folder in the base model's own layout that loads with no adapter.

use crate::adapter::Loaded;
use crate::error::{Error, Result};
use crate::hooks::HookSurface;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

pub const WEIGHTS_FILE: &str = "model.safetensors";

/// What a merge changed.
pub struct MergeReport {
    /// `(weight name, max |ΔW|)` per merged module, in adapter order.
    pub merged: Vec<(String, f32)>,
    /// Files copied unchanged from the base model folder.
    pub copied: Vec<String>,
}

/// The `[out, in]` weight change of every intervention, by the base file's tensor name.
/// Fails, naming them, if any intervention cannot be merged (a ReFT edit is not a weight).
pub fn weight_deltas(loaded: &Loaded, names: &[String]) -> Result<Vec<(String, Tensor)>> {
    let model: &dyn HookSurface = loaded.backbone.as_ref();
    let mut out = Vec::new();
    let mut unmergeable = Vec::new();
    for a in &loaded.interventions.items {
        let Some(delta) = a.module.merged_weight_delta()? else {
            unmergeable.push(format!("`{}` ({})", a.name, a.module.kind()));
            continue;
        };
        let path = model
            .module_path(a.site)
            .ok_or_else(|| Error::hook(&a.site.to_string(), "this model has no weight for it"))?;
        let weight = format!("{path}.weight");
        // Checkpoints saved from task wrappers nest the encoder (`bert.encoder...`).
        let name = ["", "bert.", "roberta.", "model."]
            .iter()
            .map(|p| format!("{p}{weight}"))
            .find(|n| names.contains(n))
            .ok_or_else(|| Error::model(&loaded.model_dir, format!("no weight `{weight}` in {WEIGHTS_FILE}")))?;
        out.push((name, delta));
    }
    if !unmergeable.is_empty() {
        return Err(Error::Plugin(format!(
            "cannot merge into weights: {} edit representations, not weights; merge works on adapters of mergeable plugins such as `lora` (export keeps ReFT edits as graph nodes instead)",
            unmergeable.join(", ")
        )));
    }
    Ok(out)
}

/// Write the merged model into `out_dir`: every top-level file of the base model folder is
/// copied, and `model.safetensors` is rewritten (atomically) with the merged weights in their
/// original dtype.
pub fn merge(loaded: &Loaded, out_dir: &Path) -> Result<MergeReport> {
    let base = &loaded.model_dir;
    if out_dir.canonicalize().ok().is_some_and(|o| base.canonicalize().ok() == Some(o)) {
        return Err(Error::model(out_dir, "is the base model folder itself: choose another --out"));
    }
    let weights_path = base.join(WEIGHTS_FILE);
    if let crate::model::safetensors_file::WeightLayout::Sharded { index, .. } = crate::model::safetensors_file::weight_layout(base)? {
        return Err(Error::model(&index, "is a sharded checkpoint: merging into one is not supported yet (merge from a single model.safetensors)"));
    }
    let mut tensors: HashMap<String, Tensor> = candle_core::safetensors::load(&weights_path, &Device::Cpu)
        .map_err(|e| Error::model(&weights_path, format!("cannot read: {e}")))?;
    let names: Vec<String> = tensors.keys().cloned().collect();
    let deltas = weight_deltas(loaded, &names)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;

    let mut merged = Vec::new();
    for (name, delta) in deltas {
        let w = &tensors[&name];
        if w.dims() != delta.dims() {
            return Err(Error::Shape {
                context: format!("merging into `{name}`"),
                expected: format!("{:?}", w.dims()),
                got: delta.dims().to_vec(),
            });
        }
        let delta = delta.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        let max = delta.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let new = (w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?;
        tensors.insert(name.clone(), new);
        merged.push((name, max));
    }

    let mut copied = Vec::new();
    for entry in std::fs::read_dir(base).map_err(|e| Error::io(base, e))? {
        let entry = entry.map_err(|e| Error::io(base, e))?;
        let file_name = entry.file_name();
        let path = entry.path();
        // Dotfiles are local bookkeeping (e.g. reft's own `.complete` marker), not the model.
        if !path.is_file() || file_name == WEIGHTS_FILE || file_name.to_string_lossy().starts_with('.') {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        crate::io::write_atomic(&out_dir.join(&file_name), &bytes)?;
        copied.push(file_name.to_string_lossy().into_owned());
    }
    copied.sort();
    crate::io::save_safetensors_atomic(&tensors, &out_dir.join(WEIGHTS_FILE))?;
    Ok(MergeReport { merged, copied })
}
