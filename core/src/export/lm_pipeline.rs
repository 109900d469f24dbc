//! The causal-LM pipeline folder: `prefill.onnx` and `decode.onnx` sharing
//! `weights.onnx.data`, `tokenizer.json`, and `pipeline.yaml` with its `decoder:` section.

use super::decoder::{decoder_graph, Stage};
use crate::onnx::decoder::{PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE};
use crate::onnx::proto;
use super::pipeline::{ExportOptions, ExportReport};
use crate::deploy::{
    hash_files, DecoderSpec, PipelineSpec, Source, CAUSAL_LM_FORMAT_VERSION, DECODE_FILE, FORMAT, PIPELINE_FILE, PREFILL_FILE, TASK_CAUSAL_LM,
    TOKENIZER_FILE, WEIGHTS_FILE,
};
use crate::onnx::shared_data::SharedData;
use crate::intervention::attach::Interventions;
use crate::error::{Error, Result};
use crate::model::llama::ChatTemplate;
use crate::model::CausalLm;
use std::path::Path;

/// What a causal-LM export needs, whether from a saved adapter or built in memory.
pub struct CausalExportInput<'a> {
    pub lm: &'a dyn CausalLm,
    /// Applied in the prefill graph (none: the base model).
    pub interventions: &'a Interventions,
    /// The model file or folder: its tokenizer and chat template go into the pipeline.
    pub model_path: &'a Path,
    pub source: Source,
}

impl CausalExportInput<'_> {
    /// Where the graphs come from, for their doc strings: `adapter DIR` or `model PATH`.
    pub fn origin(&self) -> String {
        if self.source.adapter.is_empty() {
            format!("model {}", self.source.base_model)
        } else {
            format!("adapter {}", self.source.adapter)
        }
    }
}

/// Export a base model (no adapter) at `model_path` as a causal-LM pipeline.
pub fn export_base_model(model_path: &Path, out: &Path, opts: &ExportOptions) -> Result<ExportReport> {
    with_base_model(model_path, |input| export_causal_lm(input, out, opts))
}

/// Load the decoder at `model_path` and hand `f` its export input, without interventions
/// (for either export format).
pub fn with_base_model<T>(model_path: &Path, f: impl FnOnce(&CausalExportInput) -> Result<T>) -> Result<T> {
    let backbone = crate::model::load(model_path, candle_core::DType::F32, &candle_core::Device::Cpu)?;
    let lm = backbone.as_causal_lm().ok_or_else(|| {
        Error::model(model_path, format!(
            "a `{}` model exports only with an adapter that has a classification head (`reft export --adapter DIR`); \
             a base model alone exports when it is a decoder that generates text (llama)",
            backbone.arch()
        ))
    })?;
    let input = CausalExportInput {
        lm,
        interventions: &Interventions::default(),
        model_path,
        source: Source {
            adapter: String::new(),
            base_model: model_path.display().to_string(),
            base_model_fingerprint: crate::adapter::fingerprint(model_path)?,
        },
    };
    f(&input)
}

/// Write the causal-LM pipeline folder `out`. Every file is written atomically and
/// `pipeline.yaml` last, so a folder with one is complete.
pub fn export_causal_lm(input: &CausalExportInput, out: &Path, opts: &ExportOptions) -> Result<ExportReport> {
    opts.ort.validate().map_err(Error::Other)?;
    let export = input.lm.onnx_decoder().ok_or_else(|| Error::model(input.model_path, "this decoder cannot be exported to ONNX yet"))?;
    if let Some(q) = opts.quantize.as_deref().filter(|q| *q != "none") {
        return Err(Error::Other(format!(
            "quantize `{q}`: causal-LM pipelines are exported in float32 only for now (--quantize applies to classification pipelines)"
        )));
    }
    let geo = export.geometry();
    let tok = crate::model::load_tokenizer(input.model_path)?;
    let chat_template = ChatTemplate::source_for_model(input.model_path)?;
    let (bos_token, eos_token) = ChatTemplate::special_tokens_for_model(input.model_path)?;
    if let Some(t) = &chat_template {
        // Refuse now what `reft generate --chat` would refuse later.
        ChatTemplate::new(t, &bos_token, &eos_token)?;
    }
    let (bos_token, eos_token) = match chat_template {
        Some(_) => (Some(bos_token), Some(eos_token)),
        None => (None, None),
    };
    let from = input.origin();

    // The prefill graph first: it is where an intervention that cannot be exported fails,
    // before anything is written.
    let mut prefill = decoder_graph(export, Stage::Prefill, input.interventions, false, &format!("reft causal-LM prefill from {from}"))?;

    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    // The folder counts as a pipeline only once its new pipeline.yaml lands.
    let old_spec = out.join(PIPELINE_FILE);
    if old_spec.exists() {
        std::fs::remove_file(&old_spec).map_err(|e| Error::io(&old_spec, e))?;
    }
    let mut data = SharedData::new(&out.join(WEIGHTS_FILE))?;
    data.write_model(&mut prefill.model, &out.join(PREFILL_FILE))?;
    let (prefill_nodes, prefill_inputs, prefill_outputs, interventions) = (prefill.nodes, prefill.inputs, prefill.outputs, prefill.interventions);
    drop(prefill.model);
    // Built after the prefill's weights moved to `data`, so only one graph's copy of the
    // weights is in memory at a time.
    let mut decode = decoder_graph(export, Stage::Decode, &Interventions::default(), false, &format!("reft causal-LM decode step from {from}"))?;
    data.write_model(&mut decode.model, &out.join(DECODE_FILE))?;
    let initializer_bytes = data.len();
    let mut files = vec![out.join(PREFILL_FILE), out.join(DECODE_FILE), data.finish()?];

    // The tokenizer as the model has it, no truncation (the context is the limit), padding
    // with the model's pad id (so `TextTokenizer::load` reads it back).
    let mut inner = tok.inner().clone();
    let _ = inner.with_truncation(None);
    let pad_token = inner.id_to_token(tok.pad_id()).unwrap_or_default();
    inner.with_padding(Some(tokenizers::PaddingParams { pad_id: tok.pad_id(), pad_token, ..Default::default() }));
    let tok_json = inner.to_string(true).map_err(|e| Error::Other(format!("cannot serialise the tokenizer: {e}")))?;
    crate::io::write_atomic(&out.join(TOKENIZER_FILE), tok_json.as_bytes())?;
    files.push(out.join(TOKENIZER_FILE));

    let spec = PipelineSpec {
        format: FORMAT.into(),
        format_version: CAUSAL_LM_FORMAT_VERSION,
        reft_version: env!("CARGO_PKG_VERSION").into(),
        task: TASK_CAUSAL_LM.into(),
        model: PREFILL_FILE.into(),
        tokenizer: TOKENIZER_FILE.into(),
        labels: Vec::new(),
        max_length: geo.max_positions,
        pad_id: tok.pad_id(),
        opset: proto::OPSET,
        inputs: prefill_inputs,
        outputs: prefill_outputs,
        ort: opts.ort.clone(),
        interventions,
        quantize: None,
        source: input.source.clone(),
        decoder: Some(DecoderSpec {
            decode_model: DECODE_FILE.into(),
            weights: WEIGHTS_FILE.into(),
            decode_inputs: decode.inputs,
            decode_outputs: decode.outputs,
            geometry: geo,
            past_key: PAST_KEY.into(),
            past_value: PAST_VALUE.into(),
            present_key: PRESENT_KEY.into(),
            present_value: PRESENT_VALUE.into(),
            chat_template,
            bos_token,
            eos_token,
            unknown: Default::default(),
        }),
        files_sha256: hash_files(out, &files)?,
    };
    let yaml = serde_yaml::to_string(&spec).map_err(|e| Error::Other(format!("cannot write pipeline.yaml: {e}")))?;
    crate::io::write_atomic(&out.join(PIPELINE_FILE), yaml.as_bytes())?;
    files.push(out.join(PIPELINE_FILE));
    Ok(ExportReport { dir: out.to_path_buf(), files, nodes: prefill_nodes, decode_nodes: decode.nodes, initializer_bytes, spec })
}
