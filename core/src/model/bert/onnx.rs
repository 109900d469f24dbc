//! The BERT-family encoder as ONNX nodes, hook for hook the same computation as
//! [`crate::model::bert::Bert`]'s candle forward (post-norm layers, additive attention mask,
//! erf GELU), so the two agree to float rounding.

use crate::onnx::{quantize, Attr, ExportHooks, Graph};
use crate::error::Result;
use crate::hooks::{Component, LinearModule, Site};
use crate::model::bert::{Bert, Layer, PositionIds};
use crate::nn::{LayerNorm, Linear};

/// A frozen linear module with any mergeable interventions folded into its weight, then the
/// non-mergeable ones at its hook added to its output.
fn linear(g: &mut Graph, hooks: &mut dyn ExportHooks, site: Site, hint: &str, m: &Linear, x: &str) -> Result<String> {
    let w = hooks.linear_weight(site, &m.weight)?;
    let y = if g.int8_frozen {
        quantize::linear_int8(g, hint, x, &w, m.bias.as_ref())?
    } else {
        g.linear(hint, x, &w, m.bias.as_ref())?
    };
    hooks.linear(g, site, x, y)
}

fn layer_norm(g: &mut Graph, hint: &str, n: &LayerNorm, x: &str) -> Result<String> {
    let w = g.weight(&format!("{hint}.weight"), &n.weight)?;
    let b = g.weight(&format!("{hint}.bias"), &n.bias)?;
    Ok(g.node("LayerNormalization", &[x, &w, &b], vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(n.eps as f32))]))
}

/// Embeddings and every layer: the final hidden states `[batch, seq, hidden]`, or with
/// `first_token` those of the first token alone, `[batch, 1, hidden]`; then the last layer
/// runs for that token only where its hooks allow (as `Bert::forward_from_to_first_token`).
/// `ids` is int64 `[batch, seq]`; `mask` is the float attention mask `[batch, seq]`.
pub fn emit(bert: &Bert, g: &mut Graph, ids: &str, mask: &str, hooks: &mut dyn ExportHooks, first_token: bool) -> Result<String> {
    // Embeddings: word + position[0..seq] + token type 0, then LayerNorm.
    let word = g.weight("embeddings.word_embeddings.weight", &bert.word)?;
    let position = g.weight("embeddings.position_embeddings.weight", &bert.position)?;
    let type0 = g.weight("embeddings.token_type_embeddings.row0", &bert.token_type.narrow(0, 0, 1)?.squeeze(0)?)?;
    let words = g.node("Gather", &[&word, ids], vec![("axis", Attr::Int(0))]);
    let pos = match bert.config.position_ids() {
        PositionIds::FromZero => {
            let seq = g.node("Shape", &[ids], vec![("start", Attr::Int(1)), ("end", Attr::Int(2))]);
            let zero = g.const_i64("const_i64_0_1d", &[1], &[0]);
            g.node("Slice", &[&position, &zero, &seq, &zero], vec![])
        }
        // RoBERTa: pad + cumsum(not pad) on real tokens, pad on pad tokens (as `PositionIds`).
        PositionIds::AfterPadding { pad } => {
            let pad_id = g.const_i64("embeddings.pad_token_id", &[], &[pad as i64]);
            let is_pad = g.node("Equal", &[ids, &pad_id], vec![]);
            let real = g.node("Not", &[&is_pad], vec![]);
            let real = g.node("Cast", &[&real], vec![("to", Attr::Int(7))]); // int64
            let axis = g.const_i64("embeddings.seq_axis", &[], &[1]);
            let count = g.node("CumSum", &[&real, &axis], vec![]);
            let counted = g.mul(&count, &real);
            let position_ids = g.add(&counted, &pad_id);
            g.node("Gather", &[&position, &position_ids], vec![("axis", Attr::Int(0))])
        }
    };
    let e = g.add(&words, &pos);
    let e = g.add(&e, &type0);
    let e = layer_norm(g, "embeddings.LayerNorm", &bert.emb_norm, &e)?;
    let mut h = hooks.representation(g, Site::embeddings(), e)?;

    // Additive attention mask [b, 1, 1, s]: 0 on real keys, -1e9 on padding.
    let one = g.scalar(1.0);
    let big = g.scalar(1e9);
    let m1 = g.sub(mask, &one);
    let m1 = g.mul(&m1, &big);
    let axes = g.const_i64("const_axes_1_2", &[2], &[1, 2]);
    let bias = g.node("Unsqueeze", &[&m1, &axes], vec![]);

    let n = bert.layers.len();
    let shortcut = first_token && n > 0 && hooks.first_token_suffices(n - 1);
    for (l, layer) in bert.layers.iter().enumerate() {
        h = emit_layer(bert, g, l, layer, h, &bias, hooks, shortcut && l == n - 1)?;
    }
    Ok(if first_token && !shortcut { crate::onnx::first_token(g, &h) } else { h })
}

/// Layer `l`; with `first_only`, queries, attention output and feed-forward for the first
/// token alone (keys and values from every token), its output `[batch, 1, hidden]`.
#[allow(clippy::too_many_arguments)]
fn emit_layer(bert: &Bert, g: &mut Graph, l: usize, layer: &Layer, h: String, bias: &str, hooks: &mut dyn ExportHooks, first_only: bool) -> Result<String> {
    let site = |c| Site::new(l, c);
    let p = format!("encoder.layer.{l}");
    let cfg = &bert.config;
    let (heads, hd, d) = (cfg.num_attention_heads as i64, bert.config.head_dim() as i64, cfg.hidden_size as i64);

    let x = hooks.representation(g, site(Component::BlockInput), h)?;
    let xq = if first_only { crate::onnx::first_token(g, &x) } else { x.clone() };
    // Self-attention.
    let q = linear(g, hooks, site(Component::Linear(LinearModule::Query)), &format!("{p}.attention.self.query"), &layer.query, &xq)?;
    let k = linear(g, hooks, site(Component::Linear(LinearModule::Key)), &format!("{p}.attention.self.key"), &layer.key, &x)?;
    let v = linear(g, hooks, site(Component::Linear(LinearModule::Value)), &format!("{p}.attention.self.value"), &layer.value, &x)?;
    let split_shape = g.const_i64(&format!("{p}.attention.split_shape"), &[4], &[0, 0, heads, hd]);
    let heads_of = |g: &mut Graph, t: &str, perm: Vec<i64>| {
        let r = g.node("Reshape", &[t, &split_shape], vec![]);
        g.node("Transpose", &[&r], vec![("perm", Attr::Ints(perm))])
    };
    let q = heads_of(g, &q, vec![0, 2, 1, 3]); // [b, h, s, hd]
    let kt = heads_of(g, &k, vec![0, 2, 3, 1]); // [b, h, hd, s]
    let v = heads_of(g, &v, vec![0, 2, 1, 3]);
    let scores = g.matmul(&q, &kt);
    let scale = g.scalar((hd as f32).sqrt());
    let scores = g.node("Div", &[&scores, &scale], vec![]);
    let scores = g.add(&scores, bias);
    let probs = g.node("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]);
    let ctx = g.matmul(&probs, &v);
    let ctx = g.node("Transpose", &[&ctx], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
    let merge_shape = g.const_i64(&format!("{p}.attention.merge_shape"), &[3], &[0, 0, d]);
    let ctx = g.node("Reshape", &[&ctx, &merge_shape], vec![]);
    // After attention every value belongs to one query token: with `first_only` these are
    // the first tokens' states, edited as position 0 of the full states.
    let rep = |hooks: &mut dyn ExportHooks, g: &mut Graph, c: Component, h: String| {
        if first_only {
            hooks.first_token_representation(g, site(c), h)
        } else {
            hooks.representation(g, site(c), h)
        }
    };
    let ctx = rep(hooks, g, Component::AttentionValueOutput, ctx)?;
    let a = linear(g, hooks, site(Component::Linear(LinearModule::AttentionOut)), &format!("{p}.attention.output.dense"), &layer.attn_out, &ctx)?;
    let a = g.add(&a, &xq);
    let a = layer_norm(g, &format!("{p}.attention.output.LayerNorm"), &layer.attn_norm, &a)?;
    let a = rep(hooks, g, Component::AttentionOutput, a)?;
    // MLP.
    let up = linear(g, hooks, site(Component::Linear(LinearModule::MlpUp)), &format!("{p}.intermediate.dense"), &layer.up, &a)?;
    let act = match cfg.hidden_act.as_str() {
        "relu" => g.node("Relu", &[&up], vec![]),
        "gelu_new" | "gelu_pytorch_tanh" => g.gelu_tanh(&up),
        _ => g.gelu_erf(&up),
    };
    let act = rep(hooks, g, Component::MlpActivation, act)?;
    let down = linear(g, hooks, site(Component::Linear(LinearModule::MlpDown)), &format!("{p}.output.dense"), &layer.down, &act)?;
    let o = rep(hooks, g, Component::MlpOutput, down)?;
    let out = g.add(&o, &a);
    let out = layer_norm(g, &format!("{p}.output.LayerNorm"), &layer.out_norm, &out)?;
    rep(hooks, g, Component::BlockOutput, out)
}

/// The pretrained pooler on the first token, `tanh(W h[:,0] + b)`, when the checkpoint has one.
pub fn pool_first(bert: &Bert, g: &mut Graph, hidden: &str) -> Result<Option<String>> {
    let Some(p) = &bert.pooler else { return Ok(None) };
    let idx = g.const_i64("const_i64_0", &[], &[0]);
    let cls = g.node("Gather", &[hidden, &idx], vec![("axis", Attr::Int(1))]);
    let y = g.linear("pooler.dense", &cls, &p.weight, p.bias.as_ref())?;
    Ok(Some(g.node("Tanh", &[&y], vec![])))
}
