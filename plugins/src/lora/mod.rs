//! The `lora` plugin (Hu et al. 2021) on linear-module hooks, PEFT-compatible.

pub mod config;
pub mod layer;
mod peft;

pub use config::LoraConfig;
pub use layer::Lora;

use reft_core::hooks::HookKind;
use reft_core::intervention::{BuildSpec, Intervention, PluginFactory};

fn build(spec: &mut BuildSpec) -> reft_core::Result<Box<dyn Intervention>> {
    Ok(Box::new(Lora::build(spec)?))
}

inventory::submit! {
    PluginFactory {
        name: "lora",
        version: env!("CARGO_PKG_VERSION"),
        description: "y = Wx + b + (alpha/r)·B·A·x on a linear module; merges into W",
        hook_kind: HookKind::Linear,
        build,
    }
}

#[cfg(test)]
mod tests;
