//! Frozen backbones with hook points.

pub mod bert;
mod causal;
mod kv_cache;
pub mod llama;
mod prefix;
pub use prefix::PrefixCache;
pub mod safetensors_file;
pub mod tokenizer;

pub use causal::CausalLm;
pub use crate::batch::Batch;
pub use crate::hooks::{Hooks, NoHooks};
pub use kv_cache::KvCache;

use crate::error::{Error, Result};
use crate::hooks::{Component, HookSurface};
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};

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
    /// [`Backbone::forward_from`] for a caller that reads only the first token of the final
    /// hidden states (a `[CLS]`-pooled classifier): `[batch, 1, hidden]`, equal to
    /// `forward_from(..).narrow(1, 0, 1)`. A backbone may skip work that cannot reach that
    /// token; this default computes everything and narrows.
    fn forward_from_to_first_token(&self, h: Tensor, layer: usize, batch: &Batch, hooks: &dyn Hooks) -> Result<Tensor> {
        Ok(self.forward_from(h, layer, batch, hooks)?.narrow(1, 0, 1)?)
    }
    /// A sentence vector from the first token through the checkpoint's pretrained pooler
    /// (BERT's dense + tanh), if it has one.
    fn pool_first(&self, _hidden: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// The ONNX twin of [`Backbone::forward`]: nodes from int64 `ids` and the float
    /// attention `mask` (both `[batch, seq]`) to the final hidden states, calling `hooks` at
    /// each hook point. Returns the hidden states' value name.
    fn to_onnx(&self, g: &mut crate::onnx::Graph, ids: &str, mask: &str, hooks: &mut dyn crate::onnx::ExportHooks) -> Result<String> {
        let _ = (g, ids, mask, hooks);
        Err(Error::Other(format!("architecture `{}` cannot be exported to ONNX yet", self.arch())))
    }
    /// The ONNX twin of [`Backbone::forward_from_to_first_token`]: the final hidden states of
    /// the first token alone, `[batch, 1, hidden]`. This default emits every token and slices.
    fn to_onnx_first_token(&self, g: &mut crate::onnx::Graph, ids: &str, mask: &str, hooks: &mut dyn crate::onnx::ExportHooks) -> Result<String> {
        let hidden = self.to_onnx(g, ids, mask, hooks)?;
        Ok(crate::onnx::first_token(g, &hidden))
    }
    /// The ONNX twin of [`Backbone::pool_first`].
    fn pool_first_onnx(&self, _g: &mut crate::onnx::Graph, _hidden: &str) -> Result<Option<String>> {
        Ok(None)
    }
    /// The same model as a causal LM (next-token logits, KV-cached decoding), if it is one.
    fn as_causal_lm(&self) -> Option<&dyn CausalLm> {
        None
    }
}

/// What can be known about a model folder without loading its weights.
pub struct ModelInfo {
    pub arch: String,
    pub config: ModelConfig,
    /// Scalars in the frozen weights (from the weight file's header).
    pub num_parameters: usize,
}

/// A parsed model config, one variant per supported architecture.
pub enum ModelConfig {
    Bert(bert::BertConfig),
    Llama(llama::LlamaConfig),
}

impl ModelConfig {
    pub fn hidden_size(&self) -> usize {
        match self {
            ModelConfig::Bert(c) => c.hidden_size,
            ModelConfig::Llama(c) => c.hidden_size,
        }
    }

    /// The longest sequence the model's position embeddings (or RoPE tables) cover (for
    /// RoBERTa, less the positions at and below its pad id).
    pub fn max_positions(&self) -> usize {
        match self {
            ModelConfig::Bert(c) => c.max_tokens(),
            ModelConfig::Llama(c) => c.max_position_embeddings,
        }
    }

    fn surface(&self) -> &dyn HookSurface {
        match self {
            ModelConfig::Bert(c) => c,
            ModelConfig::Llama(c) => c,
        }
    }
}

impl HookSurface for ModelConfig {
    fn num_layers(&self) -> usize {
        self.surface().num_layers()
    }
    fn component_dims(&self, c: Component) -> Option<(usize, usize)> {
        self.surface().component_dims(c)
    }
    fn module_path(&self, site: crate::hooks::Site) -> Option<String> {
        self.surface().module_path(site)
    }
}

/// Every size of a model config in `1..=2^24`: a corrupt config fails here, with the key
/// named, before anything is allocated from it.
pub(crate) fn check_sizes(sizes: &[(&str, usize)]) -> std::result::Result<(), String> {
    match sizes.iter().find(|(_, v)| *v == 0 || *v > 1 << 24) {
        Some((name, v)) => Err(format!("`{name}` = {v} is out of range")),
        None => Ok(()),
    }
}

/// Where a model's files are, by format. A model path is a folder or a `.gguf` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFiles {
    /// A Hugging Face BERT-family folder (`config.json`, `model.safetensors`, `tokenizer.json`).
    Bert(PathBuf),
    /// A Hugging Face llama-family folder (`config.json` with `model_type` llama, mistral,
    /// qwen2 or qwen3, `model.safetensors` or shards, `tokenizer.json`).
    LlamaHf(PathBuf),
    /// A GGUF file (weights, config and tokenizer in one file).
    Gguf(PathBuf),
}

/// Decide what `path` holds: a `.gguf` file; a folder whose `config.json` says
/// `model_type: llama`; a folder without `config.json` holding exactly one `.gguf` file;
/// otherwise a BERT-family folder (whose loader reports anything missing).
pub fn locate(path: &Path) -> Result<ModelFiles> {
    if path.is_file() {
        if llama::gguf::is_gguf_name(path) {
            return Ok(ModelFiles::Gguf(path.to_path_buf()));
        }
        return Err(Error::model(path, "a model path is a folder or a .gguf file"));
    }
    if !path.is_dir() {
        return Err(Error::model(
            path,
            "model folder not found (run `reft setup` to fetch the default models)",
        ));
    }
    let config = path.join("config.json");
    if config.is_file() {
        // Only the architecture is read here; a config.json that does not parse goes to the
        // BERT loader, whose error says where.
        let model_type = std::fs::read_to_string(&config)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("model_type").and_then(|m| m.as_str()).map(str::to_string));
        return Ok(match model_type.as_deref() {
            // The llama-family decoders (llama, mistral, qwen2, qwen3, phi3) share one backbone.
            Some(t) if llama::config::Family::from_model_type(t).is_some() => ModelFiles::LlamaHf(path.to_path_buf()),
            _ => ModelFiles::Bert(path.to_path_buf()),
        });
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    let mut ggufs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && llama::gguf::is_gguf_name(p))
        .collect();
    ggufs.sort();
    match ggufs.len() {
        0 => Ok(ModelFiles::Bert(path.to_path_buf())),
        1 => Ok(ModelFiles::Gguf(ggufs.remove(0))),
        _ => Err(Error::model(path, format!(
            "holds several .gguf files ({}): name one",
            ggufs.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Read a model's config and weight header, without loading the weights.
pub fn inspect(path: &Path) -> Result<ModelInfo> {
    let (dir, config) = match locate(path)? {
        ModelFiles::Gguf(file) => {
            let mut g = llama::GgufFile::open(&file)?;
            let config = llama::LlamaConfig::from_gguf(&mut g)?;
            return Ok(ModelInfo { arch: "llama".into(), num_parameters: g.num_parameters(), config: ModelConfig::Llama(config) });
        }
        ModelFiles::LlamaHf(dir) => {
            let c = llama::LlamaConfig::load_json(&dir.join("config.json"))?;
            (dir, ModelConfig::Llama(c))
        }
        ModelFiles::Bert(dir) => {
            let c = bert::BertConfig::load(&dir.join("config.json"))?;
            (dir, ModelConfig::Bert(c))
        }
    };
    let weights = safetensors_file::weight_layout(&dir)?;
    Ok(ModelInfo {
        arch: match config {
            ModelConfig::Bert(_) => "bert",
            ModelConfig::Llama(_) => "llama",
        }
        .into(),
        num_parameters: safetensors_file::count_layout_parameters(&weights)?,
        config,
    })
}

/// Load a model's frozen backbone (a folder, or a `.gguf` file: see [`locate`]).
pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Box<dyn Backbone>> {
    Ok(match locate(path)? {
        ModelFiles::Bert(dir) => Box::new(bert::Bert::load(&dir, dtype, device)?),
        ModelFiles::LlamaHf(dir) => Box::new(llama::Llama::from_hf(&dir, dtype, device)?),
        ModelFiles::Gguf(file) => Box::new(llama::Llama::from_gguf(&file, dtype, device)?),
    })
}

/// The tokenizer of a model: its folder's `tokenizer.json`, or built from a GGUF file's
/// metadata.
pub fn load_tokenizer(path: &Path) -> Result<tokenizer::TextTokenizer> {
    match locate(path)? {
        ModelFiles::Gguf(file) => llama::tokenizer::load(&file),
        ModelFiles::Bert(dir) | ModelFiles::LlamaHf(dir) => tokenizer::TextTokenizer::load(&dir.join("tokenizer.json")),
    }
}
