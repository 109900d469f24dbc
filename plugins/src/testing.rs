//! Helpers for the plugins' unit tests.

use reft_core::candle_core::{DType, Device, Tensor};
use reft_core::hooks::{Component, Site};
use reft_core::intervention::{self, BuildSpec, Ctx, Intervention};
use reft_core::rng::SeededRng;
use std::cell::RefCell;

/// Call `f` with a build spec for YAML `options` at a `dim`-wide representation hook.
pub fn with_spec<T>(options: &str, dim: usize, f: impl FnOnce(&mut BuildSpec) -> T) -> T {
    let options: serde_yaml::Mapping = serde_yaml::from_str(options).unwrap();
    let mut rng = SeededRng::new(0);
    let mut spec = BuildSpec {
        options: &options,
        site: Site::new(0, Component::BlockOutput),
        in_dim: dim,
        out_dim: dim,
        device: &Device::Cpu,
        dtype: DType::F32,
        rng: &mut rng,
    };
    f(&mut spec)
}

/// Build registered plugin `kind` with YAML `options` at an `in_dim → out_dim` linear module.
pub fn build_linear(kind: &str, options: &str, in_dim: usize, out_dim: usize) -> reft_core::Result<Box<dyn Intervention>> {
    let factory = intervention::find(kind)?;
    let options: serde_yaml::Mapping = serde_yaml::from_str(options).unwrap();
    let mut rng = SeededRng::new(0);
    let mut spec = BuildSpec {
        options: &options,
        site: Site::new(0, Component::Linear(reft_core::hooks::LinearModule::MlpUp)),
        in_dim,
        out_dim,
        device: &Device::Cpu,
        dtype: DType::F32,
        rng: &mut rng,
    };
    (factory.build)(&mut spec)
}

/// Build registered plugin `kind` with YAML `options` at a `dim`-wide representation hook.
pub fn build(kind: &str, options: &str, dim: usize) -> reft_core::Result<Box<dyn Intervention>> {
    let factory = intervention::find(kind)?;
    with_spec(options, dim, |spec| (factory.build)(spec))
}

thread_local! {
    static RNG: &'static RefCell<SeededRng> = Box::leak(Box::new(RefCell::new(SeededRng::new(0))));
    static MASK: &'static Tensor = Box::leak(Box::new(Tensor::ones(1, DType::F32, &Device::Cpu).unwrap()));
}

/// An evaluation-mode context (the mask is unused by `delta`).
pub fn ctx_eval() -> Ctx<'static> {
    Ctx { mask: MASK.with(|m| *m), train: false, rng: RNG.with(|r| *r) }
}

pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}
