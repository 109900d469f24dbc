//! The deployment format, shared by the exporter (`crate::export`, which writes it) and
//! the runtime (`crate::runtime`, which reads it): a pipeline folder and its
//! `pipeline.yaml` (docs/export.md).

use crate::error::{Error, Result};
use crate::onnx::DecoderGeometry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const FORMAT: &str = "reft-pipeline";
/// The newest format this reft reads. Classification pipelines are still written as v1
/// (any reft reads them); causal-LM pipelines (`decoder:` section) are v2, which an older
/// reft refuses by version rather than with an unknown-field error.
pub const FORMAT_VERSION: u32 = 2;
pub const CLASSIFICATION_FORMAT_VERSION: u32 = 1;
pub const CAUSAL_LM_FORMAT_VERSION: u32 = 2;
pub const PIPELINE_FILE: &str = "pipeline.yaml";
pub const MODEL_FILE: &str = "model.onnx";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// A causal-LM pipeline's graphs and the weights they share.
pub const PREFILL_FILE: &str = "prefill.onnx";
pub const DECODE_FILE: &str = "decode.onnx";
pub const WEIGHTS_FILE: &str = "weights.onnx.data";
pub const TASK_CLASSIFICATION: &str = "classification";
pub const TASK_CAUSAL_LM: &str = "causal_lm";

/// ONNX Runtime session options, as `pipeline.yaml` records them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrtOptions {
    /// `disable`, `basic`, `extended` or `all` (ONNX Runtime's graph optimisation levels).
    #[serde(default = "default_level")]
    pub graph_optimization_level: String,
    /// Threads inside one operator; 0 lets ONNX Runtime pick (one per physical core).
    #[serde(default)]
    pub intra_op_threads: usize,
    /// Threads across independent operators; 0 lets ONNX Runtime pick.
    #[serde(default)]
    pub inter_op_threads: usize,
    /// Whether idle intra-op threads spin waiting for work (ONNX Runtime's default). Spinning
    /// lowers latency on an idle machine and costs a lot on a busy, shared one.
    #[serde(default = "default_true")]
    pub intra_op_spinning: bool,
}

fn default_true() -> bool {
    true
}

fn default_level() -> String {
    "all".into()
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions { graph_optimization_level: default_level(), intra_op_threads: 0, inter_op_threads: 0, intra_op_spinning: true }
    }
}

pub const OPTIMIZATION_LEVELS: [&str; 4] = ["disable", "basic", "extended", "all"];

/// A graph input or output: its name in the graph and what it holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub adapter: String,
    pub base_model: String,
    pub base_model_fingerprint: String,
}

/// `pipeline.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub format: String,
    pub format_version: u32,
    pub reft_version: String,
    pub task: String,
    /// The graph file, relative to the pipeline folder.
    pub model: String,
    /// The tokenizer, relative to the pipeline folder.
    pub tokenizer: String,
    /// Label names, by logit index.
    pub labels: Vec<String>,
    /// Texts are truncated to this many tokens (special tokens included).
    pub max_length: usize,
    /// The id padding positions get (their attention mask is 0).
    pub pad_id: u32,
    pub opset: i64,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    #[serde(default)]
    pub ort: OrtOptions,
    pub interventions: Vec<ExportedIntervention>,
    /// `int8` when the frozen linear modules were quantized (`reft export --quantize int8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<String>,
    pub source: Source,
    /// `task: causal_lm` only: the decode-step graph, the cache layout and the generation
    /// settings (`model`, `inputs` and `outputs` above then describe the prefill graph).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<DecoderSpec>,
    /// SHA-256 of every other file of the folder, checked on load: a flipped byte in a graph
    /// or its weights is refused instead of running with wrong numbers. (Pipelines written
    /// before reft recorded them load unchecked.)
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files_sha256: BTreeMap<String, String>,
}

/// The SHA-256 of each of `files` (all in `dir`), by file name, for [`PipelineSpec::files_sha256`].
pub fn hash_files(dir: &Path, files: &[std::path::PathBuf]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for f in files {
        let name = f.strip_prefix(dir).unwrap_or(f).to_string_lossy().into_owned();
        out.insert(name, crate::io::sha256_file(f).map_err(|e| Error::io(f, e))?);
    }
    Ok(out)
}

/// The `decoder:` section of a causal-LM pipeline (docs/export.md, "Decoders").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecoderSpec {
    /// The decode-step graph, relative to the folder.
    pub decode_model: String,
    /// The external data file both graphs read their weights from.
    pub weights: String,
    pub decode_inputs: Vec<Port>,
    pub decode_outputs: Vec<Port>,
    /// The sizes a runtime needs (written inline, key by key, as before).
    #[serde(flatten)]
    pub geometry: DecoderGeometry,
    /// Cache tensor names, `{i}` the layer: `[batch, num_kv_heads, positions, head_dim]`
    /// float32, keys after RoPE; a step's `present` is the next step's `past`.
    pub past_key: String,
    pub past_value: String,
    pub present_key: String,
    pub present_value: String,
    /// The model's Jinja chat template, as the model file has it (`reft generate --chat`
    /// renders it as the candle model does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    /// What the template's `{{ bos_token }}` / `{{ eos_token }}` print.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token: Option<String>,
    /// Keys none of the above claim. `deny_unknown_fields` does not combine with `flatten`,
    /// so they are collected here and [`DecoderSpec::validate`] refuses them by name.
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, serde_yaml::Value>,
}

impl PipelineSpec {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(PIPELINE_FILE);
        if !path.exists() {
            return Err(Error::model(dir, format!("not a reft pipeline folder: no {PIPELINE_FILE} (write one with `reft export`)")));
        }
        let spec: PipelineSpec = crate::io::read_yaml(&path, "pipeline.yaml")?;
        if spec.format != FORMAT || spec.format_version > FORMAT_VERSION {
            return Err(Error::model(&path, format!(
                "pipeline format `{}` v{} is not one this reft reads ({FORMAT} v{FORMAT_VERSION})",
                spec.format, spec.format_version
            )));
        }
        spec.ort.validate().map_err(|m| Error::model(&path, m))?;
        for (name, want) in &spec.files_sha256 {
            let file = dir.join(name);
            // A missing file is for the loader to name (it knows which graph it wanted).
            if !file.exists() {
                continue;
            }
            if name.contains('/') || name.starts_with('.') {
                return Err(Error::model(&path, format!("files_sha256 names `{name}`, which is not a file of the folder")));
            }
            let got = crate::io::sha256_file(&file).map_err(|e| Error::io(&file, e))?;
            if &got != want {
                return Err(Error::model(&file, format!(
                    "does not match the SHA-256 pipeline.yaml records for it (a corrupt or partial copy?): {got} instead of {want}"
                )));
            }
        }
        match (spec.task.as_str(), &spec.decoder) {
            (TASK_CLASSIFICATION, None) => {}
            (TASK_CAUSAL_LM, Some(d)) => d.validate().map_err(|m| Error::model(&path, format!("decoder: {m}")))?,
            (TASK_CAUSAL_LM, None) => return Err(Error::model(&path, "task causal_lm without a `decoder:` section")),
            (TASK_CLASSIFICATION, Some(_)) => return Err(Error::model(&path, "a classification pipeline with a `decoder:` section")),
            (other, _) => return Err(Error::model(&path, format!("task `{other}` is not one this reft runs ({TASK_CLASSIFICATION}, {TASK_CAUSAL_LM})"))),
        }
        Ok(spec)
    }
}

impl DecoderSpec {
    /// Sizes in range and cache names that name a layer, so a hand-edited or corrupt file
    /// fails here, by key, rather than inside ONNX Runtime.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if let Some(key) = self.unknown.keys().next() {
            return Err(format!("unknown key `{key}`"));
        }
        let g = &self.geometry;
        crate::model::check_sizes(&[
            ("num_layers", g.num_layers),
            ("hidden_size", g.hidden_size),
            ("num_heads", g.num_heads),
            ("num_kv_heads", g.num_kv_heads),
            ("head_dim", g.head_dim),
            ("vocab_size", g.vocab_size),
            ("max_positions", g.max_positions),
        ])?;
        for (key, pattern) in [("past_key", &self.past_key), ("past_value", &self.past_value), ("present_key", &self.present_key), ("present_value", &self.present_value)] {
            if !pattern.contains("{i}") {
                return Err(format!("{key} `{pattern}` has no `{{i}}` for the layer number"));
            }
        }
        if let Some(id) = g.eos_token_ids.iter().find(|&&i| i as usize >= g.vocab_size) {
            return Err(format!("eos token id {id} is outside the vocabulary of {}", g.vocab_size));
        }
        Ok(())
    }
}

impl OrtOptions {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !OPTIMIZATION_LEVELS.contains(&self.graph_optimization_level.as_str()) {
            return Err(format!(
                "ort.graph_optimization_level `{}` is not one of {}",
                self.graph_optimization_level,
                OPTIMIZATION_LEVELS.join(", ")
            ));
        }
        if self.intra_op_threads > 1024 || self.inter_op_threads > 1024 {
            return Err("ort thread counts must be at most 1024".into());
        }
        Ok(())
    }
}


/// How one intervention ended up in the graph.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ExportedIntervention {
    pub name: String,
    pub kind: String,
    pub hook: String,
    pub positions: String,
    /// `nodes` (its own graph nodes) or `merged` (folded into the frozen weight).
    pub exported_as: String,
}

