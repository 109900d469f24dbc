//! The `lora` plugin in HF PEFT's layout: a `LoraConfig` with `peft_type: LORA`, tensors
//! `lora_A.weight` `[r, in]` and `lora_B.weight` `[out, r]` (the order of `Lora::state`), and
//! the global keys `use_rslora` and `lora_dropout`. reft-core reads and writes PEFT folders
//! through this mapping.

use reft_core::intervention::peft_mapping::PeftMapping;
use serde_json::{json, Map, Value};
use serde_yaml::Mapping;

/// Config keys that would change what the adapter computes and that this plugin does not
/// compute: each refused by name, with the value that would be needed to accept it.
fn check_config(config: &Value) -> Result<(), String> {
    let flag = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
    if flag("use_dora") {
        return Err("use_dora: true".into());
    }
    if flag("fan_in_fan_out") {
        return Err("fan_in_fan_out: true".into());
    }
    match config.get("bias").and_then(Value::as_str).unwrap_or("none") {
        "none" => Ok(()),
        other => Err(format!("bias `{other}`")),
    }
}

fn options_from_config(config: &Value, rank: usize, alpha: f64) -> Mapping {
    let mut options = Mapping::new();
    options.insert("rank".into(), (rank as u64).into());
    options.insert("alpha".into(), alpha.into());
    options.insert("dropout".into(), config.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0).into());
    options.insert("rslora".into(), config.get("use_rslora").and_then(Value::as_bool).unwrap_or(false).into());
    options
}

fn number(options: &Mapping, key: &str, default: f64) -> f64 {
    options.get(key).and_then(|v| v.as_f64().or_else(|| v.as_u64().map(|u| u as f64))).unwrap_or(default)
}

/// The recipe's `alpha` (or its PEFT spelling `lora_alpha`), with `LoraConfig`'s default.
fn alpha(options: &Mapping) -> f64 {
    if options.contains_key("alpha") {
        number(options, "alpha", 8.0)
    } else {
        number(options, "lora_alpha", 8.0)
    }
}

fn config_fields(options: &Mapping) -> Map<String, Value> {
    let dropout = if options.contains_key("dropout") { number(options, "dropout", 0.0) } else { number(options, "lora_dropout", 0.0) };
    let rslora = options.get("rslora").or_else(|| options.get("use_rslora")).and_then(|v| v.as_bool()).unwrap_or(false);
    let mut m = Map::new();
    m.insert("lora_dropout".into(), json!(dropout));
    m.insert("use_dora".into(), json!(false));
    m.insert("use_rslora".into(), json!(rslora));
    m
}

inventory::submit! {
    PeftMapping {
        plugin: "lora",
        peft_type: "LORA",
        check_config,
        tensors: &["lora_A.weight", "lora_B.weight"],
        options_from_config,
        alpha,
        global_options: &["rslora", "dropout"],
        config_fields,
    }
}
