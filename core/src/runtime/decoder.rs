//! A causal-LM pipeline (`reft export` of a decoder) run by ONNX Runtime: the prefill graph
//! once over the prompt, then one decode-step graph run per generated token, with the KV
//! cache held as the ONNX Runtime values the previous run returned (each step's `present`
//! goes back in as the next step's `past` without a copy through Rust).
//!
//! The generation loop is candle's ([`crate::generate::generate`]): same stop rules, same
//! [`Sampler`] (so greedy and seeded sampling pick from the same logits the same way).

use super::ort::{ort_err, session_from_file};
use crate::error::{Error, Result};
use crate::onnx::decoder::layer_name;
use crate::deploy::{DecoderSpec, OrtOptions, PipelineSpec, TASK_CAUSAL_LM};
use crate::onnx::{ATTENTION_MASK, INPUT_IDS, LOGITS, POSITION_IDS};
use crate::generate::{run_generation, GenerateOptions, Generation, Step};
use crate::model::llama::ChatTemplate;
use crate::model::tokenizer::TextTokenizer;
use ::ort::session::{Session, SessionInputValue};
use ::ort::value::{DynValue, Tensor};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// The KV cache between runs.
pub struct OrtCache {
    /// Per layer, keys (after RoPE) and values `[batch, kv_heads, len, head_dim]`.
    layers: Vec<(DynValue, DynValue)>,
    /// Per row: 1 on a real token, 0 on padding, for every cached position.
    key_rows: Vec<Vec<i64>>,
}

impl std::fmt::Debug for OrtCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OrtCache {{ layers: {}, batch: {}, positions: {} }}", self.layers.len(), self.batch_size(), self.len())
    }
}

impl OrtCache {
    /// Positions cached (the position of the next token).
    pub fn len(&self) -> usize {
        self.key_rows.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn batch_size(&self) -> usize {
        self.key_rows.len()
    }
}

/// A loaded causal-LM pipeline: its spec, tokenizer, chat template and the model.
pub struct OrtDecoder {
    pub dir: PathBuf,
    pub spec: PipelineSpec,
    pub tokenizer: TextTokenizer,
    /// The model's chat template; None when it has none (`--chat` is then refused).
    pub chat_template: Option<ChatTemplate>,
    /// The two sessions (a field of its own, so a caller can stream text through
    /// `tokenizer` while `lm` generates).
    pub lm: OrtLm,
}

/// The prefill and decode-step sessions of a causal-LM pipeline.
pub struct OrtLm {
    pub decoder: DecoderSpec,
    pad_id: u32,
    prefill: Session,
    decode: Session,
    past: Vec<(String, String)>,
    present: Vec<(String, String)>,
}

/// One graph run's results: last-token logits per row and the grown cache.
type RunOut = (Vec<Vec<f32>>, Vec<(DynValue, DynValue)>);

/// The cache going into a decoding step, with the input names of its tensors.
type Past<'a> = (&'a [(DynValue, DynValue)], &'a [(String, String)]);

impl OrtDecoder {
    /// Load a causal-LM pipeline folder written by `reft export`. `ort` replaces the session
    /// options recorded in `pipeline.yaml`.
    pub fn load(dir: &Path, ort: Option<&OrtOptions>) -> Result<Self> {
        let spec = PipelineSpec::read(dir)?;
        let decoder = match (&spec.decoder, spec.task.as_str()) {
            (Some(d), TASK_CAUSAL_LM) => d.clone(),
            _ => {
                return Err(Error::model(dir, format!(
                    "this is a `{}` pipeline, not a causal LM: run it with `reft infer {}`",
                    spec.task,
                    dir.display()
                )))
            }
        };
        let opts = ort.cloned().unwrap_or_else(|| spec.ort.clone());
        opts.validate().map_err(Error::Other)?;
        for f in [&spec.model, &decoder.decode_model, &decoder.weights] {
            if !dir.join(f).is_file() {
                return Err(Error::model(dir.join(f), "a file of the pipeline is missing (export it again with `reft export`)"));
            }
        }
        let tokenizer = TextTokenizer::load(&dir.join(&spec.tokenizer))?;
        let chat_template = match &decoder.chat_template {
            Some(t) => Some(ChatTemplate::new(t, decoder.bos_token.as_deref().unwrap_or(""), decoder.eos_token.as_deref().unwrap_or(""))?),
            None => None,
        };
        // Without prepacking ONNX Runtime maps the page-aligned weights straight from
        // weights.onnx.data, so both sessions share one copy of the file's pages; prepacking
        // would give each session its own packed copy (measured on SmolLM2-135M: 1.25 GB
        // instead of 0.61 GB PSS, sessions 2 s instead of 1 s to load each) for no decoding
        // speed: a one-token step is a matrix-vector product either way.
        let prefill = session_from_file(&dir.join(&spec.model), &opts, false)?;
        let decode = session_from_file(&dir.join(&decoder.decode_model), &opts, false)?;
        let n = decoder.geometry.num_layers;
        let names = |k: &str, v: &str| (0..n).map(|l| (layer_name(k, l), layer_name(v, l))).collect::<Vec<_>>();
        let past = names(&decoder.past_key, &decoder.past_value);
        let present = names(&decoder.present_key, &decoder.present_value);
        // The graphs must have the ports the spec promises.
        let flat = |v: &[(String, String)]| v.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect::<Vec<_>>();
        let basic = [INPUT_IDS, ATTENTION_MASK, POSITION_IDS].map(String::from);
        let expect = |s: &Session, file: &str, inputs: Vec<String>, outputs: Vec<String>| -> Result<()> {
            for name in &inputs {
                if !s.inputs().iter().any(|i| i.name() == name) {
                    return Err(Error::model(dir.join(file), format!("the graph has no input `{name}`")));
                }
            }
            for name in &outputs {
                if !s.outputs().iter().any(|o| o.name() == name) {
                    return Err(Error::model(dir.join(file), format!("the graph has no output `{name}`")));
                }
            }
            Ok(())
        };
        let outs: Vec<String> = std::iter::once(LOGITS.to_string()).chain(flat(&present)).collect();
        expect(&prefill, &spec.model, basic.to_vec(), outs.clone())?;
        expect(&decode, &decoder.decode_model, basic.iter().cloned().chain(flat(&past)).collect(), outs)?;
        let lm = OrtLm { decoder, pad_id: spec.pad_id, prefill, decode, past, present };
        Ok(OrtDecoder { dir: dir.to_path_buf(), spec, tokenizer, chat_template, lm })
    }
}

impl OrtLm {
    /// The longest sequence (prompt + generated tokens) the graphs support.
    pub fn max_positions(&self) -> usize {
        self.decoder.geometry.max_positions
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&i| i as usize >= self.decoder.geometry.vocab_size) {
            Some(id) => Err(Error::Other(format!(
                "token id {id} is outside the vocabulary of {} tokens (wrong tokenizer for this pipeline?)",
                self.decoder.geometry.vocab_size
            ))),
            None => Ok(()),
        }
    }

    /// Run the prefill graph on a batch of prompts (right-padded to the longest): the logits
    /// of each row's last real token and the cache of every position.
    pub fn prefill(&mut self, rows: &[Vec<u32>]) -> Result<(Vec<Vec<f32>>, OrtCache)> {
        let b = rows.len();
        let s = rows.iter().map(Vec::len).max().unwrap_or(0);
        if b == 0 || s == 0 {
            return Err(Error::Other("prefill: no tokens".into()));
        }
        if s > self.max_positions() {
            return Err(Error::Other(format!("a prompt of {s} tokens is longer than the pipeline's context of {}", self.max_positions())));
        }
        for r in rows {
            self.check_ids(r)?;
        }
        let mut ids = vec![self.pad_id as i64; b * s];
        let mut key_rows = vec![vec![0i64; s]; b];
        for (r, row) in rows.iter().enumerate() {
            for (c, &id) in row.iter().enumerate() {
                ids[r * s + c] = id as i64;
                key_rows[r][c] = 1;
            }
        }
        // Positions 0..s in every row, as candle's forward uses them.
        let positions: Vec<i64> = (0..b).flat_map(|_| 0..s as i64).collect();
        let mask: Vec<i64> = key_rows.concat();
        let (logits, layers) = run(&mut self.prefill, "prefill", self.decoder.geometry.vocab_size, (b, s, s), ids, mask, positions, None, &self.present)?;
        Ok((logits, OrtCache { layers, key_rows }))
    }

    /// Run one decoding step: `tokens` (one per row) after the cached positions. Returns
    /// their logits and grows `cache` (left unchanged if the run fails).
    pub fn step(&mut self, cache: &mut OrtCache, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let b = cache.batch_size();
        if tokens.len() != b || b == 0 {
            return Err(Error::Shape { context: "decoding step".into(), expected: format!("one token for each of the {b} cached rows"), got: vec![tokens.len()] });
        }
        let p = cache.len();
        if p + 1 > self.max_positions() {
            return Err(Error::Other(format!("the cache holds {p} positions: the pipeline's context of {} is full", self.max_positions())));
        }
        self.check_ids(tokens)?;
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let key_rows: Vec<Vec<i64>> = cache.key_rows.iter().map(|r| r.iter().copied().chain([1]).collect()).collect();
        let mask = key_rows.concat();
        let positions = vec![p as i64; b];
        let (logits, layers) = run(&mut self.decode, "decode step", self.decoder.geometry.vocab_size, (b, 1, p + 1), ids, mask, positions, Some((&cache.layers, &self.past)), &self.present)?;
        cache.layers = layers;
        cache.key_rows = key_rows;
        Ok(logits)
    }

    /// Generate from one unpadded prompt: the prefill once, then a decoding step per token,
    /// stopping as candle's `generate` does (a stop token, `max_new_tokens`, a full context).
    pub fn generate(&mut self, prompt: &[u32], opts: &GenerateOptions, on_token: &mut dyn FnMut(u32) -> Result<()>) -> Result<Generation> {
        let (max_positions, stops) = (self.max_positions(), self.decoder.geometry.eos_token_ids.clone());
        let mut cache = None;
        run_generation(prompt.len(), max_positions, &stops, opts, on_token, |step| match step {
            Step::Prefill => {
                let (mut logits, filled) = self.prefill(&[prompt.to_vec()])?;
                cache = Some(filled);
                Ok(logits.swap_remove(0))
            }
            Step::Next(tok) => {
                let cache = cache.as_mut().expect("run_generation runs the prefill first");
                Ok(self.step(cache, &[tok])?.swap_remove(0))
            }
        })
    }
}

/// Run one of the graphs: `(b, s, t)` = rows, new tokens, keys (cached + new).
#[allow(clippy::too_many_arguments)]
fn run(
    session: &mut Session,
    what: &str,
    vocab: usize,
    (b, s, t): (usize, usize, usize),
    ids: Vec<i64>,
    mask: Vec<i64>,
    positions: Vec<i64>,
    past: Option<Past<'_>>,
    present: &[(String, String)],
) -> Result<RunOut> {
    let tensor = |name: &str, shape: [usize; 2], data: Vec<i64>| -> Result<SessionInputValue<'static>> {
        Ok(Tensor::from_array((shape, data)).map_err(ort_err(name))?.into())
    };
    let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
        (INPUT_IDS.into(), tensor(INPUT_IDS, [b, s], ids)?),
        (ATTENTION_MASK.into(), tensor(ATTENTION_MASK, [b, t], mask)?),
        (POSITION_IDS.into(), tensor(POSITION_IDS, [b, s], positions)?),
    ];
    if let Some((values, names)) = past {
        for ((k, v), (kn, vn)) in values.iter().zip(names) {
            inputs.push((kn.as_str().into(), k.into()));
            inputs.push((vn.as_str().into(), v.into()));
        }
    }
    let mut outputs = session.run(inputs).map_err(ort_err(what))?;
    let value = outputs.get(LOGITS).ok_or_else(|| Error::Other(format!("ONNX Runtime {what}: no `{LOGITS}` output")))?;
    let (shape, data) = value.try_extract_tensor::<f32>().map_err(ort_err("logits"))?;
    if shape.len() != 2 || shape[0] as usize != b || shape[1] as usize != vocab {
        return Err(Error::Shape { context: format!("ONNX Runtime {what} logits"), expected: format!("[{b}, {vocab}]"), got: shape.iter().map(|&d| d as usize).collect() });
    }
    let logits = data.chunks(vocab).map(<[f32]>::to_vec).collect();
    let mut layers = Vec::with_capacity(present.len());
    for (kn, vn) in present {
        let mut take = |n: &str| outputs.remove(n).ok_or_else(|| Error::Other(format!("ONNX Runtime {what}: no `{n}` output")));
        layers.push((take(kn)?, take(vn)?));
    }
    Ok((logits, layers))
}
