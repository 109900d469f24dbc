//! LoReFT and the rest of pyreft's low-rank family (see `layer.rs` for the formulas).

pub mod config;
pub mod layer;

pub use layer::{LowRankReft, Projection, Variant};

use reft_core::hooks::HookKind;
use reft_core::intervention::{BuildSpec, Intervention, PluginFactory};
use reft_core::Result;

macro_rules! register_variant {
    ($fn_name:ident, $variant:expr, $desc:expr) => {
        fn $fn_name(spec: &mut BuildSpec) -> Result<Box<dyn Intervention>> {
            Ok(Box::new(LowRankReft::build($variant, spec)?))
        }
        inventory::submit! {
            PluginFactory {
                name: $variant.name(),
                version: env!("CARGO_PKG_VERSION"),
                description: $desc,
                hook_kind: HookKind::Representation,
                build: $fn_name,
            }
        }
    };
}

register_variant!(build_loreft, Variant::LoReft, "LoReFT: h + Rᵀ(Wh + b − Rh), R orthonormal (Wu et al. 2024)");
register_variant!(build_noreft, Variant::NoReft, "NoReFT: h + W2ᵀ(W1h + b − W2h), no orthonormality");
register_variant!(build_consreft, Variant::ConsReft, "ConsReFT: h + Rᵀ(b − Rh), constant target");
register_variant!(build_lobireft, Variant::LobiReft, "LobiReFT: h + Rᵀb, a learned low-rank bias");
register_variant!(build_direft, Variant::DiReft, "DiReFT: h + Rᵀ(Wh + b), no subtraction");
register_variant!(build_nodireft, Variant::NodiReft, "NodiReFT: h + W2ᵀ(W1h + b)");

#[cfg(test)]
mod tests;
