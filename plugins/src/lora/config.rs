//! Recipe options of the `lora` plugin. Names follow PEFT's `LoraConfig` (the PEFT spellings
//! are accepted as aliases), and so do the defaults: r = 8, alpha = 8, no dropout.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// The rank r of the update `B·A`.
    #[serde(default = "default_rank", alias = "r")]
    pub rank: usize,
    /// The scale numerator: the update is multiplied by alpha/r (alpha/√r with `rslora`).
    #[serde(default = "default_alpha", alias = "lora_alpha")]
    pub alpha: f64,
    /// Dropout on the module's input before `A` (training only).
    #[serde(default, alias = "lora_dropout")]
    pub dropout: f32,
    /// Rank-stabilised scaling alpha/√r (Kalajdzievski 2023) instead of alpha/r.
    #[serde(default, alias = "use_rslora")]
    pub rslora: bool,
}

fn default_rank() -> usize {
    8
}

fn default_alpha() -> f64 {
    8.0
}

/// Ranks beyond this are refused before anything is allocated.
const MAX_RANK: usize = 1 << 16;

impl LoraConfig {
    /// The factor on `B·A·x`.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.rank == 0 || self.rank > MAX_RANK {
            return Err(format!("lora: `rank` must be between 1 and {MAX_RANK}, got {}", self.rank));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(format!("lora: `alpha` must be a positive number, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("lora: `dropout` must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }
}
