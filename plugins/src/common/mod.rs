//! Pieces several plugins share.

pub mod activation;
pub mod rotation;

use reft_core::candle_core::{Tensor, Var};
use reft_core::Result;

/// `x Wᵀ + b` for `x` `[..., in]`, `W` `[out, in]`.
pub fn affine(x: &Tensor, w: &Var, b: Option<&Var>) -> Result<Tensor> {
    Ok(reft_core::nn::linear(x, w.as_tensor(), b.map(|b| b.as_tensor()))?)
}
