//! Writing a deployment pipeline folder ([`crate::deploy`] defines its format): a
//! classification adapter as `model.onnx` (plus `model.onnx.data` past 2 GB),
//! `tokenizer.json` and `pipeline.yaml`; causal-LM adapters go to [`super::lm_pipeline`].

use super::lm_pipeline::{export_causal_lm, CausalExportInput};
use super::{classifier_graph, model_proto};
use crate::deploy::*;
use crate::onnx::{proto, write_model, ATTENTION_MASK, EXTERNAL_DATA_THRESHOLD, INPUT_IDS, LOGITS};
use crate::adapter::Loaded;
use crate::intervention::attach::Interventions;
use crate::model::Backbone;
use crate::task::classification::ClassifierHead;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

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
        ExportOptions { ort: OrtOptions::default(), external_data_threshold: EXTERNAL_DATA_THRESHOLD, quantize: None }
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
        return export_causal_lm(&causal_lm_input(loaded)?, out, opts);
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

/// The export input of an adapter on a decoder without a classification head (a causal-LM
/// adapter); an error naming the adapter otherwise.
pub fn causal_lm_input(loaded: &Loaded) -> Result<CausalExportInput<'_>> {
    let Some(lm) = loaded.backbone.as_causal_lm().filter(|_| loaded.head.is_none()) else {
        return Err(Error::Other(format!(
            "{}: not a causal-LM adapter (it {}, on a `{}` base): only a decoder's adapter without a classification head generates text",
            loaded.dir.display(),
            if loaded.head.is_some() { "has a classification head" } else { "has no classification head" },
            loaded.backbone.arch()
        )));
    };
    Ok(CausalExportInput {
        lm,
        interventions: &loaded.interventions,
        model_path: &loaded.model_dir,
        source: Source {
            adapter: loaded.dir.display().to_string(),
            base_model: loaded.model_dir.display().to_string(),
            base_model_fingerprint: loaded.manifest.base_model.fingerprint.clone(),
        },
    })
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
        opset: proto::OPSET,
        inputs: vec![port(INPUT_IDS, "int64", &["batch", "sequence"]), port(ATTENTION_MASK, "int64", &["batch", "sequence"])],
        outputs: vec![port(LOGITS, "float32", &["batch", &num_labels.to_string()])],
        ort: opts.ort.clone(),
        interventions,
        quantize: int8.then(|| "int8".to_string()),
        source: input.source.clone(),
        decoder: None,
        files_sha256: hash_files(out, &files)?,
    };
    let yaml = serde_yaml::to_string(&spec).map_err(|e| Error::Other(format!("cannot write pipeline.yaml: {e}")))?;
    crate::io::write_atomic(&out.join(PIPELINE_FILE), yaml.as_bytes())?;
    files.push(out.join(PIPELINE_FILE));
    Ok(ExportReport { dir: out.to_path_buf(), files, nodes, decode_nodes: 0, initializer_bytes: init_bytes, spec })
}
