//! The frozen weights of a llama decoder, from either file format, in one layout: Hugging
//! Face's (`[out, in]` matrices, query/key rows in HF order for half-rotation RoPE).
//!
//! - GGUF (`token_embd.weight`, `blk.N.attn_q.weight`, ...): every tensor dequantised to the
//!   requested dtype (the base is frozen, so it is kept in full precision rather than run
//!   quantised); for `llama` files, query/key rows un-permuted (see [`unpermute_rows`]);
//!   qwen2/qwen3 files keep Hugging Face's order.
//! - Hugging Face safetensors (`model.layers.N.self_attn.q_proj.weight`, ...),
//!   `model.safetensors` or its shards.
//!
//! Without an output matrix (`output.weight` / `lm_head.weight`) the embeddings are tied:
//! the LM head is the token embedding matrix itself.

use super::config::LlamaConfig;
use super::gguf::GgufFile;
use super::norm::RmsNorm;
use crate::error::{Error, Result};
use crate::model::safetensors_file::WeightFile;
use crate::nn::Linear;
use candle_core::{DType, Device, Tensor};

pub struct LayerWeights {
    pub attn_norm: RmsNorm,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub mlp_norm: RmsNorm,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    /// Qwen3: RMSNorm over each query / key head (`[head_dim]` weights) before RoPE.
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
}

pub struct LlamaWeights {
    /// `[vocab, hidden]`.
    pub embed: Tensor,
    pub layers: Vec<LayerWeights>,
    pub norm: RmsNorm,
    /// `[vocab, hidden]`; `None` when tied to `embed`.
    pub lm_head: Option<Tensor>,
    pub num_parameters: usize,
}

/// llama.cpp's converter reorders each head's query/key rows from `(2, hd/2)` (HF: first
/// half, second half) to `(hd/2, 2)` (pairs side by side) so that its RoPE can rotate
/// adjacent dimensions. This is the inverse: GGUF row `2j + i` of a head goes back to row
/// `i·hd/2 + j`.
pub fn unpermute_rows(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / heads;
    w.reshape((heads, hd / 2, 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))
}

/// The inverse of [`unpermute_rows`] (what llama.cpp's converter does), for tests that
/// write GGUF files.
pub fn permute_rows(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / heads;
    w.reshape((heads, 2, hd / 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))
}

/// Where each weight lives in one file format.
struct Names {
    embed: &'static str,
    norm: &'static str,
    lm_head: &'static str,
    layer: fn(usize, Part) -> String,
}

#[derive(Clone, Copy)]
enum Part {
    AttnNorm,
    Q,
    K,
    V,
    O,
    MlpNorm,
    Gate,
    Up,
    Down,
    QNorm,
    KNorm,
}

const GGUF: Names = Names {
    embed: "token_embd.weight",
    norm: "output_norm.weight",
    lm_head: "output.weight",
    layer: |l, p| {
        let n = match p {
            Part::AttnNorm => "attn_norm",
            Part::Q => "attn_q",
            Part::K => "attn_k",
            Part::V => "attn_v",
            Part::O => "attn_output",
            Part::MlpNorm => "ffn_norm",
            Part::Gate => "ffn_gate",
            Part::Up => "ffn_up",
            Part::Down => "ffn_down",
            Part::QNorm => "attn_q_norm",
            Part::KNorm => "attn_k_norm",
        };
        format!("blk.{l}.{n}.weight")
    },
};

const HF: Names = Names {
    embed: "model.embed_tokens.weight",
    norm: "model.norm.weight",
    lm_head: "lm_head.weight",
    layer: |l, p| {
        let n = match p {
            Part::AttnNorm => "input_layernorm",
            Part::Q => "self_attn.q_proj",
            Part::K => "self_attn.k_proj",
            Part::V => "self_attn.v_proj",
            Part::O => "self_attn.o_proj",
            Part::MlpNorm => "post_attention_layernorm",
            Part::Gate => "mlp.gate_proj",
            Part::Up => "mlp.up_proj",
            Part::Down => "mlp.down_proj",
            Part::QNorm => "self_attn.q_norm",
            Part::KNorm => "self_attn.k_norm",
        };
        format!("model.layers.{l}.{n}.weight")
    },
};

/// Phi-3 stores each layer's query/key/value rows as one `self_attn.qkv_proj.weight`
/// (`[q + 2·kv, hidden]`, in that order) and gate/up as one `mlp.gate_up_proj.weight`
/// (`[2·intermediate, hidden]`, gate first), as transformers' `Phi3Attention`/`Phi3MLP` slice
/// them. Split them into llama's names, so the rest of the loader (and every hook) sees
/// separate projections.
pub fn split_phi3_projections(cfg: &LlamaConfig, file: &mut WeightFile) -> Result<()> {
    let (q, kv, i) = (cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size);
    for l in 0..cfg.num_layers {
        let p = format!("model.layers.{l}");
        file.split_rows(
            &format!("{p}.self_attn.qkv_proj.weight"),
            &[(&format!("{p}.self_attn.q_proj.weight"), q), (&format!("{p}.self_attn.k_proj.weight"), kv), (&format!("{p}.self_attn.v_proj.weight"), kv)],
        )?;
        file.split_rows(&format!("{p}.mlp.gate_up_proj.weight"), &[(&format!("{p}.mlp.gate_proj.weight"), i), (&format!("{p}.mlp.up_proj.weight"), i)])?;
    }
    Ok(())
}

/// `….q_proj.weight` → `….q_proj.bias` (both file formats name biases so).
fn bias_name(weight: &str) -> String {
    format!("{}.bias", weight.strip_suffix(".weight").unwrap_or(weight))
}

/// One way to fetch a named tensor of an expected shape.
trait Source {
    fn fetch(&mut self, name: &str, shape: &[usize]) -> Result<Tensor>;
    fn has(&self, name: &str) -> bool;
    /// The file, for errors.
    fn path(&self) -> &std::path::Path;
}

struct FromGguf<'a> {
    file: &'a mut GgufFile,
    dtype: DType,
    device: &'a Device,
}

impl Source for FromGguf<'_> {
    fn fetch(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.file.tensor(name, shape, self.dtype, self.device)
    }
    fn has(&self, name: &str) -> bool {
        self.file.has_tensor(name)
    }
    fn path(&self) -> &std::path::Path {
        self.file.path()
    }
}

impl Source for WeightFile {
    fn fetch(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get(name, shape)
    }
    fn has(&self, name: &str) -> bool {
        self.contains(name)
    }
    fn path(&self) -> &std::path::Path {
        WeightFile::path(self)
    }
}

impl LlamaWeights {
    pub fn from_gguf(cfg: &LlamaConfig, file: &mut GgufFile, dtype: DType, device: &Device) -> Result<Self> {
        // (`rope_freqs.weight`, Llama 3's scaled RoPE, is read with the config.)
        let num_parameters = file.num_parameters();
        let path = file.path().to_path_buf();
        let mut src = FromGguf { file, dtype, device };
        let mut w = Self::read(cfg, &mut src, &GGUF)?;
        let layers = if cfg.gguf_rows_permuted() { &mut w.layers[..] } else { &mut [] };
        for (l, layer) in layers.iter_mut().enumerate() {
            let fix = |t: &Tensor, heads: usize| {
                unpermute_rows(t, heads).map_err(|e| Error::model(&path, format!("layer {l}: un-permuting query/key rows: {e}")))
            };
            layer.q.weight = fix(&layer.q.weight, cfg.num_heads)?;
            layer.k.weight = fix(&layer.k.weight, cfg.num_kv_heads)?;
        }
        w.num_parameters = num_parameters;
        Ok(w)
    }

    pub fn from_safetensors(cfg: &LlamaConfig, file: &mut WeightFile) -> Result<Self> {
        let mut w = Self::read(cfg, file, &HF)?;
        w.num_parameters = file.num_parameters();
        Ok(w)
    }

    fn read(cfg: &LlamaConfig, src: &mut dyn Source, names: &Names) -> Result<Self> {
        let (d, i, q, kv, vocab) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim(), cfg.vocab_size);
        let eps = cfg.rms_norm_eps;
        let mut layers = Vec::new();
        for l in 0..cfg.num_layers {
            // Laid out for the forward gemm (docs on `Linear`): decoding is one token at a time,
            // where re-packing a row-major weight on every step would dominate. A bias, where the
            // family has one, sits beside its weight (`….bias`).
            let mut lin = |p: Part, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                let name = (names.layer)(l, p);
                let w = src.fetch(&name, &[out, inp])?;
                let b = if bias { Some(src.fetch(&bias_name(&name), &[out])?) } else { None };
                Ok(Linear::new(w, b).into_gemm_layout()?)
            };
            let (qkv, o, m) = (cfg.qkv_bias, cfg.o_bias, cfg.mlp_bias);
            let (wq, wk, wv, wo) = (lin(Part::Q, q, d, qkv)?, lin(Part::K, kv, d, qkv)?, lin(Part::V, kv, d, qkv)?, lin(Part::O, d, q, o)?);
            let (gate, up, down) = (lin(Part::Gate, i, d, m)?, lin(Part::Up, i, d, m)?, lin(Part::Down, d, i, m)?);
            let mut get = |p: Part, shape: &[usize]| src.fetch(&(names.layer)(l, p), shape);
            let (q_norm, k_norm) = if cfg.qk_norm {
                let hd = cfg.head_dim;
                (Some(RmsNorm::new(get(Part::QNorm, &[hd])?, eps)), Some(RmsNorm::new(get(Part::KNorm, &[hd])?, eps)))
            } else {
                (None, None)
            };
            layers.push(LayerWeights {
                attn_norm: RmsNorm::new(get(Part::AttnNorm, &[d])?, eps),
                q: wq,
                k: wk,
                v: wv,
                o: wo,
                mlp_norm: RmsNorm::new(get(Part::MlpNorm, &[d])?, eps),
                gate,
                up,
                down,
                q_norm,
                k_norm,
            });
        }
        let lm_head = match cfg.tied_embeddings {
            // Tied: the output matrix is the embedding matrix, whatever else the file holds.
            Some(true) => None,
            Some(false) if !src.has(names.lm_head) => {
                return Err(Error::model(
                    src.path(),
                    format!("config.json says tie_word_embeddings: false but there is no `{}` tensor", names.lm_head),
                ))
            }
            _ if src.has(names.lm_head) => Some(src.fetch(names.lm_head, &[vocab, d])?),
            _ => None,
        };
        Ok(LlamaWeights {
            embed: src.fetch(names.embed, &[vocab, d])?,
            layers,
            norm: RmsNorm::new(src.fetch(names.norm, &[d])?, eps),
            lm_head,
            num_parameters: 0,
        })
    }
}
