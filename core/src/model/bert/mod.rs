//! A BERT-family encoder (BERT, MiniLM, RoBERTa, XLM-RoBERTa, …) in the Hugging Face layout
//! (`config.json`, `model.safetensors`, `tokenizer.json`), with every hook point.
//!
//! Numerics follow `transformers.BertModel` (and `RobertaModel`, which differs only in its
//! position ids: see [`PositionIds`]) in eval mode with eager attention: post-norm layers,
//! exact (erf) GELU, additive attention mask.

pub mod onnx;

use super::safetensors_file::WeightFile;
use super::{Backbone, Batch, Hooks};
use crate::error::{Error, Result};
use crate::hooks::{Component, HookSurface, LinearModule, Site};
use crate::nn::{LayerNorm, Linear};
use crate::ops;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub model_type: Option<String>,
    /// `absolute` (BERT's learned positions) is the only kind computed.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    #[serde(default)]
    pub is_decoder: bool,
    #[serde(default)]
    pub add_cross_attention: bool,
    /// RoBERTa numbers positions after this id (see [`PositionIds`]); BERT ignores it.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Every other key, each of which must be in [`KEYS_THAT_CHANGE_NOTHING`].
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Keys a BERT `config.json` may carry that do not change what the frozen encoder computes:
/// provenance, dtype, token ids, and the dropout rates (reft runs the frozen base without
/// dropout, as in evaluation mode; interventions have their own `dropout`).
const KEYS_THAT_CHANGE_NOTHING: &[&str] = &[
    "_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype", "use_cache",
    "bos_token_id", "eos_token_id", "initializer_range", "gradient_checkpointing",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "output_attentions",
    "output_hidden_states", "return_dict", "torchscript", "id2label", "label2id", "tokenizer_class",
    "problem_type", "finetuning_task", "chunk_size_feed_forward", "is_encoder_decoder", "tie_word_embeddings",
    "sep_token_id", "cls_token_id", "prefix", "task_specific_params",
];

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

/// How an encoder numbers the positions whose learned embeddings it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionIds {
    /// BERT: token `i` of every row has position `i`.
    FromZero,
    /// RoBERTa (`create_position_ids_from_input_ids`): a pad token has position `pad`; any
    /// other token has `pad + 1 + ` the number of non-pad tokens before it. Rows padded on the
    /// right thus start at `pad + 1`, and the usable length is `max_position_embeddings - pad - 1`.
    AfterPadding { pad: u32 },
}

impl PositionIds {
    /// Position ids `[b][s]` for token ids `[b][s]`, exactly as transformers computes them.
    pub fn for_ids(self, ids: &[Vec<u32>]) -> Vec<Vec<u32>> {
        match self {
            PositionIds::FromZero => ids.iter().map(|r| (0..r.len() as u32).collect()).collect(),
            PositionIds::AfterPadding { pad } => ids
                .iter()
                .map(|row| {
                    let mut seen = 0;
                    row.iter()
                        .map(|&t| if t == pad { pad } else { seen += 1; pad + seen })
                        .collect()
                })
                .collect(),
        }
    }
}

impl BertConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let c: BertConfig = serde_json::from_str(&text).map_err(|e| {
            Error::model(path, format!("line {}:{}: {e}", e.line(), e.column()))
        })?;
        c.validate(path)?;
        Ok(c)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::model(path, m));
        match self.model_type.as_deref() {
            Some("bert") => {}
            // Same weights and layers as BERT; the position ids start after pad_token_id, so
            // without it the arithmetic is unknown.
            Some(t @ ("roberta" | "xlm-roberta" | "camembert")) => {
                if self.pad_token_id.is_none() {
                    return bad(format!("model_type `{t}` numbers positions after pad_token_id, which this config.json lacks"));
                }
            }
            Some(t) => return bad(format!("model_type `{t}` is not supported ({ENCODERS_AND_DECODERS})")),
            None => return bad(format!("has no model_type ({ENCODERS_AND_DECODERS})")),
        }
        if let Some(kind) = self.position_embedding_type.as_deref().filter(|k| *k != "absolute") {
            return bad(format!("position_embedding_type `{kind}` is not supported (only `absolute`)"));
        }
        if self.is_decoder || self.add_cross_attention {
            return bad("is_decoder/add_cross_attention = true is not supported (a bidirectional encoder only)".into());
        }
        if let Some(key) = self.other.keys().find(|k| !KEYS_THAT_CHANGE_NOTHING.contains(&k.as_str())) {
            return bad(format!(
                "key `{key}` ({}) is not one reft reads for bert; it may change what the model computes, so the model \
                 is refused rather than run without it",
                self.other[key]
            ));
        }
        super::check_sizes(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ])
        .or_else(bad)?;
        if self.hidden_size % self.num_attention_heads != 0 {
            return bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        // A negative or non-finite epsilon turns every hidden state into NaN without an error.
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return bad(format!("layer_norm_eps {} is not a finite number ≥ 0", self.layer_norm_eps));
        }
        if let PositionIds::AfterPadding { pad } = self.position_ids() {
            if pad as usize + 1 >= self.max_position_embeddings {
                return bad(format!(
                    "pad_token_id {pad} leaves no position below max_position_embeddings {}",
                    self.max_position_embeddings
                ));
            }
        }
        if !matches!(self.hidden_act.as_str(), "gelu" | "relu" | "gelu_new" | "gelu_pytorch_tanh") {
            return bad(format!("hidden_act `{}` is not supported (gelu, gelu_new, relu)", self.hidden_act));
        }
        Ok(())
    }

    pub(crate) fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// How this model type numbers positions (validated: RoBERTa-type configs have a pad id).
    pub fn position_ids(&self) -> PositionIds {
        match (self.model_type.as_deref(), self.pad_token_id) {
            (Some("roberta" | "xlm-roberta" | "camembert"), Some(pad)) => PositionIds::AfterPadding { pad },
            _ => PositionIds::FromZero,
        }
    }

    /// The most tokens a row may have: every position id must index the learned table.
    pub fn max_tokens(&self) -> usize {
        match self.position_ids() {
            PositionIds::FromZero => self.max_position_embeddings,
            PositionIds::AfterPadding { pad } => self.max_position_embeddings.saturating_sub(pad as usize + 1),
        }
    }
}

/// What `model_type` a folder may name, for refusals.
const ENCODERS_AND_DECODERS: &str =
    "encoders: bert, roberta, xlm-roberta, camembert; decoders: llama, mistral, qwen2, qwen3, phi3";

/// The widths at each hook point of a BERT config: shared by the loaded model and by
/// `reft check`, which validates a recipe from `config.json` alone.
impl HookSurface for BertConfig {
    fn num_layers(&self) -> usize {
        self.num_hidden_layers
    }
    fn component_dims(&self, c: Component) -> Option<(usize, usize)> {
        let (d, i) = (self.hidden_size, self.intermediate_size);
        Some(match c {
            Component::MlpActivation => (i, i),
            Component::Linear(LinearModule::MlpUp) => (d, i),
            Component::Linear(LinearModule::MlpDown) => (i, d),
            Component::Linear(LinearModule::MlpGate) => return None,
            _ => (d, d),
        })
    }
    fn module_path(&self, site: Site) -> Option<String> {
        let l = site.layer.filter(|l| *l < self.num_hidden_layers)?;
        let module = match site.component {
            Component::Linear(LinearModule::Query) => "attention.self.query",
            Component::Linear(LinearModule::Key) => "attention.self.key",
            Component::Linear(LinearModule::Value) => "attention.self.value",
            Component::Linear(LinearModule::AttentionOut) => "attention.output.dense",
            Component::Linear(LinearModule::MlpUp) => "intermediate.dense",
            Component::Linear(LinearModule::MlpDown) => "output.dense",
            _ => return None,
        };
        Some(format!("encoder.layer.{l}.{module}"))
    }
}

pub(crate) struct Layer {
    pub(crate) query: Linear,
    pub(crate) key: Linear,
    pub(crate) value: Linear,
    pub(crate) attn_out: Linear,
    pub(crate) attn_norm: LayerNorm,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
    pub(crate) out_norm: LayerNorm,
}

pub struct Bert {
    pub config: BertConfig,
    pub(crate) word: Tensor,
    pub(crate) position: Tensor,
    pub(crate) token_type: Tensor,
    pub(crate) emb_norm: LayerNorm,
    pub(crate) layers: Vec<Layer>,
    /// The pretrained pooler (dense + tanh on [CLS]), when the checkpoint has one.
    pub(crate) pooler: Option<Linear>,
    num_parameters: usize,
    device: Device,
}

impl Bert {
    /// Load `config.json` and `model.safetensors` (or its shards) from `dir`.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = BertConfig::load(&dir.join("config.json"))?;
        let layout = crate::model::safetensors_file::weight_layout(dir)?;
        let mut w = WeightFile::load_layout(&layout, dtype, device)?;
        Self::from_weights(config, &mut w, device)
    }

    pub fn from_weights(config: BertConfig, w: &mut WeightFile, device: &Device) -> Result<Self> {
        if !w.contains("embeddings.word_embeddings.weight") {
            for prefix in ["bert.", "model.", "roberta."] {
                if w.names().any(|n| n.starts_with(prefix)) {
                    w.strip_prefix(prefix);
                    break;
                }
            }
        }
        let (d, i) = (config.hidden_size, config.intermediate_size);
        let eps = config.layer_norm_eps;
        let lin = |w: &WeightFile, name: &str, out: usize, inp: usize| -> Result<Linear> {
            Ok(Linear::new(
                w.get(&format!("{name}.weight"), &[out, inp])?,
                Some(w.get(&format!("{name}.bias"), &[out])?),
            )
            // Weights laid out for the forward gemm (docs on `Linear`).
            .into_gemm_layout()?)
        };
        let norm = |w: &WeightFile, name: &str| -> Result<LayerNorm> {
            // Old checkpoints call the LayerNorm parameters gamma/beta.
            let (wn, bn) = if w.contains(&format!("{name}.gamma")) {
                ("gamma", "beta")
            } else {
                ("weight", "bias")
            };
            Ok(LayerNorm {
                weight: w.get(&format!("{name}.{wn}"), &[d])?,
                bias: w.get(&format!("{name}.{bn}"), &[d])?,
                eps,
            })
        };
        // No `with_capacity(num_hidden_layers)`: the count comes from config.json and is only
        // checked against the weights as they load.
        let mut layers = Vec::new();
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            layers.push(Layer {
                query: lin(w, &format!("{p}.attention.self.query"), d, d)?,
                key: lin(w, &format!("{p}.attention.self.key"), d, d)?,
                value: lin(w, &format!("{p}.attention.self.value"), d, d)?,
                attn_out: lin(w, &format!("{p}.attention.output.dense"), d, d)?,
                attn_norm: norm(w, &format!("{p}.attention.output.LayerNorm"))?,
                up: lin(w, &format!("{p}.intermediate.dense"), i, d)?,
                down: lin(w, &format!("{p}.output.dense"), d, i)?,
                out_norm: norm(w, &format!("{p}.output.LayerNorm"))?,
            });
        }
        let pooler = if w.contains("pooler.dense.weight") {
            Some(lin(w, "pooler.dense", d, d)?)
        } else {
            None
        };
        Ok(Bert {
            word: w.get("embeddings.word_embeddings.weight", &[config.vocab_size, d])?,
            position: w.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, d],
            )?,
            token_type: w.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, d],
            )?,
            emb_norm: norm(w, "embeddings.LayerNorm")?,
            layers,
            pooler,
            num_parameters: w.num_parameters(),
            device: device.clone(),
            config,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The pretrained pooler applied to the first token: `tanh(W h[:,0] + b)`, `[batch, d]`.
    pub fn pool_cls(&self, hidden: &Tensor) -> Result<Option<Tensor>> {
        let Some(p) = &self.pooler else { return Ok(None) };
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(Some(p.forward(&cls)?.tanh()?))
    }

    fn activation(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.config.hidden_act.as_str() {
            "relu" => x.relu()?,
            "gelu_new" | "gelu_pytorch_tanh" => x.gelu()?,
            _ => crate::ops::gelu_erf(x)?,
        })
    }

    fn embed(&self, batch: &Batch) -> Result<Tensor> {
        let (b, s) = batch.dims();
        if s > self.config.max_tokens() {
            return Err(Error::Shape {
                context: "input_ids".into(),
                expected: format!("at most {} tokens", self.config.max_tokens()),
                got: vec![b, s],
            });
        }
        let ids = batch.input_ids.flatten_all()?;
        let max_id = ids.max(0)?.to_scalar::<u32>()? as usize;
        if max_id >= self.config.vocab_size {
            return Err(Error::Other(format!(
                "token id {max_id} is outside the vocabulary of {} tokens (wrong tokenizer for this model?)",
                self.config.vocab_size
            )));
        }
        let words = self.word.index_select(&ids, 0)?.reshape((b, s, ()))?;
        let pos = match self.config.position_ids() {
            PositionIds::FromZero => self.position.narrow(0, 0, s)?.unsqueeze(0)?,
            scheme => {
                let rows = scheme.for_ids(&batch.input_ids.to_vec2::<u32>()?);
                let ids = Tensor::from_vec(rows.concat(), b * s, &self.device)?;
                self.position.index_select(&ids, 0)?.reshape((b, s, ()))?
            }
        };
        // token_type_ids are all 0 for single-segment inputs.
        let ty = self.token_type.narrow(0, 0, 1)?.unsqueeze(0)?;
        let e = words.broadcast_add(&pos)?.broadcast_add(&ty)?;
        Ok(self.emb_norm.forward(&e)?)
    }

    /// Self-attention of layer `l` for the queries `xq` (all of `x`, or its first token only)
    /// over the keys and values of every token of `x`.
    fn attention(&self, l: usize, layer: &Layer, x: &Tensor, xq: &Tensor, bias: &Tensor, hooks: &dyn Hooks) -> Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        let sq = xq.dim(1)?;
        let h = self.config.num_attention_heads;
        let hd = self.config.head_dim();
        let lin = |m: LinearModule, f: &Linear, inp: &Tensor| -> Result<Tensor> {
            hooks.linear(Site::new(l, Component::Linear(m)), inp, f.forward(inp)?)
        };
        let split = |t: Tensor, s: usize| -> Result<Tensor> {
            Ok(t.reshape((b, s, h, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(lin(LinearModule::Query, &layer.query, xq)?, sq)?;
        let k = split(lin(LinearModule::Key, &layer.key, x)?, s)?;
        let v = split(lin(LinearModule::Value, &layer.value, x)?, s)?;
        // Scale, key mask and softmax in one fused op (one pass over the scores each way).
        let probs = crate::ops::scaled_masked_softmax(&q.matmul(&k.t()?)?, 1.0 / (hd as f64).sqrt(), bias)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, sq, d))?;
        let ctx = hooks.representation(Site::new(l, Component::AttentionValueOutput), ctx)?;
        lin(LinearModule::AttentionOut, &layer.attn_out, &ctx)
    }
}

impl Bert {
    /// Additive attention mask `[b, 1, 1, s]`: 0 on real keys, a large negative number on padding.
    fn attention_bias(&self, batch: &Batch, dtype: DType) -> Result<Tensor> {
        let (b, s) = batch.dims();
        Ok(((batch.attention_mask.to_dtype(dtype)? - 1.0)? * 1e9)?.reshape((b, 1, 1, s))?)
    }

    /// One encoder layer with its hooks: what layer `l` writes to the residual stream.
    fn layer(&self, l: usize, h: Tensor, bias: &Tensor, hooks: &dyn Hooks) -> Result<Tensor> {
        let x = hooks.representation(Site::new(l, Component::BlockInput), h)?;
        if let Some(out) = self.fused_layer(l, &x, bias, hooks)? {
            return hooks.representation(Site::new(l, Component::BlockOutput), out);
        }
        self.layer_after_input(l, &x, &x, bias, hooks)
    }

    /// Layer `l` with fused ops where its hooks allow (`ops::encoder_layer`): the whole layer
    /// as one op when nothing inside it is hooked; attention and the rest as two ops when
    /// only the query/key/value projections are (LoRA), those projections and their hooks
    /// op by op. None when neither applies (other inner hooks, an activation other than
    /// exact GELU, weights that are not frozen f32/bf16/f16 on the CPU).
    fn fused_layer(&self, l: usize, x: &Tensor, bias: &Tensor, hooks: &dyn Hooks) -> Result<Option<Tensor>> {
        let Some(inner) = hooks.inner_hooks(l) else { return Ok(None) };
        let projections_only = inner.iter().all(|c| matches!(c, Component::Linear(LinearModule::Query | LinearModule::Key | LinearModule::Value)));
        if !projections_only || matches!(self.config.hidden_act.as_str(), "relu" | "gelu_new" | "gelu_pytorch_tanh") {
            return Ok(None);
        }
        let layer = &self.layers[l];
        let affine = |f: &Linear| ops::FrozenAffine { weight: f.weight.clone(), bias: f.bias.clone() };
        let norm = |n: &LayerNorm| ops::FrozenNorm { weight: n.weight.clone(), bias: n.bias.clone(), eps: n.eps };
        let w = ops::EncoderLayerWeights {
            query: affine(&layer.query),
            key: affine(&layer.key),
            value: affine(&layer.value),
            attn_out: affine(&layer.attn_out),
            attn_norm: norm(&layer.attn_norm),
            up: affine(&layer.up),
            down: affine(&layer.down),
            out_norm: norm(&layer.out_norm),
            heads: self.config.num_attention_heads,
        };
        if !ops::encoder_layer_applies(x, &w) {
            return Ok(None);
        }
        if inner.is_empty() {
            return Ok(Some(ops::encoder_layer(x, bias, &w)?));
        }
        let lin = |m: LinearModule, f: &Linear| -> Result<Tensor> { hooks.linear(Site::new(l, Component::Linear(m)), x, f.forward(x)?) };
        let (q, k, v) = (lin(LinearModule::Query, &layer.query)?, lin(LinearModule::Key, &layer.key)?, lin(LinearModule::Value, &layer.value)?);
        Ok(Some(ops::encoder_layer_after_projections(&q, &k, &v, x, bias, &w)?))
    }

    /// Layer `l` from its (hooked) input `x`, for the query rows `xq`: all of `x`, or its
    /// first token when only that token's output is read. Every token still supplies keys
    /// and values, and every later step is per token, so the first token's output is the
    /// same either way.
    fn layer_after_input(&self, l: usize, x: &Tensor, xq: &Tensor, bias: &Tensor, hooks: &dyn Hooks) -> Result<Tensor> {
        let layer = &self.layers[l];
        let site = |c| Site::new(l, c);
        let a = self.attention(l, layer, x, xq, bias, hooks)?;
        let a = layer.attn_norm.forward(&(a + xq)?)?;
        let a = hooks.representation(site(Component::AttentionOutput), a)?;
        let up = hooks.linear(site(Component::Linear(LinearModule::MlpUp)), &a, layer.up.forward(&a)?)?;
        let act = hooks.representation(site(Component::MlpActivation), self.activation(&up)?)?;
        let down = hooks.linear(site(Component::Linear(LinearModule::MlpDown)), &act, layer.down.forward(&act)?)?;
        let o = hooks.representation(site(Component::MlpOutput), down)?;
        let out = layer.out_norm.forward(&(o + &a)?)?;
        hooks.representation(site(Component::BlockOutput), out)
    }
}

impl HookSurface for Bert {
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

impl Backbone for Bert {
    fn arch(&self) -> &str {
        "bert"
    }
    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
    fn num_parameters(&self) -> usize {
        self.num_parameters
    }

    fn pool_first(&self, hidden: &Tensor) -> Result<Option<Tensor>> {
        self.pool_cls(hidden)
    }

    fn to_onnx(&self, g: &mut crate::onnx::Graph, ids: &str, mask: &str, hooks: &mut dyn crate::onnx::ExportHooks) -> Result<String> {
        crate::model::bert::onnx::emit(self, g, ids, mask, hooks, false)
    }

    fn to_onnx_first_token(&self, g: &mut crate::onnx::Graph, ids: &str, mask: &str, hooks: &mut dyn crate::onnx::ExportHooks) -> Result<String> {
        crate::model::bert::onnx::emit(self, g, ids, mask, hooks, true)
    }

    fn pool_first_onnx(&self, g: &mut crate::onnx::Graph, hidden: &str) -> Result<Option<String>> {
        crate::model::bert::onnx::pool_first(self, g, hidden)
    }

    fn forward(&self, batch: &Batch, hooks: &dyn Hooks) -> Result<Tensor> {
        let h = self.forward_until(batch, 0, hooks)?;
        self.forward_from(h, 0, batch, hooks)
    }

    fn forward_until(&self, batch: &Batch, layer: usize, hooks: &dyn Hooks) -> Result<Tensor> {
        let mut h = hooks.representation(Site::embeddings(), self.embed(batch)?)?;
        let bias = self.attention_bias(batch, h.dtype())?;
        for l in 0..layer.min(self.layers.len()) {
            h = self.layer(l, h, &bias, hooks)?;
        }
        Ok(h)
    }

    fn forward_from(&self, mut h: Tensor, layer: usize, batch: &Batch, hooks: &dyn Hooks) -> Result<Tensor> {
        let bias = self.attention_bias(batch, h.dtype())?;
        for l in layer..self.layers.len() {
            h = self.layer(l, h, &bias, hooks)?;
        }
        Ok(h)
    }

    /// The last layer computes queries, attention output and feed-forward for the first
    /// token alone (about 5/6 of that layer's work saved) when its hooks allow it: a hook on
    /// the layer's input could change the keys and values the first token reads.
    fn forward_from_to_first_token(&self, mut h: Tensor, layer: usize, batch: &Batch, hooks: &dyn Hooks) -> Result<Tensor> {
        let n = self.layers.len();
        if n == 0 || layer >= n || !hooks.first_token_suffices(n - 1) {
            return Ok(self.forward_from(h, layer, batch, hooks)?.narrow(1, 0, 1)?);
        }
        let bias = self.attention_bias(batch, h.dtype())?;
        for l in layer..n - 1 {
            h = self.layer(l, h, &bias, hooks)?;
        }
        let first = h.narrow(1, 0, 1)?.contiguous()?;
        self.layer_after_input(n - 1, &h, &first, &bias, hooks)
    }
}

#[cfg(test)]
mod tests {
    use super::BertConfig;

    /// all-MiniLM-L6-v2's config.json, as the hub has it (transformers 4.8.2).
    fn minilm() -> serde_json::Value {
        serde_json::json!({"_name_or_path": "nreimers/MiniLM-L6-H384-uncased", "architectures": ["BertModel"],
            "attention_probs_dropout_prob": 0.1, "gradient_checkpointing": false, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": 384, "initializer_range": 0.02, "intermediate_size": 1536,
            "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
            "num_hidden_layers": 6, "pad_token_id": 0, "position_embedding_type": "absolute",
            "transformers_version": "4.8.2", "type_vocab_size": 2, "use_cache": true, "vocab_size": 30522})
    }

    fn load(edit: serde_json::Value) -> Result<BertConfig, String> {
        let mut c = minilm();
        for (k, v) in edit.as_object().unwrap() {
            c[k] = v.clone();
        }
        let dir = tempfile_dir();
        let path = dir.join(format!("config-{}.json", rand_suffix(&c)));
        std::fs::write(&path, c.to_string()).unwrap();
        let r = BertConfig::load(&path).map_err(|e| e.to_string());
        std::fs::remove_file(&path).unwrap();
        r
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("reft-bert-config-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix(c: &serde_json::Value) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        c.to_string().hash(&mut h);
        h.finish()
    }

    #[test]
    fn roberta_position_ids_count_real_tokens_after_the_pad_id() {
        let ids = vec![vec![0, 7, 8, 2], vec![0, 9, 2, 1]];
        assert_eq!(super::PositionIds::AfterPadding { pad: 1 }.for_ids(&ids), vec![vec![2, 3, 4, 5], vec![2, 3, 4, 1]]);
        assert_eq!(super::PositionIds::FromZero.for_ids(&ids), vec![vec![0, 1, 2, 3], vec![0, 1, 2, 3]]);
    }

    #[test]
    fn a_real_config_loads_and_whatever_changes_the_arithmetic_unread_is_refused_by_name() {
        assert_eq!(load(serde_json::json!({})).unwrap().hidden_size, 384);
        for t in ["roberta", "xlm-roberta", "camembert"] {
            let c = load(serde_json::json!({"model_type": t, "pad_token_id": 1})).unwrap();
            assert_eq!(c.position_ids(), super::PositionIds::AfterPadding { pad: 1 });
            assert_eq!(c.max_tokens(), 510, "roberta-base's 514 positions hold 512 tokens; here 512 hold 510");
        }
        for (edit, needles) in [
            // RoBERTa's positions start after pad_token_id: 3.2 off at layer 1 if run as BERT.
            (serde_json::json!({"model_type": "roberta", "pad_token_id": null}), vec!["`roberta`", "pad_token_id"]),
            (serde_json::json!({"model_type": "xlm-roberta", "pad_token_id": 600}), vec!["pad_token_id 600", "512"]),
            (serde_json::json!({"model_type": "distilbert"}), vec!["`distilbert`"]),
            (serde_json::json!({"model_type": null}), vec!["model_type"]),
            (serde_json::json!({"position_embedding_type": "relative_key"}), vec!["relative_key"]),
            (serde_json::json!({"is_decoder": true}), vec!["is_decoder"]),
            (serde_json::json!({"embedding_size": 128}), vec!["`embedding_size`", "128"]),
        ] {
            let e = load(edit.clone()).err().unwrap_or_else(|| panic!("{edit} should be refused"));
            assert!(e.contains("config-"), "the file is named: {e}");
            for n in needles {
                assert!(e.contains(n), "expected `{n}` in: {e}");
            }
        }
    }
}
