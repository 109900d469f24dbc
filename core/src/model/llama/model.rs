//! The llama decoder: embeddings, pre-norm blocks, final RMSNorm, LM head (tied or not).

use super::block;
use super::config::LlamaConfig;
use super::gguf::GgufFile;
use super::rope::Rope;
use super::weights::LlamaWeights;
use crate::error::{Error, Result};
use crate::hooks::{Component, HookSurface, Site};
use crate::model::safetensors_file::WeightFile;
use crate::model::{Backbone, Batch, CausalLm, Hooks, KvCache};
use candle_core::{DType, Device, Tensor};
use std::path::Path;

pub struct Llama {
    pub config: LlamaConfig,
    weights: LlamaWeights,
    rope: Rope,
    device: Device,
}

/// Additive mask value for a key a query may not see: large enough that its softmax weight
/// is exactly 0 in f32, finite so that a row with no visible key gives no NaN.
const MASKED: f32 = -1e9;

impl Llama {
    /// Load a GGUF file (weights dequantised to `dtype`).
    pub fn from_gguf(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let mut file = GgufFile::open(path)?;
        let config = LlamaConfig::from_gguf(&mut file)?;
        let weights = LlamaWeights::from_gguf(&config, &mut file, dtype, device)?;
        Ok(Self::new(config, weights, device))
    }

    /// Load a Hugging Face llama folder: `config.json` and `model.safetensors` (or its shards).
    pub fn from_hf(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = LlamaConfig::load_json(&dir.join("config.json"))?;
        let layout = crate::model::safetensors_file::weight_layout(dir)?;
        let mut file = WeightFile::load_layout(&layout, dtype, device)?;
        if config.family == super::config::Family::Phi3 {
            super::weights::split_phi3_projections(&config, &mut file)?;
        }
        let weights = LlamaWeights::from_safetensors(&config, &mut file)?;
        Ok(Self::new(config, weights, device))
    }

    pub fn new(config: LlamaConfig, weights: LlamaWeights, device: &Device) -> Self {
        let rope = Rope::new(config.head_dim, config.rope_theta, &config.rope_scaling);
        Llama { config, weights, rope, device: device.clone() }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.weights.embed.dtype()
    }

    fn embed(&self, batch: &Batch) -> Result<Tensor> {
        let (b, s) = batch.dims();
        let ids = batch.input_ids.flatten_all()?;
        let max_id = ids.max(0)?.to_scalar::<u32>()? as usize;
        if max_id >= self.config.vocab_size {
            return Err(Error::Other(format!(
                "token id {max_id} is outside the vocabulary of {} tokens (wrong tokenizer for this model?)",
                self.config.vocab_size
            )));
        }
        Ok(self.weights.embed.index_select(&ids, 0)?.reshape((b, s, ()))?)
    }

    /// The additive attention mask `[b, 1, s, offset + s]` for `s` new tokens after `offset`
    /// cached ones: query `i` sees key `j` when `j ≤ offset + i` (causal) and key `j` is a
    /// real token (`rows`: the key mask of all `offset + s` positions).
    fn bias(&self, rows: &[Vec<u32>], offset: usize, s: usize, dtype: DType) -> Result<Tensor> {
        let t = offset + s;
        let mut v = Vec::with_capacity(rows.len() * s * t);
        if let Some(row) = rows.iter().find(|r| r.len() != t) {
            return Err(Error::Shape { context: "attention mask row".into(), expected: format!("{t} positions"), got: vec![row.len()] });
        }
        for row in rows {
            for i in 0..s {
                v.extend((0..t).map(|j| if j <= offset + i && row[j] != 0 { 0.0 } else { MASKED }));
            }
        }
        Ok(Tensor::from_vec(v, (rows.len(), 1, s, t), &self.device)?.to_dtype(dtype)?)
    }

    /// The frozen weights (for ONNX export, which writes them as initializers).
    pub(crate) fn weights(&self) -> &LlamaWeights {
        &self.weights
    }

    /// RoPE `cos`/`sin` tables `[len, head_dim]` (f32) for positions `0..len`, exactly the
    /// values the forward pass uses (ONNX export stores them and gathers rows by position).
    pub(crate) fn rope_tables(&self, len: usize) -> Result<(Tensor, Tensor)> {
        Ok(self.rope.tables(0, len, DType::F32, &Device::Cpu)?)
    }

    fn check_length(&self, end: usize) -> Result<()> {
        if end > self.config.max_position_embeddings {
            return Err(Error::Other(format!(
                "sequence of {end} tokens is longer than the model's context of {} tokens",
                self.config.max_position_embeddings
            )));
        }
        Ok(())
    }

    /// Layers `range` on `h` for `s` tokens after `cache`'s positions (none without a cache).
    /// Returns the hidden states and every layer's keys/values (for the cache).
    fn layers(
        &self,
        mut h: Tensor,
        range: std::ops::Range<usize>,
        rows: &[Vec<u32>],
        cache: Option<&KvCache>,
        hooks: &dyn Hooks,
    ) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
        let (_, s, _) = h.dims3()?;
        let offset = cache.map_or(0, |c| c.len());
        self.check_length(offset + s)?;
        let dtype = h.dtype();
        let (cos, sin) = self.rope.tables(offset, s, dtype, &self.device)?;
        let bias = self.bias(rows, offset, s, dtype)?;
        let mut kv = Vec::with_capacity(range.len());
        for l in range {
            let past = cache.and_then(|c| c.layer(l));
            let out = block::forward(l, &self.weights.layers[l], &self.config, h, (&cos, &sin), &bias, past, hooks)?;
            h = out.hidden;
            kv.push((out.keys, out.values));
        }
        Ok((h, kv))
    }
}

impl HookSurface for Llama {
    fn num_layers(&self) -> usize {
        self.config.num_layers()
    }
    fn component_dims(&self, c: Component) -> Option<(usize, usize)> {
        self.config.component_dims(c)
    }
    fn module_path(&self, site: Site) -> Option<String> {
        self.config.module_path(site)
    }
}

impl Backbone for Llama {
    fn arch(&self) -> &str {
        "llama"
    }
    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
    fn num_parameters(&self) -> usize {
        self.weights.num_parameters
    }

    /// The final hidden states after the last RMSNorm (Hugging Face's `last_hidden_state`).
    fn forward(&self, batch: &Batch, hooks: &dyn Hooks) -> Result<Tensor> {
        let h = self.forward_until(batch, 0, hooks)?;
        self.forward_from(h, 0, batch, hooks)
    }

    fn forward_until(&self, batch: &Batch, layer: usize, hooks: &dyn Hooks) -> Result<Tensor> {
        let h = hooks.representation(Site::embeddings(), self.embed(batch)?)?;
        let end = layer.min(self.weights.layers.len());
        Ok(self.layers(h, 0..end, &batch.attention_rows, None, hooks)?.0)
    }

    fn forward_from(&self, h: Tensor, layer: usize, batch: &Batch, hooks: &dyn Hooks) -> Result<Tensor> {
        let n = self.weights.layers.len();
        let (h, _) = self.layers(h, layer.min(n)..n, &batch.attention_rows, None, hooks)?;
        Ok(self.weights.norm.forward(&h)?)
    }

    fn as_causal_lm(&self) -> Option<&dyn CausalLm> {
        Some(self)
    }

    fn to_onnx(&self, g: &mut crate::onnx::Graph, ids: &str, mask: &str, hooks: &mut dyn crate::onnx::ExportHooks) -> Result<String> {
        crate::model::llama::onnx::emit_hidden(self, g, ids, mask, hooks)
    }
}

impl CausalLm for Llama {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }
    fn stop_tokens(&self) -> &[u32] {
        &self.config.eos_token_ids
    }

    fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        let w = self.weights.lm_head.as_ref().unwrap_or(&self.weights.embed);
        Ok(crate::ops::frozen_linear(hidden, w, None)?)
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.weights.layers.len())
    }

    fn onnx_decoder(&self) -> Option<&dyn crate::onnx::DecoderExport> {
        Some(self)
    }

    fn forward_cached(&self, batch: &Batch, cache: &mut KvCache, hooks: &dyn Hooks) -> Result<Tensor> {
        if cache.num_layers() != self.weights.layers.len() {
            return Err(Error::Other(format!(
                "KV cache has {} layers, the model {}",
                cache.num_layers(),
                self.weights.layers.len()
            )));
        }
        let rows = cache.rows_with(&batch.attention_rows)?;
        let h = hooks.representation(Site::embeddings(), self.embed(batch)?)?;
        let (h, kv) = self.layers(h, 0..self.weights.layers.len(), &rows, Some(cache), hooks)?;
        cache.commit(kv, rows)?;
        Ok(self.weights.norm.forward(&h)?)
    }
}
