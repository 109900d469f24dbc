//! Options of the `linear` intervention: none yet; unknown keys are refused.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearConfig {}
