//! The SwiGLU feed-forward block, `down(silu(gate(x)) ⊙ up(x))`, with its hook points:
//! each projection is a linear hook (`mlp.gate`, `mlp.up`, `mlp.down`) and `silu(gate(x))`
//! is `mlp_activation` (pyvene's llama `mlp.act_fn` output).

use super::weights::LayerWeights;
use crate::error::Result;
use crate::hooks::{Component, LinearModule, Site};
use crate::model::Hooks;
use candle_core::Tensor;

pub fn forward(l: usize, w: &LayerWeights, x: &Tensor, hooks: &dyn Hooks) -> Result<Tensor> {
    let site = |c| Site::new(l, c);
    let gate = hooks.linear(site(Component::Linear(LinearModule::MlpGate)), x, w.gate.forward(x)?)?;
    let up = hooks.linear(site(Component::Linear(LinearModule::MlpUp)), x, w.up.forward(x)?)?;
    let act = hooks.representation(site(Component::MlpActivation), gate.silu()?)?;
    let inner = (act * up)?;
    hooks.linear(site(Component::Linear(LinearModule::MlpDown)), &inner, w.down.forward(&inner)?)
}
