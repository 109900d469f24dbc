//! RMSNorm, `x / sqrt(mean(x²) + eps) · w`, written with plain differentiable ops: candle's
//! fused `rms_norm` has no backward, and an intervention below a norm needs the gradient
//! through it (docs/plugins.md; `tests::gradients_flow_through_a_block` checks it).

use candle_core::{Result, Tensor, D};

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
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&self.weight)
    }
}
