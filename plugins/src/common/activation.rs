//! Activation functions by the names pyreft and transformers use (`ACT2FN`).

use reft_core::candle_core::{Result, Tensor};
use reft_core::onnx::Graph;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Identity (pyreft's default `linear`).
    #[default]
    Linear,
    Relu,
    /// Exact (erf) GELU, as `torch.nn.GELU()`.
    Gelu,
    Tanh,
    Silu,
    Sigmoid,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Linear => Ok(x.clone()),
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu_erf(),
            Activation::Tanh => x.tanh(),
            Activation::Silu => x.silu(),
            Activation::Sigmoid => {
                // 1 / (1 + e^-x), built from differentiable primitives.
                (x.neg()?.exp()? + 1.0)?.recip()
            }
        }
    }

    /// The same function as ONNX nodes on value `x`; returns the output's name.
    pub fn to_onnx(self, g: &mut Graph, x: &str) -> String {
        match self {
            Activation::Linear => x.to_string(),
            Activation::Relu => g.node("Relu", &[x], vec![]),
            Activation::Gelu => g.gelu_erf(x),
            Activation::Tanh => g.node("Tanh", &[x], vec![]),
            Activation::Silu => {
                let s = g.node("Sigmoid", &[x], vec![]);
                g.mul(x, &s)
            }
            Activation::Sigmoid => g.node("Sigmoid", &[x], vec![]),
        }
    }
}
