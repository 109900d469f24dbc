//! `reft export --format genai`: a decoder (and a causal-LM adapter's ReFT edits) as a folder
//! ONNX Runtime GenAI loads (`onnxruntime_genai.Model(dir)`): one graph for every step
//! ([`Stage::Genai`]), `genai_config.json` naming its ports and the model's sizes and stop
//! tokens, and the tokenizer files GenAI's tokenizer reads (`tokenizer.json`,
//! `tokenizer_config.json`). What GenAI expects (docs/export.md has the details): the cache
//! is fed at every step, empty at the first; presents are the whole cache; a logits output
//! with a fixed 1 in the middle is the last token's only; unknown config keys are errors.

use super::decoder::{decoder_graph, Stage};
use super::lm_pipeline::CausalExportInput;
use crate::error::{Error, Result};
use crate::model::llama::ChatTemplate;
use crate::onnx::decoder::{DecoderGeometry, GENAI_PAST_KEY, GENAI_PAST_VALUE, PRESENT_KEY, PRESENT_VALUE, POSITION_IDS};
use crate::onnx::shared_data::SharedData;
use crate::onnx::{ATTENTION_MASK, INPUT_IDS, LOGITS};
use std::path::{Path, PathBuf};

pub const GENAI_CONFIG_FILE: &str = "genai_config.json";
pub const GENAI_MODEL_FILE: &str = "model.onnx";
pub const GENAI_WEIGHTS_FILE: &str = "model.onnx.data";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// What was written.
pub struct GenaiReport {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub nodes: usize,
    pub geometry: DecoderGeometry,
    pub interventions: Vec<crate::deploy::ExportedIntervention>,
}

/// GenAI's cache-name templates (`%d` the layer) from ours (`{i}`).
fn template(pattern: &str) -> String {
    pattern.replace("{i}", "%d")
}

/// Write the GenAI folder `out`. Files are written atomically, `genai_config.json` last, so
/// a folder with one is complete.
pub fn export_genai(input: &CausalExportInput, out: &Path) -> Result<GenaiReport> {
    let export = input.lm.onnx_decoder().ok_or_else(|| Error::model(input.model_path, "this decoder cannot be exported to ONNX yet"))?;
    let geo = export.geometry();
    let tok = crate::model::load_tokenizer(input.model_path)?;
    let mut inner = tok.inner().clone();
    let _ = inner.with_truncation(None);
    let _ = inner.with_padding(None);
    let tok_json = inner.to_string(true).map_err(|e| Error::Other(format!("cannot serialise the tokenizer: {e}")))?;
    let tokenizer_class = tokenizer_class(&tok_json, input.model_path)?;
    let chat_template = ChatTemplate::source_for_model(input.model_path)?;
    let (bos_token, eos_token) = ChatTemplate::special_tokens_for_model(input.model_path)?;
    let pad_token = inner.id_to_token(tok.pad_id()).unwrap_or_default();
    let from = input.origin();

    // The graph first: an intervention that cannot be exported fails before anything is written.
    let mut graph = decoder_graph(export, Stage::Genai, input.interventions, false, &format!("reft decoder for ONNX Runtime GenAI from {from}"))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let config_path = out.join(GENAI_CONFIG_FILE);
    if config_path.exists() {
        std::fs::remove_file(&config_path).map_err(|e| Error::io(&config_path, e))?;
    }
    let mut data = SharedData::new(&out.join(GENAI_WEIGHTS_FILE))?;
    data.write_model(&mut graph.model, &out.join(GENAI_MODEL_FILE))?;
    let mut files = vec![out.join(GENAI_MODEL_FILE), data.finish()?];

    crate::io::write_atomic(&out.join(crate::deploy::TOKENIZER_FILE), tok_json.as_bytes())?;
    files.push(out.join(crate::deploy::TOKENIZER_FILE));
    let id_of = |t: &str| if t.is_empty() { None } else { inner.token_to_id(t) };
    let tokenizer_config = serde_json::json!({
        "tokenizer_class": tokenizer_class,
        "bos_token": (!bos_token.is_empty()).then_some(&bos_token),
        "eos_token": (!eos_token.is_empty()).then_some(&eos_token),
        "pad_token": pad_token,
        // The template writes its own special tokens; a plain prompt is encoded as reft
        // encodes it (tokenizer.json's post-processor adds what the model adds).
        "add_bos_token": false,
        "add_eos_token": false,
        "chat_template": chat_template,
        "model_max_length": geo.max_positions,
        "clean_up_tokenization_spaces": false,
    });
    write_json(&out.join(TOKENIZER_CONFIG_FILE), &tokenizer_config)?;
    files.push(out.join(TOKENIZER_CONFIG_FILE));

    let config = serde_json::json!({
        "model": {
            "type": "llama",
            "bos_token_id": id_of(&bos_token).unwrap_or(tok.pad_id()),
            "eos_token_id": geo.eos_token_ids,
            "pad_token_id": tok.pad_id(),
            "context_length": geo.max_positions,
            "vocab_size": geo.vocab_size,
            "decoder": {
                "filename": GENAI_MODEL_FILE,
                "session_options": { "log_id": "reft", "provider_options": [] },
                "head_size": geo.head_dim,
                "hidden_size": geo.hidden_size,
                "num_attention_heads": geo.num_heads,
                "num_key_value_heads": geo.num_kv_heads,
                "num_hidden_layers": geo.num_layers,
                "inputs": {
                    "input_ids": INPUT_IDS,
                    "attention_mask": ATTENTION_MASK,
                    "position_ids": POSITION_IDS,
                    "past_key_names": template(GENAI_PAST_KEY),
                    "past_value_names": template(GENAI_PAST_VALUE),
                },
                "outputs": {
                    "logits": LOGITS,
                    "present_key_names": template(PRESENT_KEY),
                    "present_value_names": template(PRESENT_VALUE),
                },
            },
        },
        // Greedy by default, as `reft generate`; each cache is a new tensor per step (the
        // graph concatenates past and new keys, so past and present cannot share a buffer).
        "search": {
            "do_sample": false,
            "max_length": geo.max_positions,
            "num_beams": 1,
            "past_present_share_buffer": false,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    });
    write_json(&config_path, &config)?;
    files.push(config_path);
    Ok(GenaiReport { dir: out.to_path_buf(), files, nodes: graph.nodes, geometry: geo, interventions: graph.interventions })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    crate::io::write_atomic(path, text.as_bytes())
}

/// The `tokenizer_class` GenAI's tokenizer needs for this tokenizer: byte-level BPE (GPT-2,
/// Llama 3, Qwen, SmolLM2) is `GPT2Tokenizer`. Others are refused by name, not guessed: a
/// wrong class tokenises differently.
fn tokenizer_class(tok_json: &str, model: &Path) -> Result<&'static str> {
    let v: serde_json::Value = serde_json::from_str(tok_json).map_err(|e| Error::Other(format!("tokenizer.json: {e}")))?;
    let kind = |key: &str| v[key]["type"].as_str().unwrap_or("none").to_string();
    let (model_kind, decoder) = (v["model"]["type"].as_str().unwrap_or("none").to_string(), kind("decoder"));
    if model_kind == "BPE" && decoder == "ByteLevel" {
        return Ok("GPT2Tokenizer");
    }
    Err(Error::model(
        model,
        format!(
            "--format genai: this tokenizer is a {model_kind} model with a {decoder} decoder; reft writes GenAI's tokenizer \
             settings for byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, SmolLM2) only"
        ),
    ))
}
