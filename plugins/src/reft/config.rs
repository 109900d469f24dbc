//! Recipe options shared by the low-rank ReFT family.

use crate::common::activation::Activation;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReftConfig {
    /// The low-rank dimension r (pyreft's `low_rank_dimension`).
    #[serde(alias = "low_rank_dimension")]
    pub rank: usize,
    /// Dropout on the intervened output, as pyreft applies it (training only).
    #[serde(default)]
    pub dropout: f32,
    /// Non-linearity on the learned source `Wh + b` (pyreft's `act_fn`).
    #[serde(default, alias = "act_fn")]
    pub activation: Activation,
    /// `noreft` only: a bias on the projection W2 (pyreft's `add_bias`).
    #[serde(default)]
    pub add_bias: bool,
}

impl ReftConfig {
    pub fn validate(&self, kind: &str, dim: usize) -> Result<(), String> {
        if self.rank == 0 || self.rank > dim {
            return Err(format!("{kind}: `rank` must be between 1 and the hook width {dim}, got {}", self.rank));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("{kind}: `dropout` must be in [0, 1), got {}", self.dropout));
        }
        if self.add_bias && kind != "noreft" {
            return Err(format!("{kind}: `add_bias` applies to `noreft` only"));
        }
        Ok(())
    }
}
