//! The low-rank ReFT family, after pyreft's intervention classes. With h a row vector:
//!
//! | kind       | Φ(h) − h                        | parameters            |
//! |------------|---------------------------------|-----------------------|
//! | `loreft`   | Rᵀ(act(Wh + b) − Rh)            | R (orthonormal), W, b |
//! | `noreft`   | W2ᵀ(act(W1h + b) − W2h [− b2])  | W1, b, W2 [, b2]      |
//! | `consreft` | Rᵀ(b − Rh)                      | R (orthonormal), b    |
//! | `lobireft` | Rᵀb                             | R (orthonormal), b    |
//! | `direft`   | Rᵀ act(Wh + b)                  | R (orthonormal), W, b |
//! | `nodireft` | W2ᵀ act(W1h + b)                | W1, b, W2             |
//!
//! Dropout, when set, falls on the whole intervened output `h + (Φ(h) − h)` as in pyreft.

use super::config::ReftConfig;
use crate::common::{activation::Activation, affine, rotation::Rotation};
use reft_core::candle_core::{Tensor, Var};
use reft_core::onnx::Graph;
use reft_core::intervention::{BuildSpec, Ctx, Intervention, NamedVar};
use reft_core::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    LoReft,
    NoReft,
    ConsReft,
    LobiReft,
    DiReft,
    NodiReft,
}

impl Variant {
    pub const fn name(self) -> &'static str {
        match self {
            Variant::LoReft => "loreft",
            Variant::NoReft => "noreft",
            Variant::ConsReft => "consreft",
            Variant::LobiReft => "lobireft",
            Variant::DiReft => "direft",
            Variant::NodiReft => "nodireft",
        }
    }
    fn orthonormal(self) -> bool {
        matches!(self, Variant::LoReft | Variant::ConsReft | Variant::LobiReft | Variant::DiReft)
    }
    /// Whether the learned source is a linear map `Wh + b` (else a constant vector `b`).
    fn linear_source(self) -> bool {
        !matches!(self, Variant::ConsReft | Variant::LobiReft)
    }
    /// Whether the edit subtracts the current projection (`… − Rh`).
    fn subtracts_projection(self) -> bool {
        matches!(self, Variant::LoReft | Variant::NoReft | Variant::ConsReft)
    }
}

/// The projection h ↦ r-dim: orthonormal R, or a free W2 (with an optional bias).
pub enum Projection {
    Orthonormal(Rotation),
    Free { weight: Var, bias: Option<Var> },
}

pub struct LowRankReft {
    pub variant: Variant,
    pub projection: Projection,
    /// `W` `[r, d]` of the learned source, for the variants that have one.
    pub source_weight: Option<Var>,
    /// `b` `[r]`.
    pub source_bias: Var,
    pub activation: Activation,
    pub dropout: f32,
}

impl LowRankReft {
    pub fn build(variant: Variant, spec: &mut BuildSpec) -> Result<Self> {
        let kind = variant.name();
        let cfg: ReftConfig = spec.options(kind)?;
        let d = spec.in_dim;
        cfg.validate(kind, d).map_err(reft_core::Error::Plugin)?;
        let (r, dt, dev) = (cfg.rank, spec.dtype, spec.device);
        let projection = if variant.orthonormal() {
            Projection::Orthonormal(Rotation::random(d, r, spec.rng, dt, dev)?)
        } else {
            let weight = Var::from_tensor(&spec.rng.torch_linear_init((r, d), d, dt, dev)?)?;
            let bias = if cfg.add_bias {
                Some(Var::from_tensor(&spec.rng.torch_linear_init(r, d, dt, dev)?)?)
            } else {
                None
            };
            Projection::Free { weight, bias }
        };
        let (source_weight, source_bias) = if variant.linear_source() {
            let w = Var::from_tensor(&spec.rng.torch_linear_init((r, d), d, dt, dev)?)?;
            let b = Var::from_tensor(&spec.rng.torch_linear_init(r, d, dt, dev)?)?;
            (Some(w), b)
        } else {
            // pyreft initialises the constant source with torch.rand: U(0, 1).
            (None, Var::from_tensor(&spec.rng.uniform(r, 0.0, 1.0, dt, dev)?)?)
        };
        Ok(LowRankReft {
            variant,
            projection,
            source_weight,
            source_bias,
            activation: cfg.activation,
            dropout: cfg.dropout,
        })
    }

    /// `[r, d]` projection matrix (R or W2).
    pub fn projection_matrix(&self) -> Result<Tensor> {
        match &self.projection {
            Projection::Orthonormal(rot) => rot.matrix(),
            Projection::Free { weight, .. } => Ok(weight.as_tensor().clone()),
        }
    }

    /// Φ(h) − h before dropout.
    fn edit(&self, h: &Tensor) -> Result<Tensor> {
        let p = self.projection_matrix()?;
        let b = self.source_bias.as_tensor();
        // The r-dim target the edit writes along the projection's rows.
        let mut target = match &self.source_weight {
            Some(w) => self.activation.apply(&affine(h, w, Some(&self.source_bias))?)?,
            None => b.broadcast_as(low_rank_shape(h, b.dim(0)?))?.contiguous()?,
        };
        if self.variant.subtracts_projection() {
            let mut current = reft_core::nn::linear(h, &p, None)?;
            if let Projection::Free { bias: Some(b2), .. } = &self.projection {
                current = current.broadcast_add(b2.as_tensor())?;
            }
            target = (target - current)?;
        }
        // (… ) @ P : back to the hidden width.
        let (rows, r) = (target.elem_count() / p.dim(0)?, p.dim(0)?);
        let out = target.reshape((rows, r))?.matmul(&p)?;
        Ok(out.reshape(h.shape())?)
    }
}

fn low_rank_shape(h: &Tensor, r: usize) -> Vec<usize> {
    let mut s = h.dims().to_vec();
    *s.last_mut().unwrap() = r;
    s
}

impl Intervention for LowRankReft {
    fn kind(&self) -> &str {
        self.variant.name()
    }

    fn delta(&self, h: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let delta = self.edit(h)?;
        if ctx.train && self.dropout > 0.0 {
            let out = (h + &delta)?;
            let dropped = reft_core::rng::dropout(&out, self.dropout, &mut ctx.rng.borrow_mut())?;
            return Ok((dropped - h)?);
        }
        Ok(delta)
    }

    /// Eval mode (no dropout): R (or W2) is materialised once and written as a weight.
    fn to_onnx(&self, g: &mut Graph, h: &str) -> Result<String> {
        let p = self.projection_matrix()?;
        let mut target = match &self.source_weight {
            Some(w) => {
                let s = g.linear("source", h, w.as_tensor(), Some(self.source_bias.as_tensor()))?;
                self.activation.to_onnx(g, &s)
            }
            // A constant target `b` `[r]`; broadcasting spreads it over batch and positions.
            None => g.weight("source.bias", self.source_bias.as_tensor())?,
        };
        if self.variant.subtracts_projection() {
            let b2 = match &self.projection {
                Projection::Free { bias: Some(b2), .. } => Some(b2.as_tensor()),
                _ => None,
            };
            let current = g.linear("projection", h, &p, b2)?;
            target = g.sub(&target, &current);
        }
        // (…) @ P: back to the hidden width.
        let pw = g.weight("projection.matrix", &p)?;
        Ok(g.matmul(&target, &pw))
    }

    fn state(&self) -> Vec<NamedVar> {
        let mut s = match &self.projection {
            Projection::Orthonormal(rot) => rot.state("rotation."),
            Projection::Free { weight, bias } => {
                let mut v = vec![NamedVar::trainable("projection.weight", weight.clone())];
                if let Some(b) = bias {
                    v.push(NamedVar::trainable("projection.bias", b.clone()));
                }
                v
            }
        };
        if let Some(w) = &self.source_weight {
            s.push(NamedVar::trainable("source.weight", w.clone()));
        }
        s.push(NamedVar::trainable("source.bias", self.source_bias.clone()));
        s
    }
}
