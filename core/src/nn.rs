//! Small building blocks for frozen backbones. Every one is differentiable with respect to its
//! input: candle 0.11's fused `layer_norm`/`softmax_last_dim` have no backward (gradients
//! through them are silently wrong; docs/plugins.md names them), so the frozen modules here run
//! on [`crate::ops`], fused ops with their own input-only backward; the finite-difference
//! tests there and in `tests/gradients.rs` guard this.

use crate::ops;
use candle_core::{Result, Tensor};

/// A frozen affine map `y = x Wᵀ + b` with `W` `[out, in]` as in PyTorch checkpoints.
///
/// How `W` sits in memory decides how fast the CPU gemm runs. Checkpoints store it row-major
/// `[out, in]`; for the forward `x Wᵀ`, gemm then gathers it element by element into its
/// packing buffer on every call, a strided copy of the whole weight that costs about as much
/// as the arithmetic for a 64-token batch. [`Linear::into_gemm_layout`] stores the same
/// matrix as an `[in, out]` buffer, which gemm streams without packing. `weight` stays the
/// same `[out, in]` tensor logically (a transposed view), so every reader sees the same
/// values. The backward `grad_y · W` then gathers instead, but over a training batch's
/// rows that costs little: keeping a second, row-major copy for it measured no faster
/// (docs/benchmarks.md).
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    /// Store `W` as an `[in, out]` buffer for the forward gemm (see the type's docs); same
    /// values, same logical shape, no extra memory once the old buffer is dropped.
    pub fn into_gemm_layout(self) -> Result<Self> {
        let weight = self.weight.t()?.contiguous()?.t()?;
        Ok(Linear { weight, bias: self.bias })
    }

    pub fn in_dim(&self) -> usize {
        self.weight.dims()[1]
    }
    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `x` is `[..., in]`; the leading dims are flattened into one matmul. The weights are
    /// frozen: the backward gives the gradient for `x` only ([`ops::frozen_linear`]; a
    /// `Var` weight falls back to the fully differentiable [`linear`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::frozen_linear(x, &self.weight, self.bias.as_ref())
    }
}

pub use crate::ops::linear;

/// LayerNorm over the last dim with a frozen scale and shift, differentiable with respect to
/// its input ([`ops::frozen_layer_norm`]; `Var` parameters fall back to the slow path, which
/// differentiates them too).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::frozen_layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// Softmax over the last dim, differentiable (unlike candle's `softmax_last_dim`).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    ops::softmax_last(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn linear_module_uses_the_frozen_path() {
        let randn = |seed: u64, shape: &[usize]| crate::rng::SeededRng::new(seed).normal(shape, 1.0, DType::F64, &Device::Cpu).unwrap();
        let m = Linear::new(randn(1, &[8, 16]), Some(randn(2, &[8])));
        let x = Var::from_tensor(&randn(3, &[5, 16])).unwrap();
        let g = m.forward(&x).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_some());
        assert!(g.get(&m.weight).is_none() && g.get(m.bias.as_ref().unwrap()).is_none());
    }
}
