//! The adapter artifact: `adapter.safetensors` (every trained tensor) and `adapter.yaml`
//! (plugin names and versions, hyperparameters, hook names, positions, head, and a
//! fingerprint of the base model). Loading checks the manifest against the model before
//! any weight is touched.

mod fingerprint;
mod manifest;
pub mod merge;
pub mod peft;

pub use fingerprint::fingerprint;
pub use manifest::{manifest_for, HeadEntry, InterventionEntry, Manifest, ModelEntry, TaskEntry, FORMAT, FORMAT_VERSION};

use crate::intervention::attach::Interventions;
use crate::error::{Error, Result};
use crate::hooks::{HookPattern, HookSurface};
use crate::intervention::{self, BuildSpec, NamedVar};
use crate::model::{self, Backbone};
use crate::rng::SeededRng;
use crate::task::classification::{ClassifierHead, ClassifierModel};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const WEIGHTS_FILE: &str = "adapter.safetensors";
pub const MANIFEST_FILE: &str = "adapter.yaml";

/// Every tensor of an adapter under its saved name.
pub fn named_tensors(interventions: &Interventions, head: Option<&ClassifierHead>) -> Vec<(String, NamedVar)> {
    let mut out = Vec::new();
    for a in &interventions.items {
        for v in a.module.state() {
            out.push((format!("interventions.{}.{}", a.name, v.name), v));
        }
    }
    if let Some(h) = head {
        for v in h.state() {
            out.push((format!("head.{}", v.name), v));
        }
    }
    out
}

/// Write the adapter into `dir`: weights first, then the manifest (which records the
/// weights' hash), each atomically, so a crash never leaves a manifest that lies.
pub fn save(dir: &Path, manifest: &Manifest, interventions: &Interventions, head: Option<&ClassifierHead>) -> Result<()> {
    let tensors: HashMap<String, Tensor> = named_tensors(interventions, head)
        .into_iter()
        .map(|(k, v)| (k, v.var.as_tensor().clone()))
        .collect();
    let weights = dir.join(WEIGHTS_FILE);
    crate::io::save_safetensors_atomic(&tensors, &weights)?;
    let mut m = manifest.clone();
    m.weights_sha256 = crate::io::sha256_file(&weights).map_err(|e| Error::io(&weights, e))?;
    m.tensors = tensors.iter().map(|(k, t)| (k.clone(), t.dims().to_vec())).collect();
    let text = serde_yaml::to_string(&m).map_err(|e| Error::Other(format!("cannot write the manifest: {e}")))?;
    crate::io::write_atomic(&dir.join(MANIFEST_FILE), text.as_bytes())
}

/// An adapter loaded onto its base model, ready to run.
pub struct Loaded {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub model_dir: PathBuf,
    pub backbone: Box<dyn Backbone>,
    pub interventions: Interventions,
    pub head: Option<ClassifierHead>,
    /// What the caller should tell the user (core does not print): e.g. an adapter from an
    /// older reft whose weights carry no recorded hash, so they load unchecked.
    pub notes: Vec<String>,
}

/// Read and validate `adapter.yaml` alone.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    if !path.exists() {
        return Err(Error::model(dir, format!("not a reft adapter folder: no {MANIFEST_FILE}")));
    }
    let m: Manifest = crate::io::read_yaml(&path, "adapter manifest")?;
    if m.format != FORMAT || m.format_version > FORMAT_VERSION {
        return Err(Error::model(&path, format!(
            "adapter format `{}` v{} is not one this reft reads ({FORMAT} v{FORMAT_VERSION})",
            m.format, m.format_version
        )));
    }
    Ok(m)
}

/// Load an adapter and its base model (`model_override` replaces the recorded path).
/// Order: manifest, then model fingerprint, then plugins and hooks, then shapes, and only
/// then the weights.
///
/// A folder in HF PEFT's LoRA layout (`adapter_config.json`, no `adapter.yaml`) loads too.
pub fn load(dir: &Path, model_override: Option<&Path>, device: &Device) -> Result<Loaded> {
    if peft::is_peft_dir(dir) {
        return peft::load(dir, model_override, device);
    }
    let manifest = read_manifest(dir)?;
    let model_dir = model_override.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(&manifest.base_model.path));
    let info = model::inspect(&model_dir)?;
    let fp = fingerprint(&model_dir)?;
    if fp != manifest.base_model.fingerprint {
        return Err(Error::model(&model_dir, format!(
            "wrong base model: the adapter in {} was trained on a model with fingerprint {} ({}), this one has {fp}",
            dir.display(), manifest.base_model.fingerprint, manifest.base_model.path
        )));
    }
    // Interventions and head in f32 (as trained); the base in the dtype it trained in.
    let dtype = DType::F32;
    let base_dtype = manifest.base_model.dtype.dtype();
    let mut interventions = Interventions::default();
    let mut rng = SeededRng::new(0);
    load_recorded_plugins(&manifest)?;
    for e in &manifest.interventions {
        let factory = intervention::find(&e.kind).map_err(|err| {
            Error::Plugin(format!("the adapter needs plugin `{}` (version {}): {err}. Load it with --plugin", e.kind, e.version))
        })?;
        let sites = HookPattern::parse(&e.hook)?.resolve(&info.config)?;
        let [site] = sites[..] else {
            return Err(Error::hook(&e.hook, "an adapter entry must name exactly one site"));
        };
        let (in_dim, out_dim) = info.config.component_dims(site.component).expect("resolved");
        let mut spec = BuildSpec { options: &e.options, site, in_dim, out_dim, device, dtype, rng: &mut rng };
        let module = (factory.build)(&mut spec)?;
        let positions = e.positions.parse()?;
        interventions.push(&e.name, site, positions, module);
    }
    let head = match &manifest.head {
        Some(h) => Some(ClassifierHead::new(info.config.hidden_size(), h.num_labels, h.pooling, &mut rng, dtype, device)?),
        None => None,
    };
    // Shapes, then values.
    let weights_path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
    let actual = crate::io::sha256_file(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
    let mut notes = Vec::new();
    if manifest.weights_sha256.is_empty() {
        notes.push(format!(
            "{}: adapter.yaml records no weights_sha256 (written by an older reft), so {WEIGHTS_FILE} is loaded unchecked; re-save it with `reft train --resume` or a new run",
            dir.display()
        ));
    } else if actual != manifest.weights_sha256 {
        return Err(Error::model(&weights_path, "does not match the hash recorded in adapter.yaml (a partial copy or a different run?)"));
    }
    let file = model::safetensors_file::WeightFile::from_bytes(&weights_path, &bytes, dtype, device)?;
    let wanted = named_tensors(&interventions, head.as_ref());
    let mut seen = BTreeMap::new();
    for (name, v) in &wanted {
        let t = file.get(name, v.var.dims())?;
        seen.insert(name.clone(), t);
    }
    if let Some(extra) = file.names().find(|n| !seen.contains_key(*n)) {
        return Err(Error::model(&weights_path, format!("unexpected tensor `{extra}`: the adapter and its manifest disagree")));
    }
    for (name, v) in &wanted {
        v.var.set(&seen[name])?;
    }
    let backbone = model::load(&model_dir, base_dtype, device)?;
    Ok(Loaded { dir: dir.to_path_buf(), manifest, model_dir, backbone, interventions, head, notes })
}

/// Load the plugin libraries the adapter was trained with, unless a library already loaded
/// (say with `--plugin`, from another place) provides every kind it needs.
fn load_recorded_plugins(manifest: &Manifest) -> Result<()> {
    let missing = |m: &Manifest| m.interventions.iter().any(|e| intervention::find(&e.kind).is_err());
    for lib in &manifest.plugins {
        if !missing(manifest) {
            break;
        }
        let path = Path::new(lib);
        if !path.exists() {
            return Err(Error::Plugin(format!(
                "the adapter was trained with plugin library {lib}, which no longer exists; pass the library with --plugin PATH"
            )));
        }
        crate::plugin::load(path)?;
    }
    Ok(())
}

impl Loaded {
    /// The classifier to evaluate or predict with: backbone, interventions and head.
    pub fn classifier(&self) -> Result<ClassifierModel<'_>> {
        let head = self.head.as_ref().ok_or_else(|| Error::Other(format!("{}: the adapter has no classification head", self.dir.display())))?;
        Ok(ClassifierModel { backbone: self.backbone.as_ref(), interventions: &self.interventions, head, dtype: DType::F32 })
    }
}
