//! How a plugin's instances appear in Hugging Face PEFT's adapter layout
//! (`adapter_config.json` + `adapter_model.safetensors`). A LoRA-family plugin registers one
//! [`PeftMapping`] beside its factory; `crate::adapter::peft` reads and writes PEFT folders
//! through it and names no plugin, option or tensor itself, so the next LoRA-family plugin
//! (DoRA, say) is a folder under `plugins/`, not an edit in core.

use serde_yaml::Mapping;

pub struct PeftMapping {
    /// The plugin (its `PluginFactory::name`) whose instances this maps.
    pub plugin: &'static str,
    /// `peft_type` in `adapter_config.json` (`LORA`).
    pub peft_type: &'static str,
    /// `Ok` when this plugin computes exactly what `config` describes; otherwise the first
    /// key it cannot honour (`use_dora: true is not supported`), for a refusal by name.
    pub check_config: fn(config: &serde_json::Value) -> Result<(), String>,
    /// The tensor name suffixes after `<module path>.`, in the order of the instance's
    /// `Intervention::state()`; the first one's dim 0 is the module's rank.
    pub tensors: &'static [&'static str],
    /// Recipe options of one module: from the config's global keys, and the module's rank and
    /// alpha (after `rank_pattern` / `alpha_pattern`).
    pub options_from_config: fn(config: &serde_json::Value, rank: usize, alpha: f64) -> Mapping,
    /// The alpha an instance's options give (`lora_alpha` and `alpha_pattern`; the rank is
    /// read from the first tensor's shape).
    pub alpha: fn(options: &Mapping) -> f64,
    /// Recipe options PEFT keeps once for all modules: every instance must agree on them.
    pub global_options: &'static [&'static str],
    /// The config keys this plugin writes from (any) one instance's options, beside the ones
    /// every LoRA-family adapter has (`r`, `lora_alpha`, the patterns, `target_modules`).
    pub config_fields: fn(options: &Mapping) -> serde_json::Map<String, serde_json::Value>,
}

inventory::collect!(PeftMapping);

/// The mapping of plugin `name`, if it has one.
pub fn for_plugin(name: &str) -> Option<&'static PeftMapping> {
    inventory::iter::<PeftMapping>.into_iter().find(|m| m.plugin == name)
}

/// Every registered mapping.
pub fn all() -> Vec<&'static PeftMapping> {
    inventory::iter::<PeftMapping>.into_iter().collect()
}
