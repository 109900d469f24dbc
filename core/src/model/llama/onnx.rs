//! The llama decoder as ONNX nodes, hook for hook the same computation as
//! [`crate::model::llama::Llama`]'s candle forward (`block.rs`, `attention.rs`, `mlp.rs`):
//! pre-norm layers with RMSNorm, half-rotation RoPE on the Hugging Face layout, grouped-query
//! attention with a causal + key-padding mask, SwiGLU, final RMSNorm, tied or separate LM head.
//!
//! Two entry points:
//! - [`emit_hidden`] ([`crate::model::Backbone::to_onnx`]): ids and mask to the final hidden
//!   states, positions `0..seq`, no cache — what a classification pipeline needs;
//! - the [`DecoderExport`] impl: the prefill and decode-step graphs of a causal-LM pipeline
//!   (position ids and past keys/values in, last-token logits and present keys/values out).
//!
//! Shapes inside: `b` batch, `s` new tokens, `p` cached (past) positions, `t = p + s` keys,
//! `h` query heads, `kv` key/value heads, `hd` head dim, `rep = h / kv`.

use crate::onnx::decoder::{DecoderExport, DecoderGeometry, DecoderInputs, DecoderOutputs};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::{quantize, Attr, ExportHooks, Graph};
use crate::error::{Error, Result};
use crate::hooks::{Component, LinearModule, Site};
use crate::model::llama::weights::LayerWeights;
use crate::model::llama::Llama;
use crate::nn::Linear;
use candle_core::Tensor;

/// Additive mask value of a key a query may not see: the candle forward's `MASKED`.
const MASKED: f32 = -1e9;

/// Constants and per-graph values every layer shares (written once, not per layer).
struct Shared {
    /// RoPE tables for the new tokens' positions, broadcastable to `[b, heads, s, hd]`.
    cos: String,
    sin: String,
    /// Additive attention mask `[b, 1, s, t]`.
    bias: String,
    rope_split: String,
    q_heads: String,
    kv_heads: String,
    group: String,
    scores: String,
    ctx_group: String,
    ctx_heads: String,
    merge: String,
}

/// A frozen linear module (no bias in llama) with mergeable interventions folded into its
/// weight, then the non-mergeable ones at its hook added to its output.
fn linear(g: &mut Graph, hooks: &mut dyn ExportHooks, site: Site, hint: &str, m: &Linear, x: &str) -> Result<String> {
    let w = hooks.linear_weight(site, &m.weight)?;
    let b = m.bias.as_ref();
    let y = if g.int8_frozen { quantize::linear_int8(g, hint, x, &w, b)? } else { g.linear(hint, x, &w, b)? };
    hooks.linear(g, site, x, y)
}

/// RMSNorm `x / sqrt(mean(x²) + eps) · w` in the op order of `norm.rs` (Pow 2 → ReduceMean →
/// Add → Sqrt → Div → Mul is also the pattern ONNX Runtime fuses into one kernel).
fn rms_norm(g: &mut Graph, hint: &str, weight: &Tensor, eps: f64, x: &str) -> Result<String> {
    let two = g.scalar(2.0);
    let sq = g.node("Pow", &[x, &two], vec![]);
    // Opset 17's ReduceMean takes its axes as an attribute (an input only from opset 18).
    let ms = g.node("ReduceMean", &[&sq], vec![("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))]);
    let eps = g.scalar(eps as f32);
    let v = g.add(&ms, &eps);
    let r = g.node("Sqrt", &[&v], vec![]);
    let y = g.node("Div", &[x, &r], vec![]);
    let w = g.weight(&format!("{hint}.weight"), weight)?;
    Ok(g.mul(&y, &w))
}

/// `x·cos + rotate_half(x)·sin` with `rotate_half(x) = [−x₂, x₁]` (`rope.rs`).
fn rotate(g: &mut Graph, sh: &Shared, x: &str) -> String {
    let halves = g.node_multi("Split", &[x, &sh.rope_split], 2, vec![("axis", Attr::Int(3))]);
    let neg = g.node("Neg", &[&halves[1]], vec![]);
    let rotated = g.node("Concat", &[&neg, &halves[0]], vec![("axis", Attr::Int(3))]);
    let a = g.mul(x, &sh.cos);
    let b = g.mul(&rotated, &sh.sin);
    g.add(&a, &b)
}

/// A 0-d int64 scalar from a 1-element 1-d tensor.
fn scalar_of(g: &mut Graph, one_d: &str) -> String {
    let axes = g.const_i64("const_axes_0", &[1], &[0]);
    g.node("Squeeze", &[one_d, &axes], vec![])
}

/// What every layer shares: RoPE rows for the new tokens' positions, the attention mask and
/// the reshape targets. `past_len` is the number of cached positions (an int64 scalar).
fn shared(llama: &Llama, g: &mut Graph, ids: &str, mask: &str, positions: Option<&str>) -> Result<(Shared, String, String)> {
    let cfg = &llama.config;
    let (h, kv, hd) = (cfg.num_heads as i64, cfg.num_kv_heads as i64, cfg.head_dim as i64);

    // Lengths: s new tokens, t keys (the mask covers the past and the new tokens), p = t − s.
    let s1 = g.node("Shape", &[ids], vec![("start", Attr::Int(1)), ("end", Attr::Int(2))]);
    let t1 = g.node("Shape", &[mask], vec![("start", Attr::Int(1)), ("end", Attr::Int(2))]);
    let s = scalar_of(g, &s1);
    let t = scalar_of(g, &t1);
    let p = g.sub(&t, &s);
    let zero = g.const_i64("const_i64_0", &[], &[0]);
    let one = g.const_i64("const_i64_1", &[], &[1]);

    // RoPE tables of every position the model supports, computed as candle computes them
    // (f64 angles, then f32), so the rows gathered here are bit for bit the ones it uses.
    let (cos, sin) = llama.rope_tables(cfg.max_position_embeddings)?;
    let cos_t = g.weight("rope.cos_table", &cos)?;
    let sin_t = g.weight("rope.sin_table", &sin)?;
    let (cos, sin) = match positions {
        // [b, s] ids -> [b, s, hd] -> [b, 1, s, hd]
        Some(pos) => {
            let axes = g.const_i64("const_axes_1", &[1], &[1]);
            let c = g.node("Gather", &[&cos_t, pos], vec![("axis", Attr::Int(0))]);
            let sn = g.node("Gather", &[&sin_t, pos], vec![("axis", Attr::Int(0))]);
            (g.node("Unsqueeze", &[&c, &axes], vec![]), g.node("Unsqueeze", &[&sn, &axes], vec![]))
        }
        // positions p..t for every row: [s, hd], broadcast over batch and heads.
        None => {
            let r = g.node("Range", &[&p, &t, &one], vec![]);
            (g.node("Gather", &[&cos_t, &r], vec![("axis", Attr::Int(0))]), g.node("Gather", &[&sin_t, &r], vec![("axis", Attr::Int(0))]))
        }
    };

    // Attention mask [b, 1, s, t]: query i (position p + i) sees key j when j ≤ p + i
    // (causal) and key j is a real token; 0 where it sees, −1e9 where not.
    let keys = g.node("Range", &[&zero, &t, &one], vec![]);
    let queries = g.node("Range", &[&p, &t, &one], vec![]);
    let axes1 = g.const_i64("const_axes_1", &[1], &[1]);
    let queries = g.node("Unsqueeze", &[&queries, &axes1], vec![]);
    let causal = g.node("LessOrEqual", &[&keys, &queries], vec![]);
    let causal = g.node("Cast", &[&causal], vec![("to", Attr::Int(DataType::Float as i64))]);
    let axes12 = g.const_i64("const_axes_1_2", &[2], &[1, 2]);
    let key_ok = g.node("Unsqueeze", &[mask, &axes12], vec![]);
    let visible = g.mul(&causal, &key_ok);
    let one_f = g.scalar(1.0);
    let hidden_f = g.sub(&visible, &one_f);
    let big = g.scalar(-MASKED);
    let bias = g.mul(&hidden_f, &big);

    let sh = Shared {
        cos,
        sin,
        bias,
        rope_split: g.const_i64("rope.split", &[2], &[hd / 2, hd / 2]),
        q_heads: g.const_i64("attention.q_heads_shape", &[4], &[0, 0, h, hd]),
        kv_heads: g.const_i64("attention.kv_heads_shape", &[4], &[0, 0, kv, hd]),
        // Query heads grouped by the key/value head they read: [b, kv, rep·s, hd].
        group: g.const_i64("attention.group_shape", &[4], &[0, kv, -1, hd]),
        scores: g.const_i64("attention.scores_shape", &[4], &[0, h, -1, 0]),
        ctx_group: g.const_i64("attention.probs_group_shape", &[4], &[0, kv, -1, 0]),
        ctx_heads: g.const_i64("attention.ctx_heads_shape", &[4], &[0, h, -1, hd]),
        merge: g.const_i64("attention.merge_shape", &[3], &[0, 0, h * hd]),
    };
    Ok((sh, p, t))
}

/// One attention pass: returns the output projection's result and the keys/values of all
/// `t` positions (the layer's present cache).
#[allow(clippy::too_many_arguments)]
fn attention(
    llama: &Llama,
    g: &mut Graph,
    sh: &Shared,
    l: usize,
    w: &LayerWeights,
    x: &str,
    past: Option<&(String, String)>,
    hooks: &mut dyn ExportHooks,
) -> Result<(String, String, String)> {
    let hd = llama.config.head_dim;
    let p = format!("model.layers.{l}.self_attn");
    let site = |m| Site::new(l, Component::Linear(m));
    let q = linear(g, hooks, site(LinearModule::Query), &format!("{p}.q_proj"), &w.q, x)?;
    let k = linear(g, hooks, site(LinearModule::Key), &format!("{p}.k_proj"), &w.k, x)?;
    let v = linear(g, hooks, site(LinearModule::Value), &format!("{p}.v_proj"), &w.v, x)?;
    let heads = |g: &mut Graph, t: &str, shape: &str| {
        let r = g.node("Reshape", &[t, shape], vec![]);
        g.node("Transpose", &[&r], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))]) // [b, n, s, hd]
    };
    let q = heads(g, &q, &sh.q_heads);
    let k = heads(g, &k, &sh.kv_heads);
    let v = heads(g, &v, &sh.kv_heads);
    // Qwen3: RMSNorm over each query and key head before RoPE (attention.rs).
    let (q, k) = match (&w.q_norm, &w.k_norm) {
        (Some(qn), Some(kn)) => (
            rms_norm(g, &format!("{p}.q_norm"), &qn.weight, qn.eps, &q)?,
            rms_norm(g, &format!("{p}.k_norm"), &kn.weight, kn.eps, &k)?,
        ),
        _ => (q, k),
    };
    let q = rotate(g, sh, &q);
    let k = rotate(g, sh, &k);
    let (keys, values) = match past {
        Some((pk, pv)) => (
            g.node("Concat", &[pk, &k], vec![("axis", Attr::Int(2))]),
            g.node("Concat", &[pv, &v], vec![("axis", Attr::Int(2))]),
        ),
        None => (k, v),
    };
    // Each group of rep query heads attends with one matmul against its shared keys (as
    // candle does), so keys and values are never repeated.
    let qg = g.node("Reshape", &[&q, &sh.group], vec![]);
    let kt = g.node("Transpose", &[&keys], vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))]);
    let scores = g.matmul(&qg, &kt);
    let scores = g.node("Reshape", &[&scores, &sh.scores], vec![]); // [b, h, s, t]
    let scale = g.scalar(1.0 / (hd as f32).sqrt());
    let scores = g.mul(&scores, &scale);
    let scores = g.add(&scores, &sh.bias);
    let probs = g.node("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]);
    let probs = g.node("Reshape", &[&probs, &sh.ctx_group], vec![]);
    let ctx = g.matmul(&probs, &values); // [b, kv, rep·s, hd]
    let ctx = g.node("Reshape", &[&ctx, &sh.ctx_heads], vec![]);
    let ctx = g.node("Transpose", &[&ctx], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
    let ctx = g.node("Reshape", &[&ctx, &sh.merge], vec![]); // [b, s, h·hd]
    let ctx = hooks.representation(g, Site::new(l, Component::AttentionValueOutput), ctx)?;
    let out = linear(g, hooks, site(LinearModule::AttentionOut), &format!("{p}.o_proj"), &w.o, &ctx)?;
    Ok((out, keys, values))
}

/// `down(silu(gate(x)) ⊙ up(x))` with its hooks (`mlp.rs`).
fn mlp(g: &mut Graph, l: usize, w: &LayerWeights, x: &str, hooks: &mut dyn ExportHooks) -> Result<String> {
    let p = format!("model.layers.{l}.mlp");
    let site = |c| Site::new(l, c);
    let gate = linear(g, hooks, site(Component::Linear(LinearModule::MlpGate)), &format!("{p}.gate_proj"), &w.gate, x)?;
    let up = linear(g, hooks, site(Component::Linear(LinearModule::MlpUp)), &format!("{p}.up_proj"), &w.up, x)?;
    let sig = g.node("Sigmoid", &[&gate], vec![]);
    let act = g.mul(&gate, &sig);
    let act = hooks.representation(g, site(Component::MlpActivation), act)?;
    let inner = g.mul(&act, &up);
    linear(g, hooks, site(Component::Linear(LinearModule::MlpDown)), &format!("{p}.down_proj"), &w.down, &inner)
}

/// One pre-norm layer (`block.rs`): returns the new residual stream and the layer's keys/values.
#[allow(clippy::too_many_arguments)]
fn layer(
    llama: &Llama,
    g: &mut Graph,
    sh: &Shared,
    l: usize,
    h: String,
    past: Option<&(String, String)>,
    hooks: &mut dyn ExportHooks,
) -> Result<(String, String, String)> {
    let w = &llama.weights().layers[l];
    let eps = llama.config.rms_norm_eps;
    let site = |c| Site::new(l, c);
    let x = hooks.representation(g, site(Component::BlockInput), h)?;
    let n = rms_norm(g, &format!("model.layers.{l}.input_layernorm"), &w.attn_norm.weight, eps, &x)?;
    let (a, keys, values) = attention(llama, g, sh, l, w, &n, past, hooks)?;
    let a = hooks.representation(g, site(Component::AttentionOutput), a)?;
    let mid = g.add(&x, &a);
    let n = rms_norm(g, &format!("model.layers.{l}.post_attention_layernorm"), &w.mlp_norm.weight, eps, &mid)?;
    let m = mlp(g, l, w, &n, hooks)?;
    let m = hooks.representation(g, site(Component::MlpOutput), m)?;
    let out = g.add(&mid, &m);
    let out = hooks.representation(g, site(Component::BlockOutput), out)?;
    Ok((out, keys, values))
}

/// Embeddings `[b, s, d]` of int64 ids: a Gather from the embedding matrix (which the LM
/// head shares when tied).
fn embed(llama: &Llama, g: &mut Graph, ids: &str, hooks: &mut dyn ExportHooks) -> Result<(String, String)> {
    let table = g.weight("model.embed_tokens.weight", &llama.weights().embed)?;
    let e = g.node("Gather", &[&table, ids], vec![("axis", Attr::Int(0))]);
    Ok((hooks.representation(g, Site::embeddings(), e)?, table))
}

/// Final hidden states `[b, s, d]` (after the last RMSNorm) of int64 `ids` `[b, s]` with the
/// float attention `mask` `[b, s]`, positions `0..s`: the twin of `Backbone::forward`.
pub fn emit_hidden(llama: &Llama, g: &mut Graph, ids: &str, mask: &str, hooks: &mut dyn ExportHooks) -> Result<String> {
    let (sh, _, _) = shared(llama, g, ids, mask, None)?;
    let (mut h, _) = embed(llama, g, ids, hooks)?;
    for l in 0..llama.config.num_layers {
        h = layer(llama, g, &sh, l, h, None, hooks)?.0;
    }
    let w = llama.weights();
    rms_norm(g, "model.norm", &w.norm.weight, llama.config.rms_norm_eps, &h)
}

impl DecoderExport for Llama {
    fn geometry(&self) -> DecoderGeometry {
        let c = &self.config;
        DecoderGeometry {
            num_layers: c.num_layers,
            hidden_size: c.hidden_size,
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            vocab_size: c.vocab_size,
            max_positions: c.max_position_embeddings,
            eos_token_ids: c.eos_token_ids.clone(),
            tied_embeddings: self.weights().lm_head.is_none(),
        }
    }

    fn emit_decoder(&self, g: &mut Graph, io: &DecoderInputs, hooks: &mut dyn ExportHooks) -> Result<DecoderOutputs> {
        let n = self.config.num_layers;
        if let Some(past) = io.past {
            if past.len() != n {
                return Err(Error::Other(format!("ONNX decoder export: {} past key/value pairs for {n} layers", past.len())));
            }
        }
        let (sh, p, t) = shared(self, g, io.ids, io.mask, Some(io.positions))?;
        let (mut h, table) = embed(self, g, io.ids, hooks)?;
        let mut presents = Vec::with_capacity(n);
        for l in 0..n {
            let (out, keys, values) = layer(self, g, &sh, l, h, io.past.map(|p| &p[l]), hooks)?;
            h = out;
            presents.push((keys, values));
        }

        // Each row's last real token among the new ones (right or left padding): the largest
        // 1-based index where the mask is 1, minus one.
        let axes0 = g.const_i64("const_axes_0", &[1], &[0]);
        let starts = g.node("Unsqueeze", &[&p, &axes0], vec![]);
        let ends = g.node("Unsqueeze", &[&t, &axes0], vec![]);
        let axes1 = g.const_i64("const_axes_1", &[1], &[1]);
        let new_mask = g.node("Slice", &[io.mask, &starts, &ends, &axes1], vec![]);
        let zero = g.const_i64("const_i64_0", &[], &[0]);
        let one = g.const_i64("const_i64_1", &[], &[1]);
        let s = g.sub(&t, &p);
        let idx = g.node("Range", &[&zero, &s, &one], vec![]);
        let idx = g.node("Cast", &[&idx], vec![("to", Attr::Int(DataType::Float as i64))]);
        let one_f = g.scalar(1.0);
        let rank = g.add(&idx, &one_f);
        let weighted = g.mul(&new_mask, &rank);
        let last = g.node("ReduceMax", &[&weighted], vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))]); // [b, 1]
        let last = g.sub(&last, &one_f);
        let last = g.node("Cast", &[&last], vec![("to", Attr::Int(DataType::Int64 as i64))]);
        let h_last = g.node("GatherND", &[&h, &last], vec![("batch_dims", Attr::Int(1))]); // [b, d]

        let w = self.weights();
        let normed = rms_norm(g, "model.norm", &w.norm.weight, self.config.rms_norm_eps, &h_last)?;
        // Tied embeddings: Gemm with transB reads the embedding initializer itself, so the
        // [vocab, d] matrix is stored once for both uses.
        let head = match &w.lm_head {
            Some(m) => g.weight("lm_head.weight", m)?,
            None => table,
        };
        let logits = g.node("Gemm", &[&normed, &head], vec![("transB", Attr::Int(1))]);
        Ok(DecoderOutputs { logits, presents })
    }
}
