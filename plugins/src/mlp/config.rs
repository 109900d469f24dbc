//! Options of the `mlp` intervention.

use crate::common::activation::Activation;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Width of the hidden layer.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    #[serde(default = "default_activation", alias = "act_fn")]
    pub activation: Activation,
    /// `true` (default): h + MLP(h), the last layer zero-initialised so training starts at
    /// the identity. `false`: the write-up's literal replacement h ← MLP(h).
    #[serde(default = "default_true")]
    pub residual: bool,
    #[serde(default)]
    pub dropout: f32,
}

fn default_hidden() -> usize {
    64
}
fn default_activation() -> Activation {
    Activation::Relu
}
fn default_true() -> bool {
    true
}
