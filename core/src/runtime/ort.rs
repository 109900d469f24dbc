//! A pipeline folder run by ONNX Runtime through the `ort` crate (`load-dynamic`: the shared
//! library is opened at run time, so the build needs no ONNX Runtime and no network).

use crate::error::{Error, Result};
use crate::deploy::{OrtOptions, PipelineSpec, TASK_CLASSIFICATION};
use crate::onnx::{ATTENTION_MASK, INPUT_IDS, LOGITS};
use crate::model::tokenizer::TextTokenizer;
use ::ort::environment::Environment;
use ::ort::session::builder::GraphOptimizationLevel;
use ::ort::session::Session;
use ::ort::value::Tensor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Environment variable naming the ONNX Runtime shared library (`libonnxruntime.so`).
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// The library to load: `$ORT_DYLIB_PATH`, else the one `reft setup` put in the cache.
pub fn library_path() -> PathBuf {
    match std::env::var_os(ORT_DYLIB_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => crate::cache::onnxruntime_library(&crate::cache::cache_dir()),
    }
}

fn missing_library(path: &Path, why: &str) -> Error {
    Error::Other(format!(
        "ONNX Runtime is not available: {why} ({}). Run `reft setup` (it installs ONNX Runtime {} \
         from PyPI into the cache) or set {ORT_DYLIB_ENV} to a libonnxruntime shared library",
        path.display(),
        crate::cache::ONNXRUNTIME_VERSION
    ))
}

static ENVIRONMENT: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use. A missing
/// library is a clear error, never a panic (`ort` itself panics without one).
pub fn environment() -> Result<&'static Environment> {
    let env = ENVIRONMENT.get_or_init(|| {
        let path = library_path();
        if !path.is_file() {
            return Err(missing_library(&path, "the library file does not exist").to_string());
        }
        let builder = ::ort::init_from(&path).map_err(|e| missing_library(&path, &format!("cannot load it: {e}")).to_string())?;
        builder.with_name("reft").build().map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    });
    env.as_ref().map_err(|m| Error::Other(m.clone()))
}

pub(crate) fn ort_err(context: &str) -> impl Fn(::ort::Error) -> Error + '_ {
    move |e| Error::Other(format!("ONNX Runtime: {context}: {e}"))
}

/// An ONNX Runtime session for the graph at `model` with the session options `opts`;
/// `prepacking` lets kernels keep their own re-laid-out copy of constant weights.
pub fn session_from_file(model: &Path, opts: &OrtOptions, prepacking: bool) -> Result<Session> {
    let env = environment()?;
    let level = match opts.graph_optimization_level.as_str() {
        "disable" => GraphOptimizationLevel::Disable,
        "basic" => GraphOptimizationLevel::Level1,
        "extended" => GraphOptimizationLevel::Level2,
        _ => GraphOptimizationLevel::All,
    };
    let recover = |e: ::ort::Error<::ort::session::builder::SessionBuilder>| Error::Other(format!("ONNX Runtime session options: {e}"));
    let mut b = Session::builder(env).map_err(ort_err("session builder"))?.with_optimization_level(level).map_err(recover)?;
    if opts.intra_op_threads > 0 {
        b = b.with_intra_threads(opts.intra_op_threads).map_err(recover)?;
    }
    if !opts.intra_op_spinning {
        b = b.with_intra_op_spinning(false).map_err(recover)?;
    }
    if opts.inter_op_threads > 0 {
        b = b.with_inter_threads(opts.inter_op_threads).map_err(recover)?;
    }
    if !prepacking {
        b = b.with_prepacking(false).map_err(recover)?;
    }
    b.commit_from_file(model).map_err(|e| Error::model(model, format!("ONNX Runtime cannot load it: {e}")))
}

/// A loaded pipeline: its spec, tokenizer and ONNX Runtime session.
pub struct OrtPipeline {
    pub dir: PathBuf,
    pub spec: PipelineSpec,
    pub tokenizer: TextTokenizer,
    session: Session,
}

impl OrtPipeline {
    /// Load a pipeline folder written by `reft export`. `ort` replaces the session options
    /// recorded in `pipeline.yaml`.
    pub fn load(dir: &Path, ort: Option<&OrtOptions>) -> Result<Self> {
        let spec = PipelineSpec::read(dir)?;
        let opts = ort.cloned().unwrap_or_else(|| spec.ort.clone());
        opts.validate().map_err(Error::Other)?;
        let model = dir.join(&spec.model);
        if !model.is_file() {
            return Err(Error::model(&model, "the pipeline's graph file is missing"));
        }
        if spec.task != TASK_CLASSIFICATION {
            return Err(Error::model(dir, format!(
                "this is a `{}` pipeline, not a classifier: generate text from it with `reft generate --runtime ort --pipeline {}`",
                spec.task,
                dir.display()
            )));
        }
        let tokenizer = TextTokenizer::load(&dir.join(&spec.tokenizer))?;
        let session = session_from_file(&model, &opts, true)?;
        for name in [INPUT_IDS, ATTENTION_MASK] {
            if !session.inputs().iter().any(|i| i.name() == name) {
                return Err(Error::model(&model, format!("the graph has no input `{name}`")));
            }
        }
        if !session.outputs().iter().any(|o| o.name() == LOGITS) {
            return Err(Error::model(&model, format!("the graph has no output `{LOGITS}`")));
        }
        Ok(OrtPipeline { dir: dir.to_path_buf(), spec, tokenizer, session })
    }

    /// Token ids of `text`, truncated at the pipeline's `max_length`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, Some(self.spec.max_length))
    }

    /// Logits `[rows][num_labels]` for one batch of id rows, right-padded to the longest.
    pub fn logits(&mut self, rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let b = rows.len();
        let s = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = vec![self.spec.pad_id as i64; b * s];
        let mut mask = vec![0i64; b * s];
        for (r, row) in rows.iter().enumerate() {
            for (c, &id) in row.iter().enumerate() {
                ids[r * s + c] = id as i64;
                mask[r * s + c] = 1;
            }
        }
        let ids = Tensor::from_array(([b, s], ids)).map_err(ort_err("input_ids"))?;
        let mask = Tensor::from_array(([b, s], mask)).map_err(ort_err("attention_mask"))?;
        let outputs = self
            .session
            .run(::ort::inputs![INPUT_IDS => ids, ATTENTION_MASK => mask])
            .map_err(ort_err("run"))?;
        let value = outputs.get(LOGITS).ok_or_else(|| Error::Other(format!("ONNX Runtime: no `{LOGITS}` output")))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(ort_err("logits"))?;
        let n = self.spec.labels.len();
        if shape.len() != 2 || shape[0] as usize != b || shape[1] as usize != n {
            return Err(Error::Shape { context: "ONNX Runtime logits".into(), expected: format!("[{b}, {n}]"), got: shape.iter().map(|&d| d as usize).collect() });
        }
        Ok(data.chunks(n).map(|c| c.to_vec()).collect())
    }

    /// Logits for many rows, `batch_size` at a time, batched by length (little padding);
    /// results come back in the order given.
    pub fn logits_batched(&mut self, rows: &[Vec<u32>], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| rows[i].len());
        let mut out = vec![Vec::new(); rows.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| rows[i].clone()).collect();
            for (k, l) in self.logits(&batch)?.into_iter().enumerate() {
                out[chunk[k]] = l;
            }
        }
        Ok(out)
    }
}

/// Run any ONNX model (bytes) on int64 inputs and read one float32 output: for checking
/// small graphs (e.g. the in-graph position masks) against their candle twins.
pub fn run_model_i64(model: &[u8], inputs: &[(&str, Vec<usize>, Vec<i64>)], output: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let env = environment()?;
    let mut session = Session::builder(env)
        .map_err(ort_err("session builder"))?
        .commit_from_memory(model)
        .map_err(ort_err("load model"))?;
    let mut values: Vec<(std::borrow::Cow<'_, str>, ::ort::session::SessionInputValue<'_>)> = Vec::new();
    for (name, shape, data) in inputs {
        let t = Tensor::from_array((shape.clone(), data.clone())).map_err(ort_err("input"))?;
        values.push(((*name).into(), t.into()));
    }
    let outputs = session.run(values).map_err(ort_err("run"))?;
    let value = outputs.get(output).ok_or_else(|| Error::Other(format!("ONNX Runtime: no `{output}` output")))?;
    let (shape, data) = value.try_extract_tensor::<f32>().map_err(ort_err("output"))?;
    Ok((shape.iter().map(|&d| d as usize).collect(), data.to_vec()))
}

/// Softmax of one row of logits.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|&x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}
