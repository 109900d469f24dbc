//! One pre-norm decoder layer with its hook points, in forward order:
//! `block_input`, attention (`attention.query/key/value`, `attention_value_output`,
//! `attention.output`), `attention_output` (the attention's contribution before the residual
//! add, as pyvene names it for llama), the MLP (`mlp.gate/up`, `mlp_activation`, `mlp.down`),
//! `mlp_output` (before its residual add), `block_output` (the residual stream after the layer).

use super::attention;
use super::config::LlamaConfig;
use super::weights::LayerWeights;
use crate::error::Result;
use crate::hooks::{Component, Site};
use crate::model::Hooks;
use candle_core::Tensor;

pub struct BlockOut {
    pub hidden: Tensor,
    pub keys: Tensor,
    pub values: Tensor,
}

#[allow(clippy::too_many_arguments)]
pub fn forward(
    l: usize,
    w: &LayerWeights,
    cfg: &LlamaConfig,
    h: Tensor,
    rope: (&Tensor, &Tensor),
    bias: &Tensor,
    past: Option<&(Tensor, Tensor)>,
    hooks: &dyn Hooks,
) -> Result<BlockOut> {
    let site = |c| Site::new(l, c);
    let x = hooks.representation(site(Component::BlockInput), h)?;
    let a = attention::forward(l, w, cfg, &w.attn_norm.forward(&x)?, rope, bias, past, hooks)?;
    let attn = hooks.representation(site(Component::AttentionOutput), a.out)?;
    let mid = (x + attn)?;
    let m = super::mlp::forward(l, w, &w.mlp_norm.forward(&mid)?, hooks)?;
    let m = hooks.representation(site(Component::MlpOutput), m)?;
    let hidden = hooks.representation(site(Component::BlockOutput), (mid + m)?)?;
    Ok(BlockOut { hidden, keys: a.keys, values: a.values })
}
