//! The `linear` intervention plugin.

pub mod config;
pub mod layer;

pub use layer::LinearEdit;

use reft_core::hooks::HookKind;
use reft_core::intervention::{BuildSpec, Intervention, PluginFactory};

fn build(spec: &mut BuildSpec) -> reft_core::Result<Box<dyn Intervention>> {
    Ok(Box::new(LinearEdit::build(spec)?))
}

inventory::submit! {
    PluginFactory {
        name: "linear",
        version: env!("CARGO_PKG_VERSION"),
        description: "h + Ah + c, a full-rank affine edit starting at the identity",
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
    fn starts_at_identity_with_exact_count() {
        let m = build("linear", "{}", 384).unwrap();
        assert_eq!(m.num_trainable(), 384 * 384 + 384);
        let h = SeededRng::new(1).normal((2, 5, 384), 1.0, DType::F32, &Device::Cpu).unwrap();
        let d = m.delta(&h, &ctx_eval()).unwrap();
        assert_eq!(max_abs(&d, &d.zeros_like().unwrap()), 0.0);
        assert!(build("linear", "{rank: 3}", 8).is_err());
    }
}
