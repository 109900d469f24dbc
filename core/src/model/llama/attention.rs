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
    let site = |m| Site::new(l, Component::Linear(m));
    let heads = |t: Tensor, n: usize| -> Result<Tensor> { Ok(t.reshape((b, s, n, hd))?.transpose(1, 2)?.contiguous()?) };
    let q = heads(hooks.linear(site(LinearModule::Query), x, w.q.forward(x)?)?, h)?;
    let k = heads(hooks.linear(site(LinearModule::Key), x, w.k.forward(x)?)?, kvh)?;
    let v = heads(hooks.linear(site(LinearModule::Value), x, w.v.forward(x)?)?, kvh)?;
    // Qwen3 normalises each head's query and key before rotating them.
    let (q, k) = match (&w.q_norm, &w.k_norm) {
        (Some(qn), Some(kn)) => (qn.forward(&q)?, kn.forward(&k)?),
        _ => (q, k),
    };
    let q = Rope::apply(&q, cos, sin)?;
    let k = Rope::apply(&k, cos, sin)?;
    let (keys, values) = match past {
        Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
        None => (k, v),
    };
    let ctx = attend(&q, &keys, &values, bias, kvh, query_rows_per_chunk(b, h, s, keys.dim(2)?))?;
    let ctx = ctx.transpose(1, 2)?.reshape((b, s, h * hd))?;
    let ctx = hooks.representation(Site::new(l, Component::AttentionValueOutput), ctx)?;
    let out = hooks.linear(site(LinearModule::AttentionOut), &ctx, w.o.forward(&ctx)?)?;
    Ok(AttentionOut { out, keys, values })
}

/// The most attention scores (`[b, heads, rows, keys]` floats) one chunk may hold: 64 Mi
/// floats, 256 MiB. A long prompt's prefill would otherwise hold every query's scores at
/// once, a tensor quadratic in the prompt (5,026 tokens: 0.9 GB per layer, plus the softmax).
const MAX_SCORES_PER_CHUNK: usize = 64 << 20;

/// How many query rows to score at a time so one chunk stays under [`MAX_SCORES_PER_CHUNK`].
fn query_rows_per_chunk(b: usize, h: usize, s: usize, t: usize) -> usize {
    (MAX_SCORES_PER_CHUNK / (b * h * t).max(1)).clamp(1, s.max(1))
}

/// Grouped-query attention of `q` `[b, h, s, hd]` over `keys`/`values` `[b, kvh, t, hd]`
/// with the additive mask `bias` (`[b, 1, s, t]` or `[b, 1, 1, t]`), `rows` query rows at a
/// time: each row's softmax and weighted sum depend on that row alone, so chunking changes
/// the peak memory, not the result. Returns `[b, h, s, hd]`.
pub fn attend(q: &Tensor, keys: &Tensor, values: &Tensor, bias: &Tensor, kvh: usize, rows: usize) -> Result<Tensor> {
    let (b, h, s, hd) = q.dims4()?;
    let t = keys.dim(2)?;
    let rep = h / kvh;
    let scale = 1.0 / (hd as f64).sqrt();
    let block = |q: &Tensor, bias: &Tensor| -> Result<Tensor> {
        let n = q.dim(2)?;
        let scores = q.reshape((b, kvh, rep * n, hd))?.matmul(&keys.t()?)?.reshape((b, h, n, t))?;
        let probs = crate::ops::scaled_masked_softmax(&scores, scale, bias)?;
        Ok(probs.reshape((b, kvh, rep * n, t))?.matmul(values)?.reshape((b, h, n, hd))?)
    };
    if rows >= s {
        return block(q, bias);
    }
    let per_row_bias = bias.dim(2)? == s && s > 1;
    let mut parts = Vec::with_capacity(s.div_ceil(rows));
    for start in (0..s).step_by(rows) {
        let n = rows.min(s - start);
        let qc = q.narrow(2, start, n)?.contiguous()?;
        let bc = if per_row_bias { bias.narrow(2, start, n)?.contiguous()? } else { bias.clone() };
        parts.push(block(&qc, &bc)?);
    }
    Ok(Tensor::cat(&parts, 2)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;
    use candle_core::{DType, Device};

    #[test]
    fn attention_in_query_chunks_equals_all_at_once() {
        let (b, h, kvh, s, t, hd) = (2, 6, 2, 7, 10, 4);
        let mut rng = SeededRng::new(9);
        let mut randn = |shape: &[usize]| rng.normal(shape, 1.0, DType::F32, &Device::Cpu).unwrap();
        let (q, k, v) = (randn(&[b, h, s, hd]), randn(&[b, kvh, t, hd]), randn(&[b, kvh, t, hd]));
        // A causal mask over 3 cached positions and the 7 new ones, per query row.
        let mask: Vec<f32> = (0..b * s * t).map(|i| if (i % t) > 3 + (i / t) % s { -1e9 } else { 0.0 }).collect();
        let bias = Tensor::from_vec(mask, (b, 1, s, t), &Device::Cpu).unwrap();
        let whole = attend(&q, &k, &v, &bias, kvh, s).unwrap();
        for rows in [1, 3, 6] {
            let chunked = attend(&q, &k, &v, &bias, kvh, rows).unwrap();
            let diff = (chunked - &whole).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(diff <= 1e-6, "{rows} rows at a time: {diff}");
        }
        assert_eq!(query_rows_per_chunk(1, 9, 5026, 5026), (64 << 20) / (9 * 5026));
    }
}
