//! `gated_steering`: an example third-party intervention, built as its own shared library
//! and loaded by `reft` at run time (docs/plugins.md).
//!
//! Φ(h) = h + σ(gᵀh + c)·v: a steering vector `v` added where a learned gate fires. The gate
//! reads the representation itself, so the edit can be strong on some tokens and absent on
//! others. `v` starts at zero, so training starts at the identity.

use reft_sdk::candle_nn;
use reft_sdk::prelude::*;
use serde::Deserialize;

/// Recipe options. Unknown keys are refused, so a typo is an error rather than a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatedSteeringConfig {
    /// Standard deviation of the gate's initial weights `g`.
    #[serde(default = "default_gate_init_std")]
    gate_init_std: f32,
}

fn default_gate_init_std() -> f32 {
    0.02
}

pub struct GatedSteering {
    /// `g`, `[d, 1]`: what the gate looks for.
    gate: Var,
    /// `c`, `[1]`: the gate's bias.
    gate_bias: Var,
    /// `v`, `[d]`: the direction added where the gate is open.
    steer: Var,
}

impl GatedSteering {
    fn build(spec: &mut BuildSpec) -> Result<GatedSteering> {
        let cfg: GatedSteeringConfig = spec.options("gated_steering")?;
        let d = spec.in_dim;
        Ok(GatedSteering {
            gate: Var::from_tensor(&spec.rng.normal((d, 1), cfg.gate_init_std, spec.dtype, spec.device)?)?,
            gate_bias: Var::zeros(1, spec.dtype, spec.device)?,
            steer: Var::zeros(d, spec.dtype, spec.device)?,
        })
    }
}

impl Intervention for GatedSteering {
    fn kind(&self) -> &str {
        "gated_steering"
    }

    /// Δ = σ(h·g + c) ⊙ v, `[batch, seq, d]`.
    fn delta(&self, h: &Tensor, _ctx: &Ctx) -> Result<Tensor> {
        let open = candle_nn::ops::sigmoid(&h.broadcast_matmul(self.gate.as_tensor())?.broadcast_add(self.gate_bias.as_tensor())?)?;
        Ok(open.broadcast_mul(self.steer.as_tensor())?)
    }

    /// The same Δ as ONNX nodes: MatMul, Add, Sigmoid, Mul.
    fn to_onnx(&self, g: &mut Graph, h: &str) -> Result<String> {
        let gate = g.weight("gate", self.gate.as_tensor())?;
        let bias = g.weight("gate_bias", self.gate_bias.as_tensor())?;
        let steer = g.weight("steer", self.steer.as_tensor())?;
        let logit = g.matmul(h, &gate);
        let logit = g.add(&logit, &bias);
        let open = g.node("Sigmoid", &[&logit], vec![]);
        Ok(g.mul(&open, &steer))
    }

    fn state(&self) -> Vec<NamedVar> {
        vec![
            NamedVar::trainable("gate", self.gate.clone()),
            NamedVar::trainable("gate_bias", self.gate_bias.clone()),
            NamedVar::trainable("steer", self.steer.clone()),
        ]
    }
}

fn build(spec: &mut BuildSpec) -> Result<Box<dyn Intervention>> {
    Ok(Box::new(GatedSteering::build(spec)?))
}

fn register(registrar: &mut Registrar) {
    registrar.add(PluginFactory {
        name: "gated_steering",
        version: env!("CARGO_PKG_VERSION"),
        description: "h + σ(gᵀh + c)·v, a steering vector behind a learned gate (example run-time plugin)",
        hook_kind: HookKind::Representation,
        build,
    });
}

reft_sdk::declare_plugin!(register);
