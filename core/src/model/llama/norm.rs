//! RMSNorm, `x / sqrt(mean(x²) + eps) · w`, through reft's fused op with its own backward
//! (`ops::frozen_rms_norm`): candle's fused `rms_norm` has no backward, and an intervention
//! below a norm needs the gradient through it (docs/plugins.md;
//! `tests::gradients_flow_through_a_block` checks it).

use candle_core::{Result, Tensor};

#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        RmsNorm { weight, eps }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::frozen_rms_norm(x, &self.weight, self.eps)
    }
}
