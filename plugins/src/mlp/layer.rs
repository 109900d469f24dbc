//! `mlp`: the adjustment module of the original ReFT write-up,
//! Linear(d→hidden) → activation → Linear(hidden→d).

use super::config::MlpConfig;
use crate::common::{activation::Activation, affine};
use reft_core::candle_core::{Tensor, Var};
use reft_core::onnx::Graph;
use reft_core::intervention::{BuildSpec, Ctx, Intervention, NamedVar};
use reft_core::{Error, Result};

pub struct MlpEdit {
    pub up_weight: Var,
    pub up_bias: Var,
    pub down_weight: Var,
    pub down_bias: Var,
    pub activation: Activation,
    pub residual: bool,
    pub dropout: f32,
}

impl MlpEdit {
    pub fn build(spec: &mut BuildSpec) -> Result<Self> {
        let cfg: MlpConfig = spec.options("mlp")?;
        // Bounded before anything is allocated: a typo such as `hidden: 99999999999` must be
        // an error, not an attempt to allocate terabytes.
        const MAX_HIDDEN: usize = 1 << 20;
        if cfg.hidden == 0 || cfg.hidden > MAX_HIDDEN {
            return Err(Error::Plugin(format!(
                "mlp: `hidden` must be between 1 and {MAX_HIDDEN}, got {}",
                cfg.hidden
            )));
        }
        if !(0.0..1.0).contains(&cfg.dropout) {
            return Err(Error::Plugin(format!("mlp: `dropout` must be in [0, 1), got {}", cfg.dropout)));
        }
        let (d, k, dt, dev) = (spec.in_dim, cfg.hidden, spec.dtype, spec.device);
        let var = |t: Tensor| Var::from_tensor(&t);
        let up_weight = var(spec.rng.torch_linear_init((k, d), d, dt, dev)?)?;
        let up_bias = var(spec.rng.torch_linear_init(k, d, dt, dev)?)?;
        let (down_weight, down_bias) = if cfg.residual {
            (Var::zeros((d, k), dt, dev)?, Var::zeros(d, dt, dev)?)
        } else {
            (
                var(spec.rng.torch_linear_init((d, k), k, dt, dev)?)?,
                var(spec.rng.torch_linear_init(d, k, dt, dev)?)?,
            )
        };
        Ok(MlpEdit {
            up_weight,
            up_bias,
            down_weight,
            down_bias,
            activation: cfg.activation,
            residual: cfg.residual,
            dropout: cfg.dropout,
        })
    }
}

impl Intervention for MlpEdit {
    fn kind(&self) -> &str {
        "mlp"
    }

    fn delta(&self, h: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let mut hidden = self.activation.apply(&affine(h, &self.up_weight, Some(&self.up_bias))?)?;
        if ctx.train && self.dropout > 0.0 {
            hidden = reft_core::rng::dropout(&hidden, self.dropout, &mut ctx.rng.borrow_mut())?;
        }
        let out = affine(&hidden, &self.down_weight, Some(&self.down_bias))?;
        Ok(if self.residual { out } else { (out - h)? })
    }

    /// Eval mode: no dropout.
    fn to_onnx(&self, g: &mut Graph, h: &str) -> Result<String> {
        let up = g.linear("up", h, self.up_weight.as_tensor(), Some(self.up_bias.as_tensor()))?;
        let hidden = self.activation.to_onnx(g, &up);
        let out = g.linear("down", &hidden, self.down_weight.as_tensor(), Some(self.down_bias.as_tensor()))?;
        Ok(if self.residual { out } else { g.sub(&out, h) })
    }

    fn state(&self) -> Vec<NamedVar> {
        vec![
            NamedVar::trainable("up.weight", self.up_weight.clone()),
            NamedVar::trainable("up.bias", self.up_bias.clone()),
            NamedVar::trainable("down.weight", self.down_weight.clone()),
            NamedVar::trainable("down.bias", self.down_bias.clone()),
        ]
    }
}
