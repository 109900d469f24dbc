//! The `mlp` intervention plugin.

pub mod config;
pub mod layer;

pub use layer::MlpEdit;

use reft_core::hooks::HookKind;
use reft_core::intervention::{BuildSpec, Intervention, PluginFactory};

fn build(spec: &mut BuildSpec) -> reft_core::Result<Box<dyn Intervention>> {
    Ok(Box::new(MlpEdit::build(spec)?))
}

inventory::submit! {
    PluginFactory {
        name: "mlp",
        version: env!("CARGO_PKG_VERSION"),
        description: "h + MLP(h) (or h ← MLP(h) with residual: false), the ReFT write-up's adjustment module",
        hook_kind: HookKind::Representation,
        build,
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{build, ctx_eval, max_abs};
    use reft_core::candle_core::{DType, Device};
    use reft_core::rng::SeededRng;

    #[test]
    fn residual_starts_at_identity_and_counts_exactly() {
        let (d, k) = (384, 32);
        let m = build("mlp", "hidden: 32", d).unwrap();
        assert_eq!(m.num_trainable(), d * k + k + k * d + d);
        let h = SeededRng::new(1).normal((2, 5, d), 1.0, DType::F32, &Device::Cpu).unwrap();
        let delta = m.delta(&h, &ctx_eval()).unwrap();
        assert_eq!(max_abs(&delta, &delta.zeros_like().unwrap()), 0.0);
    }

    #[test]
    fn replacement_mode_replaces_h() {
        let m = build("mlp", "{hidden: 8, residual: false}", 16).unwrap();
        let h = SeededRng::new(2).normal((1, 3, 16), 1.0, DType::F32, &Device::Cpu).unwrap();
        // h + delta = MLP(h), which does not depend on h's scale the way h does.
        let out = (&h + m.delta(&h, &ctx_eval()).unwrap()).unwrap();
        let out2 = ((&h * 2.0).unwrap() + m.delta(&(&h * 2.0).unwrap(), &ctx_eval()).unwrap()).unwrap();
        assert!(max_abs(&out, &h) > 0.1);
        assert!(max_abs(&out2, &(&out * 2.0).unwrap()) > 1e-3, "MLP(2h) ≠ 2·MLP(h) in general");
        assert!(build("mlp", "{hidden: 0}", 16).is_err());
    }
}
