//! Small building blocks for frozen backbones, built only from ops that candle can
//! differentiate. candle 0.11's fused `layer_norm`/`softmax_last_dim` have no backward
//! (gradients through them are silently wrong: ../DESIGN "known traps"); the
//! finite-difference test in `tests/gradients.rs` guards this.

use candle_core::{Result, Tensor, D};

/// A frozen affine map `y = x Wᵀ + b` with `W` stored `[out, in]` as in PyTorch checkpoints.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    pub fn in_dim(&self) -> usize {
        self.weight.dims()[1]
    }
    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `x` is `[..., in]`; the leading dims are flattened into one matmul.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.weight, self.bias.as_ref())
    }
}

/// `x Wᵀ + b` for `x` of any rank `[..., in]` and `W` `[out, in]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let in_dim = *dims.last().expect("linear input has at least one dim");
    let rows = x.elem_count() / in_dim.max(1);
    let y = x.reshape((rows, in_dim))?.matmul(&weight.t()?)?;
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out_dims = dims;
    *out_dims.last_mut().unwrap() = weight.dim(0)?;
    y.reshape(out_dims)
}

/// LayerNorm over the last dim with learned scale and shift, differentiable.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps as f32)
    }
}

/// Softmax over the last dim, differentiable (unlike `softmax_last_dim`).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}
