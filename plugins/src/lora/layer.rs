//! `lora`: y = Wx + b + s·B(A(dropout(x))) on a frozen linear module, s = alpha/r (or
//! alpha/√r). A starts Kaiming-uniform and B at zero, as PEFT does, so training starts at
//! the frozen model; W' = W + s·B·A folds it away for deployment.

use super::config::LoraConfig;
use reft_core::candle_core::{Tensor, Var};
use reft_core::intervention::{BuildSpec, Ctx, Intervention, NamedVar};
use reft_core::{Error, Result};

pub struct Lora {
    /// `A`, `[r, in]`.
    pub a: Var,
    /// `B`, `[out, r]`.
    pub b: Var,
    pub scale: f64,
    pub dropout: f32,
}

impl Lora {
    pub fn build(spec: &mut BuildSpec) -> Result<Self> {
        let cfg: LoraConfig = spec.options("lora")?;
        cfg.validate().map_err(Error::Plugin)?;
        let (r, dt, dev) = (cfg.rank, spec.dtype, spec.device);
        // PEFT's default init: kaiming_uniform_(a=√5) on A, i.e. U(±1/√in), the same bound
        // as torch's nn.Linear default.
        let a = Var::from_tensor(&spec.rng.torch_linear_init((r, spec.in_dim), spec.in_dim, dt, dev)?)?;
        let b = Var::zeros((spec.out_dim, r), dt, dev)?;
        Ok(Lora { a, b, scale: cfg.scale(), dropout: cfg.dropout })
    }
}

impl Intervention for Lora {
    fn kind(&self) -> &str {
        "lora"
    }

    fn delta(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let x = if ctx.train && self.dropout > 0.0 {
            reft_core::rng::dropout(x, self.dropout, &mut ctx.rng.borrow_mut())?
        } else {
            x.clone()
        };
        // Scale the r-wide middle rather than the out-wide result: same value, less work.
        let low = (reft_core::nn::linear(&x, self.a.as_tensor(), None)? * self.scale)?;
        Ok(reft_core::nn::linear(&low, self.b.as_tensor(), None)?)
    }

    fn state(&self) -> Vec<NamedVar> {
        vec![
            NamedVar::trainable("lora_A", self.a.clone()),
            NamedVar::trainable("lora_B", self.b.clone()),
        ]
    }

    fn merged_weight_delta(&self) -> Result<Option<Tensor>> {
        Ok(Some((self.b.as_tensor().matmul(self.a.as_tensor())? * self.scale)?))
    }
}
