//! Frozen backbones with hook points.

pub mod bert;
mod prefix;
pub use prefix::PrefixCache;
mod hooks;
pub mod safetensors_file;
pub mod tokenizer;

pub use hooks::{Hooks, NoHooks};

use crate::error::{Error, Result};
use crate::hooks::{Component, HookSurface};
use candle_core::{DType, Device, Tensor};
use std::path::Path;

/// A tokenised, padded batch as a backbone consumes it.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[batch, seq]` u32 token ids.
    pub input_ids: Tensor,
    /// `[batch, seq]` 1 on real tokens, 0 on padding, as host rows (for position masks)…
    pub attention_rows: Vec<Vec<u32>>,
    /// …and as a `[batch, seq]` f32 tensor on the model's device.
    pub attention_mask: Tensor,
}

impl Batch {
    pub fn dims(&self) -> (usize, usize) {
        let d = self.input_ids.dims();
        (d[0], d[1])
    }
}

/// What every backbone offers: a forward pass that calls hooks at each hook point.
pub trait Backbone: HookSurface + Send + Sync {
    /// Architecture name (`bert`, `llama`).
    fn arch(&self) -> &str;
    /// Width of the residual stream.
    fn hidden_size(&self) -> usize;
    /// Number of scalars in the frozen weights.
    fn num_parameters(&self) -> usize;
    /// The final hidden states `[batch, seq, hidden]`, with `hooks` applied at each point.
    fn forward(&self, batch: &Batch, hooks: &dyn Hooks) -> Result<Tensor>;
    /// The embeddings and layers `0..layer`: what layer `layer` reads (its `block_input`
    /// before any hook there). A frozen prefix below every intervention gives the same
    /// result every epoch, so a trainer can compute it once and reuse it.
    fn forward_until(&self, batch: &Batch, layer: usize, hooks: &dyn Hooks) -> Result<Tensor>;
    /// Layers `layer..` on `h`, the input of layer `layer`: the final hidden states.
    fn forward_from(&self, h: Tensor, layer: usize, batch: &Batch, hooks: &dyn Hooks) -> Result<Tensor>;
    /// A sentence vector from the first token through the checkpoint's pretrained pooler
    /// (BERT's dense + tanh), if it has one.
    fn pool_first(&self, _hidden: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// The ONNX twin of [`Backbone::forward`]: nodes from int64 `ids` and the float
    /// attention `mask` (both `[batch, seq]`) to the final hidden states, calling `hooks` at
    /// each hook point. Returns the hidden states' value name.
    fn to_onnx(&self, g: &mut crate::export::Graph, ids: &str, mask: &str, hooks: &mut dyn crate::export::ExportHooks) -> Result<String> {
        let _ = (g, ids, mask, hooks);
        Err(Error::Other(format!("architecture `{}` cannot be exported to ONNX yet", self.arch())))
    }
    /// The ONNX twin of [`Backbone::pool_first`].
    fn pool_first_onnx(&self, _g: &mut crate::export::Graph, _hidden: &str) -> Result<Option<String>> {
        Ok(None)
    }
}

/// What can be known about a model folder without loading its weights.
pub struct ModelInfo {
    pub arch: String,
    pub config: ModelConfig,
    /// Scalars in the frozen weights (from the weight file's header).
    pub num_parameters: usize,
}

/// A parsed `config.json`, one variant per supported architecture.
pub enum ModelConfig {
    Bert(bert::BertConfig),
}

impl ModelConfig {
    pub fn hidden_size(&self) -> usize {
        match self {
            ModelConfig::Bert(c) => c.hidden_size,
        }
    }
}

impl HookSurface for ModelConfig {
    fn num_layers(&self) -> usize {
        match self {
            ModelConfig::Bert(c) => c.num_layers(),
        }
    }
    fn component_dims(&self, c: Component) -> Option<(usize, usize)> {
        match self {
            ModelConfig::Bert(b) => b.component_dims(c),
        }
    }
    fn module_path(&self, site: crate::hooks::Site) -> Option<String> {
        match self {
            ModelConfig::Bert(b) => b.module_path(site),
        }
    }
}

fn require_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::model(
            dir,
            "model folder not found (run `reft setup` to fetch the default models)",
        ));
    }
    Ok(())
}

/// Read a model folder's config and weight header, without loading the weights.
pub fn inspect(dir: &Path) -> Result<ModelInfo> {
    require_dir(dir)?;
    let config_path = dir.join("config.json");
    let config = bert::BertConfig::load(&config_path)?;
    let weights = dir.join("model.safetensors");
    if !weights.exists() {
        return Err(Error::model(&weights, "weight file not found"));
    }
    Ok(ModelInfo {
        arch: "bert".into(),
        num_parameters: safetensors_file::count_float_parameters(&weights)?,
        config: ModelConfig::Bert(config),
    })
}

/// Load a model folder's frozen backbone.
pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Box<dyn Backbone>> {
    require_dir(dir)?;
    Ok(Box::new(bert::Bert::load(dir, dtype, device)?))
}

/// The tokenizer of a model folder.
pub fn load_tokenizer(dir: &Path) -> Result<tokenizer::TextTokenizer> {
    tokenizer::TextTokenizer::load(&dir.join("tokenizer.json"))
}
