//! Causal self-attention with grouped-query heads (GQA: several query heads share one
//! key/value head) and the linear hooks `attention.query/key/value/output`.
//!
//! Query heads are grouped by the key/value head they read (`[b, kv, rep·s, hd]`), so a
//! group attends with one matmul against its shared keys: the keys and values are never
//! copied `rep` times (Hugging Face's `repeat_kv` gives the same products).

use super::config::LlamaConfig;
use super::rope::Rope;
use super::weights::LayerWeights;
use crate::error::Result;
use crate::hooks::{Component, LinearModule, Site};
use crate::model::Hooks;
use candle_core::Tensor;

/// What the rest of the block needs from one attention pass.
pub struct AttentionOut {
    /// The output projection's result `[b, s, hidden]`, before the residual add.
    pub out: Tensor,
    /// Keys and values of every position so far (cached ones, then these): the new cache.
    pub keys: Tensor,
    pub values: Tensor,
}

/// `x` `[b, s, hidden]` is the normed input; `cos`/`sin` the RoPE tables of its positions;
/// `bias` the additive mask `[b, 1, s, t]` (or `[b, 1, 1, t]`) over all `t` keys;
/// `past` the cached keys/values of the earlier positions.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    l: usize,
    w: &LayerWeights,
    cfg: &LlamaConfig,
    x: &Tensor,
    (cos, sin): (&Tensor, &Tensor),
    bias: &Tensor,
    past: Option<&(Tensor, Tensor)>,
    hooks: &dyn Hooks,
) -> Result<AttentionOut> {
    let (b, s, _) = x.dims3()?;
    let (h, kvh, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let rep = h / kvh;
    let site = |m| Site::new(l, Component::Linear(m));
    let heads = |t: Tensor, n: usize| -> Result<Tensor> { Ok(t.reshape((b, s, n, hd))?.transpose(1, 2)?.contiguous()?) };
    let q = heads(hooks.linear(site(LinearModule::Query), x, w.q.forward(x)?)?, h)?;
    let k = heads(hooks.linear(site(LinearModule::Key), x, w.k.forward(x)?)?, kvh)?;
    let v = heads(hooks.linear(site(LinearModule::Value), x, w.v.forward(x)?)?, kvh)?;
    let q = Rope::apply(&q, cos, sin)?;
    let k = Rope::apply(&k, cos, sin)?;
    let (keys, values) = match past {
        Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
        None => (k, v),
    };
    let t = keys.dim(2)?;
    let scores = q.reshape((b, kvh, rep * s, hd))?.matmul(&keys.t()?)?.reshape((b, h, s, t))?;
    let probs = crate::ops::scaled_masked_softmax(&scores, 1.0 / (hd as f64).sqrt(), bias)?;
    let ctx = probs.reshape((b, kvh, rep * s, t))?.matmul(&values)?;
    let ctx = ctx.reshape((b, h, s, hd))?.transpose(1, 2)?.reshape((b, s, h * hd))?;
    let ctx = hooks.representation(Site::new(l, Component::AttentionValueOutput), ctx)?;
    let out = hooks.linear(site(LinearModule::AttentionOut), &ctx, w.o.forward(&ctx)?)?;
    Ok(AttentionOut { out, keys, values })
}
