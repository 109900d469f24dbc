//! What a plugin receives to build one intervention instance.

use crate::error::{Error, Result};
use crate::hooks::Site;
use crate::rng::SeededRng;
use candle_core::{DType, Device};
use serde::de::DeserializeOwned;

pub struct BuildSpec<'a> {
    /// The recipe's keys for this intervention other than `kind`, `hooks`, `positions`, `name`.
    pub options: &'a serde_yaml::Mapping,
    /// Where it attaches.
    pub site: Site,
    /// Input and output width at the hook (equal at representation hooks).
    pub in_dim: usize,
    pub out_dim: usize,
    pub device: &'a Device,
    pub dtype: DType,
    /// Seeded initialisation, so the same recipe and seed give the same starting weights.
    pub rng: &'a mut SeededRng,
}

impl BuildSpec<'_> {
    /// Read the options into the plugin's own config type (use `deny_unknown_fields` so a
    /// misspelt key is an error, not a silent default).
    pub fn options<T: DeserializeOwned>(&self, plugin: &str) -> Result<T> {
        parse_options(self.options, plugin)
    }
}

pub fn parse_options<T: DeserializeOwned>(options: &serde_yaml::Mapping, plugin: &str) -> Result<T> {
    serde_yaml::from_value(serde_yaml::Value::Mapping(options.clone()))
        .map_err(|e| Error::Plugin(format!("{plugin}: {e}")))
}
