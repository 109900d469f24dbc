//! `adapter.yaml`: everything needed to rebuild an adapter without its recipe.

use crate::error::Result;
use crate::recipe::{Plan, Pooling, TaskKind};
use std::path::Path;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const FORMAT: &str = "reft-adapter";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// The reft version that wrote it.
    pub reft_version: String,
    pub base_model: ModelEntry,
    pub interventions: Vec<InterventionEntry>,
    /// Run-time plugin libraries (absolute paths) that provide kinds used above; loading
    /// the adapter loads them first. Absent when only built-in plugins are used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
    #[serde(default)]
    pub head: Option<HeadEntry>,
    /// A task without a head of its own (causal LM): how its prompts are formed. Absent
    /// for classification (the head says it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskEntry>,
    /// The recipe the adapter was trained from, as written.
    #[serde(default)]
    pub recipe: Option<serde_yaml::Value>,
    /// Data settings needed to use the adapter the way it was trained.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Every tensor in `adapter.safetensors` with its shape.
    #[serde(default)]
    pub tensors: BTreeMap<String, Vec<usize>>,
    /// sha256 of `adapter.safetensors`, so a manifest never describes other weights.
    #[serde(default)]
    pub weights_sha256: String,
    /// Free-form results (dev/test metrics, epoch, …).
    #[serde(default)]
    pub metrics: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub path: String,
    pub arch: String,
    /// sha256 over the model's config and its tensor names, dtypes and shapes.
    pub fingerprint: String,
    pub parameters: usize,
    /// The dtype the frozen base computed in during training (`model.dtype`); evaluation,
    /// prediction and generation load it so again. Absent in older adapters: f32.
    #[serde(default)]
    pub dtype: crate::recipe::DTypeSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterventionEntry {
    pub name: String,
    pub kind: String,
    /// Version of the plugin that trained it.
    pub version: String,
    /// Canonical hook name of one site, e.g. `layers[2].block_output`.
    pub hook: String,
    pub positions: String,
    /// The plugin's options exactly as the recipe gave them.
    pub options: serde_yaml::Mapping,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadEntry {
    pub kind: String,
    pub num_labels: usize,
    pub pooling: Pooling,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
}

/// How a causal-LM adapter's prompts were formed, so generation forms them the same way
/// (and its interventions edit the same prompt positions).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    pub kind: TaskKind,
    /// Prompts were rendered through the model's chat template (else used as raw text).
    pub chat_template: bool,
    /// The system message given to the chat template (none: the template's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

/// The manifest describing a plan's adapter.
pub fn manifest_for(plan: &Plan, model_dir: &Path) -> Result<Manifest> {
    let r = &plan.recipe.recipe;
    Ok(Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        reft_version: env!("CARGO_PKG_VERSION").into(),
        base_model: ModelEntry {
            path: model_dir.display().to_string(),
            arch: plan.model.arch.clone(),
            fingerprint: super::fingerprint(model_dir)?,
            parameters: plan.model.num_parameters,
            dtype: r.model.dtype,
        },
        interventions: plan
            .interventions
            .iter()
            .map(|p| InterventionEntry {
                name: p.name.clone(),
                kind: p.factory.name.into(),
                version: p.factory.version.into(),
                hook: p.site.to_string(),
                positions: p.positions.to_string(),
                options: p.options.clone(),
            })
            .collect(),
        plugins: crate::plugin::loaded_libraries()
            .into_iter()
            .filter(|lib| plan.interventions.iter().any(|p| lib.plugins.contains(&p.factory.name)))
            .map(|lib| lib.path.display().to_string())
            .collect(),
        head: (r.task.kind == TaskKind::Classification).then(|| HeadEntry {
            kind: "classification".into(),
            num_labels: r.task.num_labels,
            pooling: r.task.pooling,
            labels: r.task.labels.clone(),
        }),
        task: (r.task.kind == TaskKind::CausalLm).then(|| TaskEntry {
            kind: TaskKind::CausalLm,
            chat_template: r.task.uses_chat_template(),
            system: r.task.system.clone(),
        }),
        recipe: serde_yaml::to_value(r).ok(),
        max_length: r.data.as_ref().map(|d| d.max_length),
        tensors: Default::default(),
        weights_sha256: String::new(),
        metrics: None,
    })
}
