//! HF PEFT's adapter layout for LoRA-family plugins: `adapter_config.json` +
//! `adapter_model.safetensors`, with tensors named `base_model.model.<module path>.<suffix>`.
//! What the suffixes are, which config keys a plugin honours and how they become recipe
//! options is the plugin's own [`PeftMapping`] (the `lora` plugin: `lora_A.weight` `[r, in]`,
//! `lora_B.weight` `[out, r]`, `use_rslora`, `lora_dropout`). This module keeps what every
//! LoRA-family config shares: `r`, `lora_alpha`, `rank_pattern`/`alpha_pattern`,
//! `target_modules`/`layers_to_transform`, the base model and the key prefix. Reading turns
//! such a folder into the same [`Loaded`] adapter our own format gives, so `eval`, `predict`
//! and `collect` take either; writing lets PEFT load what we train.

use super::{HeadEntry, InterventionEntry, Loaded, Manifest, ModelEntry, FORMAT, FORMAT_VERSION};
use crate::intervention::attach::Interventions;
use crate::error::{Error, Result};
use crate::hooks::{HookSurface, Site};
use crate::intervention::peft_mapping::{self, PeftMapping};
use crate::intervention::{self, BuildSpec};
use crate::model;
use crate::recipe::Pooling;
use crate::rng::SeededRng;
use crate::task::classification::ClassifierHead;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The PEFT version whose layout we write (the fixture's).
pub const PEFT_VERSION: &str = "0.21.2";

const KEY_PREFIX: &str = "base_model.model.";

/// Does `dir` hold a PEFT adapter (and not one of ours, which takes precedence)?
pub fn is_peft_dir(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file() && !dir.join(super::MANIFEST_FILE).is_file()
}

/// The keys of `adapter_config.json` that decide what the adapter computes. The others are
/// kept when reading only to tell the user about options we do not implement.
#[derive(Debug, Deserialize)]
struct PeftConfig {
    peft_type: String,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    rank_pattern: BTreeMap<String, usize>,
    #[serde(default)]
    alpha_pattern: BTreeMap<String, f64>,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
    /// Read only to check that it names modules of this model (the weights present decide
    /// which modules carry LoRA).
    #[serde(default)]
    target_modules: Option<serde_json::Value>,
    /// Change the model's structure or wrap non-linear parameters: refused when set.
    #[serde(default)]
    layer_replication: Option<serde_json::Value>,
    #[serde(default)]
    target_parameters: Option<serde_json::Value>,
}

/// Whether PEFT's `target_modules` selects the module at `path`: a string is a regular
/// expression over the whole path; a list names modules by their last path components.
fn targets(target_modules: &serde_json::Value, path: &str) -> bool {
    match target_modules {
        serde_json::Value::String(re) => regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|re| re.is_match(path)),
        serde_json::Value::Array(names) => names
            .iter()
            .filter_map(|n| n.as_str())
            .any(|n| path == n || path.ends_with(&format!(".{n}"))),
        _ => false,
    }
}

/// PEFT's rule for `rank_pattern`/`alpha_pattern` keys: the key matches the end of the
/// module path at a dot boundary (as a regular expression).
fn pattern_value<T: Copy>(patterns: &BTreeMap<String, T>, path: &str) -> Option<T> {
    patterns.iter().find_map(|(k, v)| {
        regex::Regex::new(&format!(r"^(?:.*\.)?(?:{k})$")).ok().filter(|re| re.is_match(path)).map(|_| *v)
    })
}

/// Where the base model is: `--model`, else `base_model_name_or_path` if it is a folder.
/// A hub name is never guessed into a local folder: the user says which copy to use.
fn base_model_dir(cfg: &PeftConfig, model_override: Option<&Path>, dir: &Path) -> Result<PathBuf> {
    if let Some(p) = model_override {
        return Ok(p.to_path_buf());
    }
    let name = cfg.base_model_name_or_path.clone().unwrap_or_default();
    let local = PathBuf::from(&name);
    if !name.is_empty() && local.join("config.json").is_file() {
        return Ok(local);
    }
    Err(Error::model(dir, format!(
        "the PEFT adapter names base model `{name}`, which is not a local folder: pass --model DIR"
    )))
}

/// Load a PEFT LoRA folder onto its base model.
pub fn load(dir: &Path, model_override: Option<&Path>, device: &Device) -> Result<Loaded> {
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::Other(format!("{}:{}:{}: not a PEFT adapter config: {e}", config_path.display(), e.line(), e.column()))
    })?;
    let cfg: PeftConfig = serde_json::from_value(raw.clone())
        .map_err(|e| Error::Other(format!("{}: not a PEFT adapter config: {e}", config_path.display())))?;
    let unsupported = |what: &str| Error::model(&config_path, format!("{what} is not supported (reft reads plain LoRA adapters)"));
    let mapping = mapping_for(&cfg.peft_type, &raw).map_err(|why| unsupported(&why))?;
    let is_set = |v: &Option<serde_json::Value>| v.as_ref().is_some_and(|v| !(v.is_null() || v.as_array().is_some_and(Vec::is_empty)));
    if is_set(&cfg.layer_replication) {
        return Err(unsupported("layer_replication"));
    }
    if is_set(&cfg.target_parameters) {
        return Err(unsupported("target_parameters"));
    }
    let model_dir = base_model_dir(&cfg, model_override, dir)?;
    let info = model::inspect(&model_dir)?;
    if let Some(t) = cfg.target_modules.as_ref().filter(|t| !t.is_null() && t.as_str() != Some("all-linear")) {
        let paths: Vec<String> = crate::recipe::target::linear_sites(&info.config).into_iter().map(|(_, p)| p).collect();
        if !paths.iter().any(|p| targets(t, p)) {
            return Err(Error::model(&config_path, format!("target_modules {t} matches no linear module of the model in {}", model_dir.display())));
        }
    }

    let weights_path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
    let file = model::safetensors_file::WeightFile::from_bytes(&weights_path, &bytes, DType::F32, device)?;

    // Module path → site, over every linear module of the model.
    let sites: HashMap<String, Site> = crate::recipe::target::linear_sites(&info.config)
        .into_iter()
        .map(|(s, p)| (p, s))
        .collect();
    let mut modules: Vec<(Site, String)> = Vec::new();
    let mut head: Option<(String, String)> = None;
    for key in file.names() {
        let rest = key.strip_prefix(KEY_PREFIX).unwrap_or(key);
        let suffix = |i: usize| format!(".{}", mapping.tensors[i]);
        if let Some(module) = rest.strip_suffix(&suffix(0)) {
            // A model saved from a task wrapper (BertForSequenceClassification) nests the
            // encoder under `bert.`.
            let site = ["", "bert.", "roberta.", "model."]
                .iter()
                .find_map(|p| module.strip_prefix(p).and_then(|m| sites.get(m)))
                .ok_or_else(|| Error::model(&weights_path, format!("`{key}`: no linear module `{module}` in this model")))?;
            modules.push((*site, key.to_string()));
        } else if (1..mapping.tensors.len()).any(|i| rest.ends_with(&suffix(i))) {
            continue;
        } else if rest == "classifier.weight" || rest == "classifier.modules_to_save.weight" {
            let bias = key.replace(".weight", ".bias");
            head = Some((key.to_string(), bias));
        } else if rest.starts_with("classifier.") {
            continue;
        } else {
            return Err(Error::model(&weights_path, format!(
                "unexpected tensor `{key}` (only the `{}` tensors {} and a classifier are read)",
                mapping.plugin,
                mapping.tensors.join(", ")
            )));
        }
    }
    if modules.is_empty() {
        return Err(Error::model(&weights_path, format!("holds no `{}` tensors", mapping.tensors[0])));
    }
    modules.sort_by_key(|(s, _)| *s);

    let factory = intervention::find(mapping.plugin)?;
    let mut interventions = Interventions::default();
    let mut entries = Vec::new();
    let mut rng = SeededRng::new(0);
    for (site, first_key) in &modules {
        let path = info.config.module_path(*site).expect("site came from a module path");
        let stem = &first_key[..first_key.len() - mapping.tensors[0].len()];
        let first = file.get_any(first_key)?;
        let rank = first.dims().first().copied().unwrap_or(0);
        let want_rank = pattern_value(&cfg.rank_pattern, &path).unwrap_or(cfg.r);
        if rank != want_rank {
            return Err(Error::model(&weights_path, format!("`{first_key}` has rank {rank}, the config says {want_rank}")));
        }
        let alpha = pattern_value(&cfg.alpha_pattern, &path).unwrap_or(cfg.lora_alpha);
        let options = (mapping.options_from_config)(&raw, rank, alpha);
        let (in_dim, out_dim) = info.config.component_dims(site.component).expect("linear site");
        let mut spec = BuildSpec { options: &options, site: *site, in_dim, out_dim, device, dtype: DType::F32, rng: &mut rng };
        let module = (factory.build)(&mut spec)?;
        for (v, suffix) in module.state().iter().zip(mapping.tensors) {
            v.var.set(&file.get(&format!("{stem}{suffix}"), v.var.dims())?)?;
        }
        let name = format!("0.{}.{site}", factory.name);
        entries.push(InterventionEntry {
            name: name.clone(),
            kind: factory.name.into(),
            version: factory.version.into(),
            hook: site.to_string(),
            positions: "all".into(),
            options,
        });
        interventions.push(&name, *site, crate::hooks::positions::Positions::All, module);
    }

    let head = match head {
        None => None,
        Some((w_key, b_key)) => {
            let w = file.get_any(&w_key)?;
            let num_labels = w.dims().first().copied().unwrap_or(0);
            let h = ClassifierHead::new(info.config.hidden_size(), num_labels, Pooling::Cls, &mut rng, DType::F32, device)?;
            let state = h.state();
            state[0].var.set(&file.get(&w_key, state[0].var.dims())?)?;
            state[1].var.set(&file.get(&b_key, state[1].var.dims())?)?;
            Some(h)
        }
    };

    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        reft_version: env!("CARGO_PKG_VERSION").into(),
        base_model: ModelEntry {
            path: model_dir.display().to_string(),
            arch: info.arch.clone(),
            fingerprint: super::fingerprint(&model_dir)?,
            parameters: info.num_parameters,
            dtype: Default::default(),
        },
        interventions: entries,
        plugins: Vec::new(),
        head: head.as_ref().map(|h| HeadEntry {
            kind: "classification".into(),
            num_labels: h.weight.dims()[0],
            pooling: Pooling::Cls,
            labels: None,
        }),
        task: None,
        recipe: None,
        max_length: None,
        tensors: Default::default(),
        weights_sha256: String::new(),
        metrics: None,
    };
    let backbone = model::load(&model_dir, DType::F32, device)?;
    Ok(Loaded { dir: dir.to_path_buf(), manifest, model_dir, backbone, interventions, head, notes: Vec::new() })
}

/// The plugin that reads a config of `peft_type` with these keys: the first registered
/// mapping whose plugin honours them all, else the reason the closest one gave.
fn mapping_for(peft_type: &str, config: &serde_json::Value) -> std::result::Result<&'static PeftMapping, String> {
    let candidates: Vec<&PeftMapping> = peft_mapping::all().into_iter().filter(|m| m.peft_type == peft_type).collect();
    let mut why = format!("peft_type `{peft_type}`");
    for m in candidates {
        match (m.check_config)(config) {
            Ok(()) => return Ok(m),
            Err(e) => why = e,
        }
    }
    Err(why)
}

/// Can these interventions be written in PEFT's layout? Only when every one is an instance
/// of one plugin with a [`PeftMapping`], agreeing on the options PEFT keeps global. Returns
/// that mapping.
pub fn writable(interventions: &Interventions, manifest: &Manifest) -> Result<&'static PeftMapping> {
    let Some(first) = interventions.items.first() else {
        return Err(Error::Other("PEFT layout: there are no interventions to write".into()));
    };
    let kind = first.module.kind();
    let mapping = peft_mapping::for_plugin(kind)
        .ok_or_else(|| Error::Other(format!("PEFT layout: `{}` is a `{kind}` intervention, which has no PEFT form", first.name)))?;
    if let Some(a) = interventions.items.iter().find(|a| a.module.kind() != kind) {
        return Err(Error::Other(format!(
            "PEFT layout holds one kind of adapter, but `{}` is a `{}` intervention beside `{kind}`",
            a.name,
            a.module.kind()
        )));
    }
    let global = |key: &str| -> Vec<String> {
        let mut v: Vec<String> = manifest
            .interventions
            .iter()
            .map(|e| e.options.get(key).map(|x| serde_yaml::to_string(x).unwrap_or_default()).unwrap_or_default())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    for key in mapping.global_options {
        if global(key).len() > 1 {
            return Err(Error::Other(format!("PEFT layout: `{key}` must be the same for every `{kind}` module (PEFT keeps one)")));
        }
    }
    Ok(mapping)
}

/// The `adapter_config.json` PEFT writes, with every key PEFT 0.21.2 writes for a LoRA-family
/// adapter but the plugin's own ([`PeftMapping::config_fields`]).
#[derive(Serialize)]
struct PeftConfigOut {
    alora_invocation_tokens: Option<()>,
    alpha_pattern: BTreeMap<String, f64>,
    arrow_config: Option<()>,
    auto_mapping: Option<()>,
    base_model_name_or_path: String,
    bias: &'static str,
    corda_config: Option<()>,
    ensure_weight_tying: bool,
    eva_config: Option<()>,
    exclude_modules: Option<()>,
    fan_in_fan_out: bool,
    inference_mode: bool,
    init_lora_weights: bool,
    kasa_config: Option<()>,
    layer_replication: Option<()>,
    layers_pattern: Option<()>,
    layers_to_transform: Option<Vec<usize>>,
    loftq_config: BTreeMap<String, ()>,
    lora_alpha: f64,
    lora_bias: bool,
    lora_ga_config: Option<()>,
    megatron_config: Option<()>,
    megatron_core: &'static str,
    modules_to_save: Option<()>,
    monteclora_config: Option<()>,
    peft_type: &'static str,
    peft_version: &'static str,
    qalora_group_size: u32,
    r: usize,
    rank_pattern: BTreeMap<String, usize>,
    revision: Option<()>,
    target_modules: Vec<String>,
    target_parameters: Option<()>,
    task_type: Option<()>,
    trainable_token_indices: Option<()>,
    use_bdlora: Option<()>,
    use_qalora: bool,
    velora_config: Option<()>,
}

/// The most frequent value, so that `rank_pattern`/`alpha_pattern` list only exceptions.
fn most_common<T: PartialEq + Copy>(values: &[T]) -> T {
    let mut best = (values[0], 0);
    for v in values {
        let n = values.iter().filter(|w| *w == v).count();
        if n > best.1 {
            best = (*v, n);
        }
    }
    best.0
}

/// Write the LoRA interventions in PEFT's layout into `dir` (atomically, weights first). The
/// keys are those of a PEFT model wrapping the bare base model (`BertModel`): a task head
/// trained beside the adapter is not part of this layout and stays in our own files.
pub fn save(dir: &Path, manifest: &Manifest, interventions: &Interventions, config: &dyn HookSurface) -> Result<()> {
    let mapping = writable(interventions, manifest)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut paths = Vec::new();
    let mut ranks = Vec::new();
    let mut alphas = Vec::new();
    for (a, e) in interventions.items.iter().zip(&manifest.interventions) {
        let path = config
            .module_path(a.site)
            .ok_or_else(|| Error::hook(&a.site.to_string(), "this model has no module path for it"))?;
        let state = a.module.state();
        for (v, suffix) in state.iter().zip(mapping.tensors) {
            tensors.insert(format!("{KEY_PREFIX}{path}.{suffix}"), v.var.as_tensor().clone());
        }
        ranks.push(state[0].var.dims()[0]);
        alphas.push((mapping.alpha)(&e.options));
        paths.push((a.site, path));
    }
    let r = most_common(&ranks);
    let alpha = most_common(&alphas);
    let rank_pattern = paths.iter().zip(&ranks).filter(|(_, k)| **k != r).map(|((_, p), k)| (p.clone(), *k)).collect();
    let alpha_pattern = paths.iter().zip(&alphas).filter(|(_, a)| **a != alpha).map(|((_, p), a)| (p.clone(), *a)).collect();
    let (target_modules, layers_to_transform) = target_of(&paths, config);
    let out = PeftConfigOut {
        alora_invocation_tokens: None,
        alpha_pattern,
        arrow_config: None,
        auto_mapping: None,
        base_model_name_or_path: manifest.base_model.path.clone(),
        bias: "none",
        corda_config: None,
        ensure_weight_tying: false,
        eva_config: None,
        exclude_modules: None,
        fan_in_fan_out: false,
        inference_mode: true,
        init_lora_weights: true,
        kasa_config: None,
        layer_replication: None,
        layers_pattern: None,
        layers_to_transform,
        loftq_config: BTreeMap::new(),
        lora_alpha: alpha,
        lora_bias: false,
        lora_ga_config: None,
        megatron_config: None,
        megatron_core: "megatron.core",
        modules_to_save: None,
        monteclora_config: None,
        peft_type: mapping.peft_type,
        peft_version: PEFT_VERSION,
        qalora_group_size: 16,
        r,
        rank_pattern,
        revision: None,
        target_modules,
        target_parameters: None,
        task_type: None,
        trainable_token_indices: None,
        use_bdlora: None,
        use_qalora: false,
        velora_config: None,
    };
    // The shared keys and the plugin's own, in one key-sorted object as PEFT writes it.
    let mut json = match serde_json::to_value(&out).map_err(|e| Error::Other(e.to_string()))? {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("a struct serialises to an object"),
    };
    json.extend((mapping.config_fields)(&manifest.interventions[0].options));
    crate::io::save_safetensors_atomic(&tensors, &dir.join(WEIGHTS_FILE))?;
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::Other(e.to_string()))?;
    crate::io::write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())
}

/// PEFT's `target_modules` (+ `layers_to_transform`) for exactly these modules: the short
/// module names when they pick exactly this set (in every layer, or in a subset of layers),
/// otherwise every full module path.
fn target_of(paths: &[(Site, String)], config: &dyn HookSurface) -> (Vec<String>, Option<Vec<usize>>) {
    let last = |p: &str| p.rsplit('.').next().unwrap_or(p).to_string();
    let mut names: Vec<String> = paths.iter().map(|(_, p)| last(p)).collect();
    names.sort();
    names.dedup();
    let mut layers: Vec<usize> = paths.iter().filter_map(|(s, _)| s.layer).collect();
    layers.sort();
    layers.dedup();
    let picks = |ls: &[usize]| -> Vec<Site> {
        let mut v: Vec<Site> = crate::recipe::target::linear_sites(config)
            .into_iter()
            .filter(|(s, p)| names.contains(&last(p)) && s.layer.is_some_and(|l| ls.contains(&l)))
            .map(|(s, _)| s)
            .collect();
        v.sort();
        v
    };
    let mut ours: Vec<Site> = paths.iter().map(|(s, _)| *s).collect();
    ours.sort();
    let all: Vec<usize> = (0..config.num_layers()).collect();
    if picks(&all) == ours {
        (names, None)
    } else if picks(&layers) == ours {
        (names, Some(layers))
    } else {
        (paths.iter().map(|(_, p)| p.clone()).collect(), None)
    }
}
