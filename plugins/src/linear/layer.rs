//! `linear`: h + m⊙(Ah + c), with A and c zero-initialised so training starts at the identity.

use crate::common::affine;
use reft_core::candle_core::{Tensor, Var};
use reft_core::onnx::Graph;
use reft_core::intervention::{BuildSpec, Ctx, Intervention, NamedVar};
use reft_core::Result;

pub struct LinearEdit {
    /// `A`, `[d, d]`.
    pub weight: Var,
    /// `c`, `[d]`.
    pub bias: Var,
}

impl LinearEdit {
    pub fn build(spec: &mut BuildSpec) -> Result<Self> {
        let _: super::config::LinearConfig = spec.options("linear")?;
        let d = spec.in_dim;
        Ok(LinearEdit {
            weight: Var::zeros((d, d), spec.dtype, spec.device)?,
            bias: Var::zeros(d, spec.dtype, spec.device)?,
        })
    }
}

impl Intervention for LinearEdit {
    fn kind(&self) -> &str {
        "linear"
    }
    fn delta(&self, h: &Tensor, _ctx: &Ctx) -> Result<Tensor> {
        affine(h, &self.weight, Some(&self.bias))
    }
    fn to_onnx(&self, g: &mut Graph, h: &str) -> Result<String> {
        g.linear("affine", h, self.weight.as_tensor(), Some(self.bias.as_tensor()))
    }
    fn state(&self) -> Vec<NamedVar> {
        vec![
            NamedVar::trainable("weight", self.weight.clone()),
            NamedVar::trainable("bias", self.bias.clone()),
        ]
    }
}
