//! The deployment pipeline folder: `model.onnx` (plus `model.onnx.data` past 2 GB),
//! `tokenizer.json` and `pipeline.yaml`, which says how to feed and read the graph.

use super::lm_pipeline::{export_causal_lm, CausalExportInput};
use super::{classifier_graph, model_proto, write_model, ExportedIntervention, ATTENTION_MASK, INPUT_IDS, LOGITS};
use crate::adapter::Loaded;
use crate::attach::Interventions;
use crate::model::Backbone;
use crate::task::classification::ClassifierHead;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    pub num_layers: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// Prompt + generated tokens at most (the RoPE tables in the graphs end there).
    pub max_positions: usize,
    /// Generation stops at any of these.
    pub eos_token_ids: Vec<u32>,
    /// Whether the LM head is the embedding matrix (stored once).
    pub tied_embeddings: bool,
    /// Cache tensor names, `{i}` the layer: `[batch, num_kv_heads, positions, head_dim]`
    /// float32, keys after RoPE; a step's `present` is the next step's `past`.
    pub past_key: String,
    pub past_value: String,
    pub present_key: String,
    pub present_value: String,
    /// The model's Jinja chat template, as the model file has it (`reft generate --chat`
    /// reads its ChatML parameters, as with the candle model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
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
        crate::model::check_sizes(&[
            ("num_layers", self.num_layers),
            ("hidden_size", self.hidden_size),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_positions", self.max_positions),
        ])?;
        for (key, pattern) in [("past_key", &self.past_key), ("past_value", &self.past_value), ("present_key", &self.present_key), ("present_value", &self.present_value)] {
            if !pattern.contains("{i}") {
                return Err(format!("{key} `{pattern}` has no `{{i}}` for the layer number"));
            }
        }
        if let Some(id) = self.eos_token_ids.iter().find(|&&i| i as usize >= self.vocab_size) {
            return Err(format!("eos token id {id} is outside the vocabulary of {}", self.vocab_size));
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

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub ort: OrtOptions,
    /// Initializer bytes past which weights go to external data (default: just under 2 GiB).
    pub external_data_threshold: usize,
    /// `Some("int8")`: the frozen backbone's linear modules as dynamic int8 matmuls
    /// (faster on CPUs with VNNI/AMX; logits then differ by quantization error).
    pub quantize: Option<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { ort: OrtOptions::default(), external_data_threshold: super::EXTERNAL_DATA_THRESHOLD, quantize: None }
    }
}

#[derive(Debug, Clone)]
pub struct ExportReport {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// Nodes of the graph (the prefill graph of a causal-LM pipeline).
    pub nodes: usize,
    /// Nodes of a causal-LM pipeline's decode-step graph (0 for classification).
    pub decode_nodes: usize,
    pub initializer_bytes: usize,
    pub spec: PipelineSpec,
}

/// What an export needs, whether from a saved adapter or built in memory.
pub struct ExportInput<'a> {
    pub backbone: &'a dyn Backbone,
    pub interventions: &'a Interventions,
    pub head: &'a ClassifierHead,
    /// The base model folder (its `tokenizer.json` goes into the pipeline).
    pub model_dir: &'a Path,
    /// Label names by index (default: `0`, `1`, …).
    pub labels: Option<Vec<String>>,
    pub max_length: usize,
    pub source: Source,
}

/// Export a loaded adapter (backbone + interventions + head) to a pipeline folder `out`.
///
/// An adapter with a classification head gives a classification pipeline (whatever the
/// backbone); one without a head on a decoder gives a causal-LM pipeline
/// ([`export_causal_lm`]) with the interventions in its prefill graph.
pub fn export_adapter(loaded: &Loaded, out: &Path, opts: &ExportOptions) -> Result<ExportReport> {
    let Some(head) = loaded.head.as_ref() else {
        let Some(lm) = loaded.backbone.as_causal_lm() else {
            return Err(Error::Other(format!(
                "{}: the adapter has no classification head, and its base (`{}`) is not a decoder that could generate text: nothing to export",
                loaded.dir.display(),
                loaded.backbone.arch()
            )));
        };
        let input = CausalExportInput {
            lm,
            interventions: &loaded.interventions,
            model_path: &loaded.model_dir,
            source: Source {
                adapter: loaded.dir.display().to_string(),
                base_model: loaded.model_dir.display().to_string(),
                base_model_fingerprint: loaded.manifest.base_model.fingerprint.clone(),
            },
        };
        return export_causal_lm(&input, out, opts);
    };
    let input = ExportInput {
        backbone: loaded.backbone.as_ref(),
        interventions: &loaded.interventions,
        head,
        model_dir: &loaded.model_dir,
        labels: loaded.manifest.head.as_ref().and_then(|h| h.labels.clone()),
        max_length: loaded.manifest.max_length.unwrap_or(512),
        source: Source {
            adapter: loaded.dir.display().to_string(),
            base_model: loaded.model_dir.display().to_string(),
            base_model_fingerprint: loaded.manifest.base_model.fingerprint.clone(),
        },
    };
    export_pipeline(&input, out, opts)
}

/// Write the pipeline folder `out` for `input`. Each file is written atomically, and
/// `pipeline.yaml` last, so a folder with one is complete.
pub fn export_pipeline(input: &ExportInput, out: &Path, opts: &ExportOptions) -> Result<ExportReport> {
    opts.ort.validate().map_err(Error::Other)?;
    let max_length = input.max_length;
    let tok = crate::model::load_tokenizer(input.model_dir)?;

    let int8 = match opts.quantize.as_deref() {
        None | Some("none") => false,
        Some("int8") => true,
        Some(other) => return Err(Error::Other(format!("quantize `{other}`: expected `none` or `int8`"))),
    };
    let cg = classifier_graph(input.backbone, input.interventions, input.head, int8)?;
    let (nodes, init_bytes) = (cg.graph.num_nodes(), cg.graph.initializer_bytes());
    let interventions = cg.interventions.clone();
    let num_labels = cg.num_labels;
    let doc = format!("reft pipeline from adapter {}", input.source.adapter);
    let mut model = model_proto(cg, &doc);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    // The folder counts as a pipeline only once its new pipeline.yaml lands.
    let old_spec = out.join(PIPELINE_FILE);
    if old_spec.exists() {
        std::fs::remove_file(&old_spec).map_err(|e| Error::io(&old_spec, e))?;
    }
    // A previous export may have left external data this one does not use.
    let stale = out.join(format!("{MODEL_FILE}.data"));
    if stale.exists() {
        std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
    }
    let mut files = write_model(&mut model, &out.join(MODEL_FILE), opts.external_data_threshold)?;

    // The tokenizer as the pipeline uses it: truncation at max_length, padding to the
    // longest text of a batch (so other consumers of the file get the same ids).
    let mut inner = tok.inner().clone();
    inner
        .with_truncation(Some(tokenizers::TruncationParams { max_length, ..Default::default() }))
        .map_err(|e| Error::Other(format!("tokenizer: {e}")))?;
    let pad_token = inner.id_to_token(tok.pad_id()).unwrap_or_else(|| "[PAD]".into());
    inner.with_padding(Some(tokenizers::PaddingParams { pad_id: tok.pad_id(), pad_token, ..Default::default() }));
    let tok_json = inner.to_string(true).map_err(|e| Error::Other(format!("cannot serialise the tokenizer: {e}")))?;
    crate::io::write_atomic(&out.join(TOKENIZER_FILE), tok_json.as_bytes())?;
    files.push(out.join(TOKENIZER_FILE));

    let labels = input.labels.clone().unwrap_or_else(|| (0..num_labels).map(|i| i.to_string()).collect());
    let port = |name: &str, dtype: &str, shape: &[&str]| Port { name: name.into(), dtype: dtype.into(), shape: shape.iter().map(|s| s.to_string()).collect() };
    let spec = PipelineSpec {
        format: FORMAT.into(),
        format_version: CLASSIFICATION_FORMAT_VERSION,
        reft_version: env!("CARGO_PKG_VERSION").into(),
        task: TASK_CLASSIFICATION.into(),
        model: MODEL_FILE.into(),
        tokenizer: TOKENIZER_FILE.into(),
        labels,
        max_length,
        pad_id: tok.pad_id(),
        opset: super::proto::OPSET,
        inputs: vec![port(INPUT_IDS, "int64", &["batch", "sequence"]), port(ATTENTION_MASK, "int64", &["batch", "sequence"])],
        outputs: vec![port(LOGITS, "float32", &["batch", &num_labels.to_string()])],
        ort: opts.ort.clone(),
        interventions,
        quantize: int8.then(|| "int8".to_string()),
        source: input.source.clone(),
        decoder: None,
    };
    let yaml = serde_yaml::to_string(&spec).map_err(|e| Error::Other(format!("cannot write pipeline.yaml: {e}")))?;
    crate::io::write_atomic(&out.join(PIPELINE_FILE), yaml.as_bytes())?;
    files.push(out.join(PIPELINE_FILE));
    Ok(ExportReport { dir: out.to_path_buf(), files, nodes, decode_nodes: 0, initializer_bytes: init_bytes, spec })
}
