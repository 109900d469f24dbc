//! The shape of a llama-family decoder, read from a GGUF file's metadata or from a Hugging Face
//! `config.json` (`model_type: llama`), checked before any weight is read.

use super::gguf::GgufFile;
use crate::error::{Error, Result};
use crate::hooks::{Component, HookSurface, LinearModule, Site};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention): `num_heads` is a multiple of it.
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// How RoPE's frequencies are rescaled for long contexts (Llama 3.x: `llama3`).
    pub rope_scaling: RopeScaling,
    /// The longest sequence the model was trained for (prompt + generated tokens).
    pub max_position_embeddings: usize,
    /// Token ids that end a generation (end of turn, end of text).
    pub eos_token_ids: Vec<u32>,
    /// Which decoder family: the same pre-norm SwiGLU stack, with the differences below.
    pub family: Family,
    /// Biases on the query/key/value projections (Qwen2; llama and Qwen3 with
    /// `attention_bias`).
    pub qkv_bias: bool,
    /// A bias on the attention output projection (llama and Qwen3 with `attention_bias`).
    pub o_bias: bool,
    /// Biases on the MLP projections (llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// RMSNorm over each query and key head before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Whether the output matrix is the embedding matrix: `config.json`'s
    /// `tie_word_embeddings` (transformers' default false); None (GGUF) when the weights
    /// decide (no output tensor: tied).
    pub tied_embeddings: Option<bool>,
}

/// A Hugging Face llama `config.json`, as transformers 4.x writes it (`rope_theta`,
/// `rope_scaling`, `torch_dtype`) or 5.x does (`rope_parameters`, `dtype`). Every key is read
/// or listed in [`KEYS_THAT_CHANGE_NOTHING`]; any other is refused by name, since an unread
/// key that changes the arithmetic would be a silently wrong model.
#[derive(Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    hidden_act: Option<String>,
    /// transformers 4.x: scaled RoPE; null or absent for plain RoPE.
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    /// transformers 5.x: `{rope_theta, rope_type, …}` in place of `rope_theta`/`rope_scaling`.
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    /// transformers' llama default is false: an output matrix of its own.
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    attention_dropout: Option<f64>,
    /// One id or a list (llama 3 lists several).
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
    /// Mistral, Qwen: the attention window (null: none).
    #[serde(default)]
    sliding_window: Option<serde_json::Value>,
    /// Qwen (transformers 4.x): whether layers from `max_window_layers` on use the window.
    #[serde(default)]
    use_sliding_window: Option<bool>,
    #[serde(default)]
    max_window_layers: Option<usize>,
    /// transformers 5.x: `full_attention` or `sliding_attention` per layer.
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    /// Phi-3's dropout on the residual branches and the embeddings (must be 0: the frozen
    /// base runs without dropout).
    #[serde(default)]
    resid_pdrop: Option<f64>,
    #[serde(default)]
    embd_pdrop: Option<f64>,
    /// Phi-3: the context its `longrope` scaling starts from; plain RoPE does not read it.
    #[serde(default)]
    original_max_position_embeddings: Option<usize>,
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Keys a llama `config.json` may carry that do not change what the model computes:
/// provenance, the stored dtype (the recipe's `model.dtype` decides the compute dtype), token
/// ids used by generation settings, and training-time switches. `pretraining_tp` splits the
/// same matmuls into slices in old transformers versions: the same sums.
const KEYS_THAT_CHANGE_NOTHING: &[&str] = &[
    "_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype", "use_cache",
    "bos_token_id", "pad_token_id", "initializer_range", "pretraining_tp", "output_attentions",
    "output_hidden_states", "return_dict", "torchscript", "id2label", "label2id", "tokenizer_class",
    "problem_type", "is_encoder_decoder", "tie_encoder_decoder", "chunk_size_feed_forward",
    "output_router_logits", "use_return_dict",
];

fn default_eps() -> f64 {
    1e-6
}
/// transformers' llama default when neither `rope_theta` nor `rope_parameters` sets it.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;
fn default_max_positions() -> usize {
    2048
}

/// The decoder families reft computes. They share llama's layer (RMSNorm, RoPE, grouped-query
/// attention, SwiGLU) and differ in biases, per-head norms and attention windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    /// Phi-3: llama's layer with the query/key/value projections stored as one `qkv_proj`
    /// matrix and gate/up as one `gate_up_proj` (split at load time).
    Phi3,
}

impl Family {
    /// `model_type` in config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Phi3 => "phi3",
        }
    }

    pub fn from_model_type(t: &str) -> Option<Family> {
        [Family::Llama, Family::Mistral, Family::Qwen2, Family::Qwen3, Family::Phi3].into_iter().find(|f| f.model_type() == t)
    }
}

/// How RoPE's inverse frequencies are rescaled, as transformers' `ROPE_INIT_FUNCTIONS` does.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type: default`, or no scaling key).
    None,
    /// Every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.x: low frequencies divided by `factor`, high ones kept, the band between
    /// interpolated (transformers' `_compute_llama3_parameters`).
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
    /// Pair `i`'s frequency divided by entry `i` (GGUF's `rope_freqs.weight`, which is how
    /// llama.cpp stores Llama 3.x's scaling: the divisors, not the parameters).
    PerPairDivisors(Vec<f64>),
}

impl RopeScaling {
    /// Rescale the plain inverse frequencies.
    pub fn apply(&self, inv_freq: &mut [f64]) {
        match *self {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor),
            // The length was checked against head_dim/2 when the tensor was read.
            RopeScaling::PerPairDivisors(ref divisors) => inv_freq.iter_mut().zip(divisors).for_each(|(f, d)| *f /= d),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: old } => {
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
        }
    }
}

/// RoPE's base and scaling from either config generation: 4.x's `rope_theta` + `rope_scaling`,
/// or 5.x's `rope_parameters`. A kind reft does not compute (dynamic, yarn, longrope, …) or a
/// key it does not read is refused by name: running it as plain RoPE would be silently wrong.
fn rope(top: Option<f64>, scaling: Option<&serde_json::Value>, parameters: Option<&serde_json::Value>) -> std::result::Result<(f64, RopeScaling), String> {
    let mut theta = top;
    let mut result = RopeScaling::None;
    for (key, value) in [("rope_scaling", scaling), ("rope_parameters", parameters)] {
        let Some(value) = value.filter(|v| !v.is_null()) else { continue };
        let Some(map) = value.as_object() else {
            return Err(format!("{key} {value} is not an object"));
        };
        let kind = map.get("rope_type").or_else(|| map.get("type")).and_then(|t| t.as_str()).unwrap_or("default");
        let number = |k: &str| -> std::result::Result<f64, String> {
            let v = map.get(k).ok_or_else(|| format!("{key} ({kind}) has no `{k}`"))?;
            v.as_f64().filter(|x| x.is_finite() && *x > 0.0).ok_or_else(|| format!("{key}.{k} {v} is not a positive number"))
        };
        let (scaling, keys): (RopeScaling, &[&str]) = match kind {
            "default" => (RopeScaling::None, &[]),
            "linear" => (RopeScaling::Linear { factor: number("factor")? }, &["factor"]),
            "llama3" => {
                let s = RopeScaling::Llama3 {
                    factor: number("factor")?,
                    low_freq_factor: number("low_freq_factor")?,
                    high_freq_factor: number("high_freq_factor")?,
                    original_max_position_embeddings: number("original_max_position_embeddings")?,
                };
                if let RopeScaling::Llama3 { low_freq_factor: lo, high_freq_factor: hi, .. } = s {
                    if hi <= lo {
                        return Err(format!("{key}: high_freq_factor {hi} must exceed low_freq_factor {lo}"));
                    }
                }
                (s, &["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"])
            }
            other => return Err(format!("{key}: rope_type `{other}` is not supported (default, linear, llama3)")),
        };
        for (k, v) in map {
            match k.as_str() {
                "rope_type" | "type" => {}
                k if keys.contains(&k) => {}
                "rope_theta" => {
                    let t = v.as_f64().ok_or_else(|| format!("{key}.rope_theta {v} is not a number"))?;
                    if let Some(other) = theta.filter(|&o| o != t) {
                        return Err(format!("rope_theta {other} and {key}.rope_theta {t} disagree"));
                    }
                    theta = Some(t);
                }
                "partial_rotary_factor" if v.as_f64() == Some(1.0) => {}
                _ => return Err(format!("{key}.{k} ({v}) is not supported with rope_type `{kind}`")),
            }
        }
        if scaling != RopeScaling::None {
            if result != RopeScaling::None && result != scaling {
                return Err("rope_scaling and rope_parameters disagree".into());
            }
            result = scaling;
        }
    }
    Ok((theta.unwrap_or(DEFAULT_ROPE_THETA), result))
}

/// The attention window some layer uses, if any: Mistral's `sliding_window` applies to every
/// layer; Qwen's only where `layer_types` (5.x) says `sliding_attention`, or with
/// `use_sliding_window` from layer `max_window_layers` on (4.x). Llama has none.
fn attention_window(family: Family, c: &HfConfig) -> std::result::Result<Option<usize>, String> {
    let window = match &c.sliding_window {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|&w| w > 0).ok_or_else(|| format!("sliding_window {v} is not a positive number"))? as usize),
    };
    let layer_types = c.layer_types.as_deref().unwrap_or(&[]);
    if let Some(t) = layer_types.iter().find(|t| !matches!(t.as_str(), "full_attention" | "sliding_attention")) {
        return Err(format!("layer_types entry `{t}` is not supported (full_attention, sliding_attention)"));
    }
    if !layer_types.is_empty() && layer_types.len() != c.num_hidden_layers {
        return Err(format!("layer_types lists {} layers, num_hidden_layers is {}", layer_types.len(), c.num_hidden_layers));
    }
    let any_sliding_layer = layer_types.iter().any(|t| t == "sliding_attention");
    let used = match family {
        Family::Llama => {
            if window.is_some() || c.use_sliding_window == Some(true) || any_sliding_layer {
                return Err("sliding-window attention is not part of llama".into());
            }
            false
        }
        Family::Mistral | Family::Phi3 => window.is_some() && (layer_types.is_empty() || any_sliding_layer),
        Family::Qwen2 | Family::Qwen3 => {
            if !layer_types.is_empty() {
                any_sliding_layer
            } else {
                c.use_sliding_window == Some(true) && c.max_window_layers.is_none_or(|m| m < c.num_hidden_layers)
            }
        }
    };
    if used && window.is_none() {
        return Err("a layer uses sliding-window attention but sliding_window is null".into());
    }
    Ok(if used { window } else { None })
}

impl LlamaConfig {
    /// Read `config.json` of a Hugging Face decoder folder (llama, mistral, qwen2, qwen3, phi3).
    pub fn load_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let c: HfConfig = serde_json::from_str(&text)
            .map_err(|e| Error::model(path, format!("line {}:{}: {e}", e.line(), e.column())))?;
        let bad = |m: String| Err(Error::model(path, m));
        let family = match c.model_type.as_deref().and_then(Family::from_model_type) {
            Some(f) => f,
            None => return bad(format!("model_type {:?} is not a decoder family reft computes (llama, mistral, qwen2, qwen3, phi3)", c.model_type)),
        };
        let name = family.model_type();
        if let Some(key) = c.other.keys().find(|k| !KEYS_THAT_CHANGE_NOTHING.contains(&k.as_str())) {
            return bad(format!(
                "key `{key}` ({}) is not one reft reads for {name}; it may change what the model computes, so the \
                 model is refused rather than run without it",
                c.other[key]
            ));
        }
        if let Some(act) = c.hidden_act.as_deref().filter(|a| *a != "silu") {
            return bad(format!("hidden_act `{act}` is not supported ({name} uses silu)"));
        }
        let (rope_theta, rope_scaling) = rope(c.rope_theta, c.rope_scaling.as_ref(), c.rope_parameters.as_ref()).map_err(|m| Error::model(path, m))?;
        // Biases as transformers builds each family's projections.
        let (qkv_bias, o_bias, mlp_bias) = match family {
            Family::Llama => (c.attention_bias, c.attention_bias, c.mlp_bias),
            Family::Qwen3 => (c.attention_bias, c.attention_bias, false),
            Family::Qwen2 => (true, false, false),
            Family::Mistral | Family::Phi3 => (false, false, false),
        };
        let flag_read = matches!(family, Family::Llama | Family::Qwen3);
        if (!flag_read && c.attention_bias) || (family != Family::Llama && c.mlp_bias) {
            return bad(format!("attention_bias/mlp_bias = true is not part of {name}"));
        }
        for (key, p) in [("attention_dropout", c.attention_dropout), ("resid_pdrop", c.resid_pdrop), ("embd_pdrop", c.embd_pdrop)] {
            if let Some(p) = p.filter(|&p| p != 0.0) {
                return bad(format!("{key} {p} is not supported: reft runs the frozen model without dropout"));
            }
        }
        if family != Family::Phi3 && (c.resid_pdrop.is_some() || c.embd_pdrop.is_some() || c.original_max_position_embeddings.is_some()) {
            return bad(format!("resid_pdrop/embd_pdrop/original_max_position_embeddings are Phi-3 keys, not part of {name}"));
        }
        let window = attention_window(family, &c).map_err(|m| Error::model(path, m))?;
        let eos_token_ids = match &c.eos_token_id {
            None | Some(serde_json::Value::Null) => vec![],
            Some(v) => {
                let ids: Option<Vec<u32>> = match v {
                    serde_json::Value::Array(a) => a.iter().map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok())).collect(),
                    x => x.as_u64().and_then(|x| u32::try_from(x).ok()).map(|x| vec![x]),
                };
                match ids {
                    Some(ids) => ids,
                    None => return bad(format!("eos_token_id {v} is not a token id or a list of them")),
                }
            }
        };
        let heads = c.num_attention_heads;
        let config = LlamaConfig {
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_layers: c.num_hidden_layers,
            num_heads: heads,
            num_kv_heads: c.num_key_value_heads.unwrap_or(heads),
            head_dim: c.head_dim.unwrap_or(if heads == 0 { 0 } else { c.hidden_size / heads }),
            rms_norm_eps: c.rms_norm_eps,
            rope_theta,
            rope_scaling,
            // A window as long as the sequence hides nothing, so capping the sequence at the
            // window computes sliding-window attention exactly; longer inputs are refused.
            max_position_embeddings: window.map_or(c.max_position_embeddings, |w| w.min(c.max_position_embeddings)),
            eos_token_ids,
            family,
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm: family == Family::Qwen3,
            tied_embeddings: Some(c.tie_word_embeddings.unwrap_or(false)),
        };
        config.validate().map_err(|m| Error::model(path, m))?;
        Ok(config)
    }

    /// Read a GGUF file's `{arch}.*` metadata (llama.cpp's key names) for the architectures
    /// llama.cpp's converter writes for these families: `llama` (Llama, and Mistral, which it
    /// converts as llama), `qwen2` (q/k/v biases) and `qwen3` (per-head q/k norms). Llama 3.x's
    /// scaled RoPE arrives as the `rope_freqs.weight` tensor (one divisor per frequency pair,
    /// as llama.cpp applies it), so this reads that tensor too.
    pub fn from_gguf(g: &mut GgufFile) -> Result<Self> {
        let arch = g.string("general.architecture")?;
        let family = match arch.as_str() {
            "llama" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            other => {
                return Err(Error::model(g.path(), format!(
                    "general.architecture is `{other}`; reft reads GGUF files of `llama` (Llama, Mistral), `qwen2` and `qwen3`"
                )))
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        let heads = g.usize(&key("attention.head_count"))?;
        let hidden = g.usize(&key("embedding_length"))?;
        let vocab = match g.opt_usize(&key("vocab_size"))? {
            Some(v) => v,
            // Older files leave it out: the embedding matrix says it.
            None => g.tensor_dims("token_embd.weight")?.first().copied().unwrap_or(0),
        };
        // llama.cpp's rule: the head width is `key_length` where given (Qwen3 sets it apart
        // from hidden/heads), else hidden/heads; values must be as wide as keys here.
        let head_dim = match g.opt_usize(&key("attention.key_length"))? {
            Some(k) => k,
            None => if heads == 0 { 0 } else { hidden / heads },
        };
        if let Some(v) = g.opt_usize(&key("attention.value_length"))?.filter(|&v| v != head_dim) {
            return Err(Error::model(g.path(), format!("{arch}.attention.value_length {v} differs from the key width {head_dim}, which is not supported")));
        }
        if let Some(rot) = g.opt_usize(&key("rope.dimension_count"))? {
            if rot != head_dim {
                return Err(Error::model(g.path(), format!(
                    "{arch}.rope.dimension_count is {rot} but the head dimension is {head_dim}: partial rotary embeddings are not supported"
                )));
            }
        }
        if let Some(t) = g.opt_string(&key("rope.scaling.type"))?.filter(|t| t != "none") {
            return Err(Error::model(g.path(), format!("{arch}.rope.scaling.type `{t}` is not supported (plain RoPE, or Llama 3's rope_freqs.weight)")));
        }
        let rope_scaling = if g.has_tensor("rope_freqs.weight") {
            let t = g.tensor("rope_freqs.weight", &[head_dim / 2], candle_core::DType::F64, &candle_core::Device::Cpu)?;
            let divisors = t.to_vec1::<f64>().map_err(|e| Error::model(g.path(), format!("tensor `rope_freqs.weight`: {e}")))?;
            if let Some(d) = divisors.iter().find(|d| !(d.is_finite() && **d > 0.0)) {
                return Err(Error::model(g.path(), format!("tensor `rope_freqs.weight` holds {d}, not a positive frequency divisor")));
            }
            RopeScaling::PerPairDivisors(divisors)
        } else {
            RopeScaling::None
        };
        let context = g.opt_usize(&key("context_length"))?.unwrap_or(2048);
        // As for config.json: a window as long as the sequence hides nothing, so capping the
        // sequence at the window is exact.
        let window = g.opt_usize(&key("attention.sliding_window"))?;
        let mut eos_token_ids = Vec::new();
        if let Some(id) = g.opt_usize("tokenizer.ggml.eos_token_id")? {
            eos_token_ids.push(id as u32);
        }
        let config = LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: g.usize(&key("feed_forward_length"))?,
            num_layers: g.usize(&key("block_count"))?,
            num_heads: heads,
            num_kv_heads: g.opt_usize(&key("attention.head_count_kv"))?.unwrap_or(heads),
            head_dim,
            rms_norm_eps: g.f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: g.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_scaling,
            family,
            // llama.cpp builds qwen2's q/k/v with biases; the other two have none.
            qkv_bias: family == Family::Qwen2,
            o_bias: false,
            mlp_bias: false,
            qk_norm: family == Family::Qwen3,
            max_position_embeddings: window.map_or(context, |w| w.min(context)),
            eos_token_ids,
            // llama.cpp's convention: no `output.weight` tensor means tied embeddings.
            tied_embeddings: None,
        };
        config.validate().map_err(|m| Error::model(g.path(), m))?;
        Ok(config)
    }

    /// Whether a GGUF file's query/key rows are in llama.cpp's interleaved order: its
    /// converter permutes them for `llama` (NORM RoPE) but not for qwen2/qwen3 (NEOX RoPE,
    /// Hugging Face's own order).
    pub fn gguf_rows_permuted(&self) -> bool {
        self.family == Family::Llama
    }

    /// Sizes in range and consistent, so nothing downstream divides by zero or allocates
    /// absurdly from a corrupt header.
    fn validate(&self) -> std::result::Result<(), String> {
        crate::model::check_sizes(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ])?;
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(format!("head_dim {} is odd: RoPE rotates pairs", self.head_dim));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(format!("rms_norm_eps {} is not a non-negative number", self.rms_norm_eps));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(format!("rope_theta {} must be a number above 1", self.rope_theta));
        }
        if let Some(id) = self.eos_token_ids.iter().find(|&&i| i as usize >= self.vocab_size) {
            return Err(format!("eos token id {id} is outside the vocabulary of {}", self.vocab_size));
        }
        Ok(())
    }

    /// Width of all query heads together (`hidden_size` in every llama released so far).
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the keys (or values) of all key/value heads together.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

/// The widths at each hook point: shared by the loaded model and by `reft check`.
impl HookSurface for LlamaConfig {
    fn num_layers(&self) -> usize {
        self.num_layers
    }
    fn component_dims(&self, c: Component) -> Option<(usize, usize)> {
        let (d, i, q, kv) = (self.hidden_size, self.intermediate_size, self.q_dim(), self.kv_dim());
        Some(match c {
            Component::MlpActivation => (i, i),
            Component::AttentionValueOutput => (q, q),
            Component::Linear(LinearModule::Query) => (d, q),
            Component::Linear(LinearModule::Key) | Component::Linear(LinearModule::Value) => (d, kv),
            Component::Linear(LinearModule::AttentionOut) => (q, d),
            Component::Linear(LinearModule::MlpUp) | Component::Linear(LinearModule::MlpGate) => (d, i),
            Component::Linear(LinearModule::MlpDown) => (i, d),
            _ => (d, d),
        })
    }
    /// Hugging Face's module names (what PEFT's `target_modules` match), whatever file the
    /// weights came from.
    fn module_path(&self, site: Site) -> Option<String> {
        let l = site.layer.filter(|l| *l < self.num_layers)?;
        // Phi-3 stores q/k/v and gate/up fused: no module of its own to name (PEFT's
        // `target_modules` would name `qkv_proj`, a different adapter).
        let fused = matches!(
            site.component,
            Component::Linear(LinearModule::Query | LinearModule::Key | LinearModule::Value | LinearModule::MlpGate | LinearModule::MlpUp)
        );
        if self.family == Family::Phi3 && fused {
            return None;
        }
        let module = match site.component {
            Component::Linear(LinearModule::Query) => "self_attn.q_proj",
            Component::Linear(LinearModule::Key) => "self_attn.k_proj",
            Component::Linear(LinearModule::Value) => "self_attn.v_proj",
            Component::Linear(LinearModule::AttentionOut) => "self_attn.o_proj",
            Component::Linear(LinearModule::MlpGate) => "mlp.gate_proj",
            Component::Linear(LinearModule::MlpUp) => "mlp.up_proj",
            Component::Linear(LinearModule::MlpDown) => "mlp.down_proj",
            _ => return None,
        };
        Some(format!("model.layers.{l}.{module}"))
    }
}
