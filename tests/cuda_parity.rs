#![cfg(feature = "cuda")]
//! CUDA parity of the `cuda` feature: the same training step on the GPU and on the CPU.
//!
//! First, op by op (`parity_0_ops`): every kind of op the training step runs (attention
//! matmuls, linear layers, LayerNorm, GELU, cross-entropy, embedding lookup, the LoReFT
//! rotation, the prefix-cache layout, AdamW), forward and backward, CPU against GPU, each on
//! its own, so that a failing op is named while the others still report.
//!
//! Then, for each model (the tiny BERT of `common::tiny_model`; a MiniLM-shaped BERT with random
//! weights, 6 layers × 384; the real all-MiniLM-L6-v2 when `reft setup` has fetched it),
//! LoReFT rank 4 at two layers plus the classification head are built from the same seed
//! on both devices, and:
//!
//! - the eval-mode logits of a 16-example batch agree (max |diff| ≤ 1e-4);
//! - one training step (dropout on, gradient clipping, AdamW) gives the same loss (≤ 1e-4),
//!   the same gradients, and the same trainable tensors afterwards (≤ 1e-4);
//! - logits through the frozen-prefix cache equal the full forward on the GPU (≤ 1e-4);
//! - the loss falls over 20 steps on one batch on the GPU; the median step time is printed
//!   for both devices.
//!
//! A last test runs the trainer (`reft_core::train::train`) on a small data set with
//! `device: cuda` and with `device: cpu` and compares the adapters.
//!
//!   cargo test --release --features cuda --test cuda_parity -- --nocapture --test-threads=1
//!
//! `REFT_PARITY_DEVICE=cpu` makes the CPU stand in for the GPU: a self-test of this file on a
//! machine without one (every difference is then 0; no CUDA code runs).

mod common;

use anyhow::{anyhow, bail, Context, Result};
use reft_core::adapter;
use reft_core::intervention::attach::Interventions;
use reft_core::candle_core::{backprop::GradStore, DType, Device, Tensor};
use reft_core::intervention::NamedVar;
use reft_core::model::{self, tokenizer::batch_from_ids, Backbone, Batch, PrefixCache};
use reft_core::recipe::{LoadedRecipe, Plan};
use reft_core::rng::SeededRng;
use reft_core::task::classification::{cross_entropy, ClassifierHead, ClassifierModel};
use reft_core::train::adamw::{clip_factor, AdamW};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const TOL: f64 = 1e-4;
const STEPS: usize = 20;
const BATCH: usize = 16;
/// The training loop cycles over this many batches (one: the loss must fall as it fits it).
const BATCHES: usize = 1;

// ---------------------------------------------------------------------------------------
// The device under test.

/// The device under test, opened once and shared by the tests (one CUDA context, and its
/// kernels loaded once).
fn device_under_test() -> Result<Device> {
    static DEVICE: std::sync::OnceLock<std::result::Result<Device, String>> = std::sync::OnceLock::new();
    DEVICE.get_or_init(|| open_device().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
}

fn open_device() -> Result<Device> {
    if std::env::var("REFT_PARITY_DEVICE").as_deref() == Ok("cpu") {
        println!("REFT_PARITY_DEVICE=cpu: the CPU stands in for the GPU (self-test of this file; no CUDA runs)");
        return Ok(Device::Cpu);
    }
    let dev = Device::new_cuda(0).map_err(|e| {
        anyhow!(
            "cannot open CUDA device 0: {e}\n  This check needs an NVIDIA GPU, its driver (libcuda.so.1) and the CUDA 13 \
libraries libcudart.so.13, libcublas.so.13, libcublasLt.so.13 and libcurand.so.10 on LD_LIBRARY_PATH \
(a PyTorch cu130 install has them in its nvidia-* packages)."
        )
    })?;
    // A first kernel and a copy back: fails here, clearly, if the kernels do not load.
    let probe = Tensor::new(&[1f32, 2.0, 3.0], &dev)
        .and_then(|t| (t * 2.0)?.sum_all()?.to_scalar::<f32>())
        .map_err(|e| anyhow!("CUDA device 0 opened, but a first kernel failed: {e}"))?;
    if probe != 12.0 {
        bail!("CUDA device 0: 2·(1+2+3) came back as {probe}");
    }
    Ok(dev)
}

fn device_name(d: &Device) -> &'static str {
    if d.is_cpu() {
        "cpu"
    } else {
        "cuda"
    }
}

fn sync(d: &Device) -> Result<()> {
    d.synchronize().map_err(|e| anyhow!("synchronising {}: {e}", device_name(d)))
}

// ---------------------------------------------------------------------------------------
// Op by op: every kind of op the training step runs, forward and backward, each on its own,
// so that one failing op is named and the others still report.

/// A host-drawn N(0, 1) tensor (the same numbers on every device).
fn randn(dims: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    Ok(SeededRng::new(seed).normal(dims, 1.0, DType::F32, device)?)
}

fn var(dims: &[usize], seed: u64, device: &Device) -> Result<reft_core::candle_core::Var> {
    Ok(reft_core::candle_core::Var::from_tensor(&randn(dims, seed, device)?)?)
}

/// `out`, then the gradients of `Σ out ⊙ probe` for `wrt`.
fn with_grads(out: Tensor, wrt: &[&Tensor], seed: u64) -> Result<Vec<Tensor>> {
    let probe = randn(out.dims(), seed, out.device())?;
    let grads = (&out * probe)?.sum_all()?.backward()?;
    let mut v = vec![out];
    for t in wrt {
        v.push(grads.get(t).ok_or_else(|| anyhow!("no gradient reached an input"))?.clone());
    }
    Ok(v)
}

type OpCheck = (&'static str, fn(&Device) -> Result<Vec<Tensor>>);

const OPS: &[OpCheck] = &[
    ("matmul, attention layout (q·kᵀ, p·v) + backward", |d| {
        let (q, k, v) = (var(&[2, 3, 16, 8], 1, d)?, var(&[2, 3, 16, 8], 2, d)?, var(&[2, 3, 16, 8], 3, d)?);
        let p = reft_core::nn::softmax_last(&(q.as_tensor().matmul(&k.as_tensor().t()?)? / 8f64.sqrt())?)?;
        let ctx = p.matmul(v.as_tensor())?.transpose(1, 2)?.reshape((2, 16, 24))?;
        with_grads(ctx, &[q.as_tensor(), k.as_tensor(), v.as_tensor()], 4)
    }),
    ("nn::linear x·Wᵀ+b (trainable W, b) + backward", |d| {
        let (x, w, b) = (var(&[4, 5, 12], 5, d)?, var(&[7, 12], 6, d)?, var(&[7], 7, d)?);
        let y = reft_core::nn::linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()))?;
        with_grads(y, &[x.as_tensor(), w.as_tensor(), b.as_tensor()], 8)
    }),
    ("ops::frozen_linear (frozen W) + backward for x", |d| {
        let (x, w, b) = (var(&[4, 5, 12], 9, d)?, randn(&[7, 12], 10, d)?, randn(&[7], 11, d)?);
        let y = reft_core::ops::frozen_linear(x.as_tensor(), &w, Some(&b))?;
        with_grads(y, &[x.as_tensor()], 12)
    }),
    ("ops::frozen_layer_norm + backward for x", |d| {
        let x = var(&[4, 5, 32], 13, d)?;
        let (g, b) = (randn(&[32], 14, d)?, randn(&[32], 15, d)?);
        let y = reft_core::ops::frozen_layer_norm(x.as_tensor(), &g, &b, 1e-12)?;
        with_grads(y, &[x.as_tensor()], 16)
    }),
    ("gelu_erf, tanh + backward", |d| {
        let x = var(&[4, 64], 17, d)?;
        let y = (x.as_tensor().gelu_erf()? + x.as_tensor().tanh()?)?;
        with_grads(y, &[x.as_tensor()], 18)
    }),
    ("cross_entropy (log_softmax, gather) + backward", |d| {
        let x = var(&[6, 3], 19, d)?;
        let loss = cross_entropy(x.as_tensor(), &[0, 2, 1, 1, 0, 2])?;
        let g = loss.backward()?;
        Ok(vec![loss, g.get(x.as_tensor()).ok_or_else(|| anyhow!("no gradient"))?.clone()])
    }),
    ("embedding lookup (index_select u32, max u32), mask, dropout", |d| {
        let table = randn(&[50, 8], 20, d)?;
        let ids = Tensor::new(&[[2u32, 7, 9, 3], [2, 49, 3, 0]], d)?;
        let max = ids.flatten_all()?.max(0)?.to_dtype(DType::F32)?;
        let e = table.index_select(&ids.flatten_all()?, 0)?.reshape((2, 4, 8))?;
        let mask = reft_core::hooks::positions::Positions::All.mask(&[vec![1, 1, 1, 1], vec![1, 1, 1, 0]], d)?.reshape((2, 4, 1))?;
        let dropped = reft_core::rng::dropout(&e.broadcast_mul(&mask)?, 0.1, &mut SeededRng::new(21))?;
        Ok(vec![max, dropped])
    }),
    ("LoReFT rotation (Householder product) + backward", |d| {
        let rot = reft_plugins::common::rotation::Rotation::random(64, 4, &mut SeededRng::new(22), DType::F32, d)?;
        let r = rot.matrix()?;
        let gram = r.matmul(&r.t()?)?;
        let mut v = with_grads(r, &[rot.vectors.as_tensor()], 23)?;
        v.push(gram);
        Ok(v)
    }),
    ("prefix cache layout (narrow, cat, stack)", |d| {
        let h = randn(&[3, 10, 8], 24, d)?;
        let a = h.get(0)?.narrow(0, 0, 6)?.contiguous()?;
        let a = Tensor::cat(&[&a, &Tensor::zeros((4, 8), DType::F32, d)?], 0)?;
        Ok(vec![Tensor::stack(&[&a, &h.get(1)?], 0)?])
    }),
    ("AdamW step + gradient-norm clipping", |d| {
        let w = var(&[5, 6], 25, d)?;
        let params = vec![("w".to_string(), NamedVar::trainable("w", w.clone()))];
        let mut opt = AdamW::new(&params, 0.01)?;
        for step in 0..3 {
            let loss = (w.as_tensor().sqr()? * randn(&[5, 6], 26 + step, d)?)?.sum_all()?;
            let g = loss.backward()?;
            let (clip, _) = clip_factor(&params, &g, 1.0)?;
            opt.step(&params, &g, 1e-2, clip)?;
        }
        Ok(vec![w.as_tensor().clone(), opt.moments[0].1.clone(), opt.moments[0].2.clone()])
    }),
];

#[test]
fn parity_0_ops() {
    must((|| -> Result<()> {
        let gpu = device_under_test()?;
        println!("\n== op by op, forward and backward: max |cpu − {}|", device_name(&gpu));
        let mut rep = Report::default();
        for (name, f) in OPS {
            let run = |d: &Device| f(d).with_context(|| format!("on {}", device_name(d)));
            match (run(&Device::Cpu), run(&gpu)) {
                (Ok(a), Ok(b)) => {
                    let mut worst = 0f64;
                    for (x, y) in a.iter().zip(&b) {
                        worst = worst.max(max_diff(x, y)?);
                    }
                    rep.check(name, worst, TOL);
                }
                (Err(e), _) | (_, Err(e)) => rep.fail(format!("{name}: {e:#}")),
            }
        }
        if rep.failures.is_empty() {
            println!("  ops: all checks passed");
            Ok(())
        } else {
            bail!("{} op(s) failed:\n  {}", rep.failures.len(), rep.failures.join("\n  "))
        }
    })());
}

// ---------------------------------------------------------------------------------------
// Models.

/// Dimensions of a BERT written with random weights.
struct Dims {
    layers: usize,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    max_positions: usize,
}

/// A BERT model folder with small deterministic random weights (LayerNorm 1/0, biases 0),
/// the tiny model's 50-token WordPiece vocabulary, and the given dimensions.
fn write_bert(dir: &Path, d: &Dims) -> Result<()> {
    use common::tiny_model::{serialize, tokenizer_json, VOCAB_SIZE};
    use safetensors::tensor::Dtype;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": VOCAB_SIZE,
        "hidden_size": d.hidden, "num_hidden_layers": d.layers, "num_attention_heads": d.heads,
        "intermediate_size": d.intermediate, "hidden_act": "gelu",
        "max_position_embeddings": d.max_positions, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "pad_token_id": 0
    });
    let (h, i) = (d.hidden, d.intermediate);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![VOCAB_SIZE, h]),
        ("embeddings.position_embeddings.weight".into(), vec![d.max_positions, h]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
        ("pooler.dense.weight".into(), vec![h, h]),
        ("pooler.dense.bias".into(), vec![h]),
    ];
    for l in 0..d.layers {
        for (name, shape) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.query.bias", vec![h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.key.bias", vec![h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.self.value.bias", vec![h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.dense.bias", vec![h]),
            ("attention.output.LayerNorm.weight", vec![h]),
            ("attention.output.LayerNorm.bias", vec![h]),
            ("intermediate.dense.weight", vec![i, h]),
            ("intermediate.dense.bias", vec![i]),
            ("output.dense.weight", vec![h, i]),
            ("output.dense.bias", vec![h]),
            ("output.LayerNorm.weight", vec![h]),
            ("output.LayerNorm.bias", vec![h]),
        ] {
            shapes.push((format!("encoder.layer.{l}.{name}"), shape));
        }
    }
    let mut rng = SeededRng::new(0xbe57);
    let mut data = BTreeMap::new();
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let fan_in = *shape.last().unwrap() as f32;
        let values: Vec<f32> = if name.contains("LayerNorm.weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else if name.starts_with("embeddings.") {
            rng.normal_vec(n, 0.5)
        } else {
            // Variance-preserving weights, so activations stay O(1) through the stack.
            rng.normal_vec(n, 1.0 / fan_in.sqrt())
        };
        data.insert(name, (Dtype::F32, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()));
    }
    std::fs::write(dir.join("config.json"), config.to_string())?;
    std::fs::write(dir.join("model.safetensors"), serialize(&data))?;
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json())?;
    Ok(())
}

/// One model to check, with the batch shape to check it on.
struct Case {
    name: &'static str,
    dir: PathBuf,
    hooks: &'static str,
    seq: usize,
    /// Token ids for the random batches are drawn from `ids.0..ids.1`.
    ids: (u32, u32),
    _tmp: Option<tempfile::TempDir>,
}

fn tiny_case() -> Result<Case> {
    let tmp = tempfile::tempdir()?;
    common::tiny_model::write(tmp.path());
    Ok(Case {
        name: "tiny BERT (2 layers × 8, random weights)",
        dir: tmp.path().to_path_buf(),
        hooks: "layers[0,1].block_output",
        seq: common::tiny_model::MAX_POSITIONS,
        ids: (5, common::tiny_model::VOCAB_SIZE as u32),
        _tmp: Some(tmp),
    })
}

fn small_case() -> Result<Case> {
    let tmp = tempfile::tempdir()?;
    write_bert(tmp.path(), &Dims { layers: 6, hidden: 384, heads: 12, intermediate: 1536, max_positions: 128 })?;
    Ok(Case {
        name: "MiniLM-shaped BERT (6 layers × 384, random weights)",
        dir: tmp.path().to_path_buf(),
        hooks: "layers[2,4].block_output",
        seq: 64,
        ids: (5, common::tiny_model::VOCAB_SIZE as u32),
        _tmp: Some(tmp),
    })
}

fn recipe_text(model: &Path, hooks: &str, device: &str, data: &str, epochs: usize) -> String {
    format!(
        "model: {{ path: \"{}\", device: {device} }}\n\
task: {{ kind: classification, num_labels: 2, pooling: cls, labels: [negative, positive] }}\n\
{data}\
interventions:\n  - {{ kind: loreft, hooks: \"{hooks}\", positions: all, rank: 4, dropout: 0.05 }}\n\
train: {{ epochs: {epochs}, batch_size: {BATCH}, lr: 1e-2, seed: 42 }}\n",
        model.display()
    )
}

fn plan_for(case: &Case) -> Result<Plan> {
    let text = recipe_text(&case.dir, case.hooks, "cpu", "", 1);
    let recipe = LoadedRecipe::parse(&case.dir.join("recipe.yaml"), &text).context("parsing the test recipe")?;
    Ok(Plan::new(recipe).context("planning the test recipe")?)
}

/// `BATCHES` batch(es) of `BATCH` random examples: `[CLS] w… [SEP]`, lengths 5/8·seq..=seq (the
/// first row of each batch is full length, so every batch is `BATCH × seq`). The label is a
/// fixed function of the first word, so there is something to learn.
fn examples(case: &Case) -> Vec<(Vec<Vec<u32>>, Vec<usize>)> {
    let mut rng = SeededRng::new(7);
    let (lo, hi) = case.ids;
    (0..BATCHES)
        .map(|_| {
            let mut rows = Vec::new();
            let mut labels = Vec::new();
            for r in 0..BATCH {
                let min = case.seq * 5 / 8;
                let len = if r == 0 { case.seq } else { min + (rng.next_u64() as usize) % (case.seq - min + 1) };
                let mut row = vec![2u32];
                row.extend((0..len - 2).map(|_| lo + (rng.next_u64() % (hi - lo) as u64) as u32));
                row.push(3);
                labels.push((row[1] % 2) as usize);
                rows.push(row);
            }
            (rows, labels)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// A backbone with interventions and head, as the trainer builds it.

struct Trainee {
    backbone: Box<dyn Backbone>,
    interventions: Interventions,
    head: ClassifierHead,
    params: Vec<(String, NamedVar)>,
}

impl Trainee {
    /// What `reft_core::train::train` builds: the same seed gives the same weights on any device.
    fn new(plan: &Plan, device: &Device) -> Result<Self> {
        let r = &plan.recipe.recipe;
        let dtype = DType::F32;
        let backbone = model::load(&plan.model_dir, dtype, device).with_context(|| format!("loading the model on {}", device_name(device)))?;
        let mut init = SeededRng::new(r.train.seed);
        let interventions = plan.build_interventions(device, dtype, init.next_u64())
            .with_context(|| format!("building the interventions on {}", device_name(device)))?;
        let head = ClassifierHead::new(backbone.hidden_size(), r.task.num_labels, r.task.pooling, &mut init.fork(), dtype, device)?;
        let params = adapter::named_tensors(&interventions, Some(&head)).into_iter().filter(|(_, v)| v.trainable).collect();
        Ok(Trainee { backbone, interventions, head, params })
    }

    fn model(&self) -> ClassifierModel<'_> {
        ClassifierModel { backbone: self.backbone.as_ref(), interventions: &self.interventions, head: &self.head, dtype: DType::F32 }
    }

    /// Eval-mode logits.
    fn logits(&self, batch: &Batch, prefix: Option<(&PrefixCache, &[usize])>) -> Result<Tensor> {
        let rng = RefCell::new(SeededRng::new(0));
        Ok(self.model().logits(batch, prefix, false, &rng)?)
    }

    /// One update exactly as the trainer makes it; the loss and the gradients.
    fn step(&self, opt: &mut AdamW, batch: &Batch, labels: &[usize], step: usize, lr: f64, max_norm: f64) -> Result<(f64, GradStore)> {
        let rng = RefCell::new(SeededRng::new(1000 + step as u64));
        let logits = self.model().logits(batch, None, true, &rng).context("forward")?;
        let loss = cross_entropy(&logits, labels).context("loss")?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let grads = loss.backward().context("backward")?;
        let (clip, _norm) = clip_factor(&self.params, &grads, max_norm).context("gradient norm")?;
        opt.step(&self.params, &grads, lr, clip).context("AdamW step")?;
        Ok((value, grads))
    }

    /// A snapshot: `to_device` onto the device a tensor is already on shares its storage,
    /// which later in-place AdamW updates would change, so copy.
    fn params_on_cpu(&self) -> Result<Vec<(String, Tensor)>> {
        self.params.iter().map(|(n, v)| Ok((n.clone(), v.var.as_tensor().to_device(&Device::Cpu)?.copy()?))).collect()
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        bail!("shapes differ: {:?} vs {:?}", a.dims(), b.dims());
    }
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
}

fn max_abs(a: &Tensor) -> Result<f64> {
    Ok(a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// Figures and failed checks of one case.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, what: &str, value: f64, tol: f64) {
        let ok = value.is_finite() && value <= tol;
        println!("  {what:<62} {value:>11.3e}  (≤ {tol:.0e})  {}", if ok { "ok" } else { "FAIL" });
        if !ok {
            self.failures.push(format!("{what}: {value:.3e} > {tol:.0e}"));
        }
    }
    fn fail(&mut self, what: String) {
        println!("  FAIL {what}");
        self.failures.push(what);
    }
}

/// What one device produced over the run.
struct Run {
    eval_logits: Tensor,
    prefix_diff: f64,
    losses: Vec<f64>,
    first_grads: Vec<(String, Option<Tensor>)>,
    params_after_first: Vec<(String, Tensor)>,
    step_seconds: Vec<f64>,
}

fn run_on(plan: &Plan, case: &Case, device: &Device) -> Result<Run> {
    let dev = device_name(device);
    let t = Trainee::new(plan, device)?;
    let data = examples(case);
    let batches = data
        .iter()
        .map(|(rows, labels)| Ok((batch_from_ids(rows, 0, device)?, labels.clone())))
        .collect::<Result<Vec<_>>>()?;

    // Eval-mode logits, and the same through the frozen-prefix cache the trainer uses.
    let eval_logits = t.logits(&batches[0].0, None).with_context(|| format!("eval forward on {dev}"))?;
    let layer = plan.frozen_prefix_layers();
    let prefix_diff = if layer > 0 {
        let cache = PrefixCache::build(t.backbone.as_ref(), layer, &data[0].0, 0, 8, device)
            .with_context(|| format!("building the prefix cache on {dev}"))?;
        let idx: Vec<usize> = (0..BATCH).collect();
        let via = t.logits(&batches[0].0, Some((&cache, &idx))).with_context(|| format!("forward from the prefix cache on {dev}"))?;
        max_diff(&via, &eval_logits)?
    } else {
        0.0
    };

    let tr = &plan.recipe.recipe.train;
    let mut opt = AdamW::new(&t.params, tr.weight_decay)?;
    let mut losses = Vec::new();
    let mut step_seconds = Vec::new();
    let mut first_grads = Vec::new();
    let mut params_after_first = Vec::new();
    for step in 0..STEPS {
        let (batch, labels) = &batches[step % BATCHES];
        sync(device)?;
        let started = Instant::now();
        let (loss, grads) = t
            .step(&mut opt, batch, labels, step, tr.lr, tr.max_grad_norm)
            .with_context(|| format!("training step {} on {dev}", step + 1))?;
        sync(device)?;
        step_seconds.push(started.elapsed().as_secs_f64());
        losses.push(loss);
        if step == 0 {
            for (name, v) in &t.params {
                let g = grads.get(v.var.as_tensor()).map(|g| g.to_device(&Device::Cpu)).transpose()?;
                first_grads.push((name.clone(), g));
            }
            params_after_first = t.params_on_cpu()?;
        }
    }
    Ok(Run { eval_logits: eval_logits.to_device(&Device::Cpu)?, prefix_diff, losses, first_grads, params_after_first, step_seconds })
}

fn parity(case: Case) -> Result<()> {
    let gpu = device_under_test()?;
    let plan = plan_for(&case)?;
    let trainable: usize = plan.total_trainable();
    println!(
        "\n== {}: LoReFT r4 at {} ({} parameters) + classification head, batch {BATCH}×{}, lr {}",
        case.name,
        case.hooks,
        trainable,
        case.seq,
        plan.recipe.recipe.train.lr
    );
    let cpu_run = run_on(&plan, &case, &Device::Cpu).context("on the CPU")?;
    let gpu_run = run_on(&plan, &case, &gpu).with_context(|| format!("on {}", device_name(&gpu)))?;

    let mut rep = Report::default();
    rep.check("eval logits, max |cpu − gpu|", max_diff(&cpu_run.eval_logits, &gpu_run.eval_logits)?, TOL);
    rep.check("prefix-cache logits vs full forward (gpu)", gpu_run.prefix_diff, TOL);
    rep.check("loss of step 1, |cpu − gpu|", (cpu_run.losses[0] - gpu_run.losses[0]).abs(), TOL);
    let mut worst_grad = 0f64;
    let mut grad_scale = 0f64;
    for ((name, a), (_, b)) in cpu_run.first_grads.iter().zip(&gpu_run.first_grads) {
        match (a, b) {
            (Some(a), Some(b)) => {
                worst_grad = worst_grad.max(max_diff(a, b)?);
                grad_scale = grad_scale.max(max_abs(a)?);
            }
            (None, None) => {}
            _ => rep.fail(format!("{name}: a gradient on one device only")),
        }
    }
    println!("  (largest gradient entry {grad_scale:.3e})");
    rep.check("gradients of step 1, max |cpu − gpu|", worst_grad, TOL);
    let mut worst_param = (0f64, String::new());
    for ((name, a), (_, b)) in cpu_run.params_after_first.iter().zip(&gpu_run.params_after_first) {
        let d = max_diff(a, b)?;
        if d >= worst_param.0 {
            worst_param = (d, name.clone());
        }
    }
    rep.check(&format!("trainable tensors after AdamW step 1 (worst: {})", short(&worst_param.1)), worst_param.0, TOL);
    if worst_param.0 > TOL {
        // AdamW's first update is lr·g/(|g|+ε), about lr·sign(g): an entry whose gradient is
        // at rounding level can move the other way on the other device. Say whether that is it.
        for (((name, a), (_, b)), (_, g)) in cpu_run.params_after_first.iter().zip(&gpu_run.params_after_first).zip(&cpu_run.first_grads) {
            let (av, bv) = (a.flatten_all()?.to_vec1::<f32>()?, b.flatten_all()?.to_vec1::<f32>()?);
            let gv = match g {
                Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
                None => vec![0.0; av.len()],
            };
            let bad: Vec<usize> = (0..av.len()).filter(|&i| ((av[i] - bv[i]).abs() as f64) > TOL).collect();
            if !bad.is_empty() {
                let gmax = bad.iter().map(|&i| gv[i].abs()).fold(0f32, f32::max);
                println!(
                    "    {}: {} of {} entries differ by more than {TOL:.0e}; their largest cpu gradient |g| is {gmax:.3e}",
                    short(name),
                    bad.len(),
                    av.len()
                );
            }
        }
    }
    let loss_curve_diff = cpu_run.losses.iter().zip(&gpu_run.losses).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max);
    println!("  {:<62} {loss_curve_diff:>11.3e}", format!("loss over {STEPS} steps, max |cpu − gpu| (information)"));
    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(" ");
    println!("  gpu losses: {}", fmt(&gpu_run.losses));
    println!("  cpu losses: {}", fmt(&cpu_run.losses));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let w = BATCHES.max(4);
    let (first, last) = (mean(&gpu_run.losses[..w]), mean(&gpu_run.losses[STEPS - w..]));
    let falls = last < first - 0.01;
    println!(
        "  gpu loss falls: mean of steps 1-{w} {first:.4} -> steps {}-{STEPS} {last:.4}  {}",
        STEPS - w + 1,
        if falls { "ok" } else { "FAIL" }
    );
    if !falls {
        rep.failures.push(format!("the loss did not fall on the gpu: {first:.4} -> {last:.4}"));
    }
    // Step times: the first steps warm up (kernel loading, allocator); the median is of the rest.
    let (c, g) = (median(&cpu_run.step_seconds[3..]), median(&gpu_run.step_seconds[3..]));
    println!(
        "  step time (forward+backward+AdamW, {BATCH}×{}), median of steps 4-{STEPS}: cpu {:.1} ms, gpu {:.1} ms ({:.1}x); gpu step 1 {:.0} ms",
        case.seq,
        c * 1e3,
        g * 1e3,
        c / g,
        gpu_run.step_seconds[0] * 1e3
    );
    if rep.failures.is_empty() {
        println!("  {}: all checks passed", case.name);
        Ok(())
    } else {
        bail!("{}: {} check(s) failed:\n  {}", case.name, rep.failures.len(), rep.failures.join("\n  "))
    }
}

fn short(name: &str) -> &str {
    name.strip_prefix("interventions.").unwrap_or(name)
}

fn must(r: Result<()>) {
    if let Err(e) = r {
        panic!("CUDA parity check failed: {e:#}");
    }
}

#[test]
fn parity_1_tiny_bert() {
    must(tiny_case().and_then(parity));
}

#[test]
fn parity_2_minilm_shaped_bert() {
    must(small_case().and_then(parity));
}

#[test]
fn parity_3_real_minilm_if_present() {
    let dir = reft_assets::minilm_dir(&reft_assets::cache_dir());
    if !dir.join("model.safetensors").exists() {
        println!("\n== real all-MiniLM-L6-v2: not in {} (run `reft setup` to include it); skipped", dir.display());
        return;
    }
    let mut vocab = 0u32;
    if let Ok(text) = std::fs::read_to_string(dir.join("config.json")) {
        vocab = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["vocab_size"].as_u64()).unwrap_or(0) as u32;
    }
    let case = Case {
        name: "real all-MiniLM-L6-v2",
        dir,
        hooks: "layers[2,4].block_output",
        seq: 64,
        // Ordinary word pieces (past the [unused…] block).
        ids: (1000, vocab.max(1001)),
        _tmp: None,
    };
    must(parity(case));
}

// ---------------------------------------------------------------------------------------
// The trainer end to end on the GPU.

const WORDS_POS: [&str; 4] = ["good", "love", "very good", "not bad"];
const WORDS_NEG: [&str; 4] = ["bad", "hate", "very bad", "not good"];

fn write_data(dir: &Path, n: usize, seed: u64, name: &str) -> Result<()> {
    let mut rng = SeededRng::new(seed);
    let filler = ["the", "film", "movie", "was", "is", "it", "a", "and", "cat", "dog", "sat", "on", "mat"];
    let mut text = String::from("text\tlabel\n");
    for _ in 0..n {
        let label = (rng.next_u64() % 2) as usize;
        let mut words: Vec<&str> = (0..3 + rng.next_u64() % 8).map(|_| filler[(rng.next_u64() % filler.len() as u64) as usize]).collect();
        let key = if label == 1 { WORDS_POS } else { WORDS_NEG }[(rng.next_u64() % 4) as usize];
        let at = (rng.next_u64() as usize) % (words.len() + 1);
        words.insert(at, key);
        text.push_str(&format!("{}\t{}\n", words.join(" "), ["negative", "positive"][label]));
    }
    std::fs::write(dir.join(name), text)?;
    Ok(())
}

fn train_on(model: &Path, data: &Path, device: &str, out: &Path) -> Result<reft_core::train::TrainSummary> {
    let data_line = format!(
        "data: {{ train: \"{}\", eval: \"{}\", max_length: 32 }}\n",
        data.join("train.tsv").display(),
        data.join("dev.tsv").display()
    );
    let text = recipe_text(model, "layers[0,1].block_output", device, &data_line, 2);
    let recipe = LoadedRecipe::parse(&data.join(format!("recipe_{device}.yaml")), &text).context("parsing the training recipe")?;
    let plan = Plan::new(recipe)?;
    let opts = reft_core::train::TrainOptions {
        run_dir: out.to_path_buf(),
        resume: false,
        checkpoint_every: 4,
        log_every: 1,
        cache_prefix: true,
        prefix_cache_dir: None,
        reporter: &mut reft_core::train::Silent,
        collective: &reft_core::dist::SingleProcess,
        early_stop: None,
    };
    Ok(reft_core::train::train(&plan, opts).with_context(|| format!("reft_core::train::train with device: {device}"))?)
}

#[test]
fn parity_4_trainer_end_to_end() {
    must((|| -> Result<()> {
        let gpu = device_under_test()?;
        let tmp = tempfile::tempdir()?;
        let model = tmp.path().join("model");
        common::tiny_model::write(&model);
        write_data(tmp.path(), 96, 1, "train.tsv")?;
        write_data(tmp.path(), 48, 2, "dev.tsv")?;
        let device = if gpu.is_cpu() { "cpu" } else { "cuda" };
        println!("\n== trainer end to end (tiny BERT, 96 examples, 2 epochs, prefix cache, checkpoints): device: {device} vs cpu");
        let started = Instant::now();
        let on_gpu = train_on(&model, tmp.path(), device, &tmp.path().join("gpu"))?;
        let gpu_secs = started.elapsed().as_secs_f64();
        let on_cpu = train_on(&model, tmp.path(), "cpu", &tmp.path().join("cpu"))?;
        let load = |dir: &str| -> Result<std::collections::HashMap<String, Tensor>> {
            let p = tmp.path().join(dir).join(adapter::WEIGHTS_FILE);
            Ok(reft_core::candle_core::safetensors::load(&p, &Device::Cpu).with_context(|| format!("reading {}", p.display()))?)
        };
        let (a, b) = (load("gpu")?, load("cpu")?);
        let mut worst = 0f64;
        for (k, t) in &a {
            let u = b.get(k).ok_or_else(|| anyhow!("adapter tensor {k} missing from the cpu run"))?;
            worst = worst.max(max_diff(t, u)?);
        }
        let accuracy = |s: &reft_core::train::TrainSummary| s.dev.as_ref().and_then(|d| d.classification()).map_or(f64::NAN, |d| d.accuracy);
        println!(
            "  {device}: {} steps in {gpu_secs:.1} s, dev accuracy {:.3}, dev loss {:.4}",
            on_gpu.steps, accuracy(&on_gpu), on_gpu.dev.as_ref().map_or(f64::NAN, |d| d.loss())
        );
        println!("  cpu : {} steps, dev accuracy {:.3}, dev loss {:.4}", on_cpu.steps, accuracy(&on_cpu), on_cpu.dev.as_ref().map_or(f64::NAN, |d| d.loss()));
        println!("  adapter tensors after training, max |cpu − {device}| (information)  {worst:.3e}");
        let mut rep = Report::default();
        rep.check("dev loss after training, |cpu − gpu|", (on_gpu.dev.as_ref().map_or(f64::NAN, |d| d.loss()) - on_cpu.dev.as_ref().map_or(f64::NAN, |d| d.loss())).abs(), 1e-3);
        if on_gpu.steps != on_cpu.steps {
            rep.fail(format!("step counts differ: {} vs {}", on_gpu.steps, on_cpu.steps));
        }
        if rep.failures.is_empty() {
            println!("  trainer end to end: all checks passed");
            Ok(())
        } else {
            bail!("trainer end to end: {}", rep.failures.join("; "))
        }
    })());
}
