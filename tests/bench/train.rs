//! Benchmarks for training and inference on the real MiniLM (docs/benchmarks.md).
//!
//!   cargo bench --bench train                 # every figure, each in its own process
//!   cargo bench --bench train -- step         # one figure: step | step-cached | step-lora | step-causal | forward | run
//!
//! Each figure runs in a fresh process so its peak RSS (VmHWM) is its own. Times are
//! medians over repeated runs after a warm-up; the machine is noisy, so compare medians.

use reft_core::intervention::attach::Interventions;
use reft_core::candle_core::{DType, Device, Tensor};
use reft_core::model::{self, tokenizer::batch_from_ids, Batch, PrefixCache};
use reft_core::recipe::{LoadedRecipe, Plan};
use reft_core::rng::SeededRng;
use reft_core::task::causal_lm::CausalLmModel;
use reft_core::task::classification::{cross_entropy, ClassifierHead, ClassifierModel};
use reft_core::task::metrics::TaskMetrics;
use reft_core::task::TaskModel;
use reft_core::train::adamw::{clip_factor, AdamW};
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Instant;

use reft_plugins as _;

#[path = "shared.rs"]
mod shared;
use shared::{fixed_batch, median, peak_rss_mb};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Setup {
    plan: Plan,
    backbone: Box<dyn model::Backbone>,
    interventions: Interventions,
    head: ClassifierHead,
}

fn setup(recipe: &str) -> Setup {
    let plan = Plan::new(LoadedRecipe::load(&repo().join(recipe)).unwrap()).unwrap();
    let backbone = model::load(&plan.model_dir, DType::F32, &Device::Cpu).unwrap();
    let interventions = plan.build_interventions(&Device::Cpu, DType::F32, 1).unwrap();
    let head = ClassifierHead::new(384, 2, plan.recipe.recipe.task.pooling, &mut SeededRng::new(2), DType::F32, &Device::Cpu).unwrap();
    Setup { plan, backbone, interventions, head }
}

/// One optimiser update (forward, loss, backward, clip, AdamW) at 16 × 64 tokens of
/// `recipe`'s interventions (`what` describes them in the output).
fn bench_step(recipe: &str, what: &str, cached: bool) {
    let s = setup(recipe);
    let ids = fixed_batch(16, 64);
    let batch: Batch = batch_from_ids(&ids, 0, &Device::Cpu).unwrap();
    let labels: Vec<usize> = (0..16).map(|i| i % 2).collect();
    let model = ClassifierModel { backbone: s.backbone.as_ref(), interventions: &s.interventions, head: &s.head, dtype: DType::F32 };
    let params: Vec<_> = reft_core::adapter::named_tensors(&s.interventions, Some(&s.head)).into_iter().filter(|(_, v)| v.trainable).collect();
    let mut opt = AdamW::new(&params, 0.0).unwrap();
    let cache = cached.then(|| PrefixCache::build(s.backbone.as_ref(), s.plan.frozen_prefix_layers(), &ids, 0, 16, &Device::Cpu).unwrap());
    let idx: Vec<usize> = (0..16).collect();
    let mut times = Vec::new();
    for i in 0..25 {
        let t0 = Instant::now();
        let rng = RefCell::new(SeededRng::new(i));
        let logits = model.logits(&batch, cache.as_ref().map(|c| (c, &idx[..])), true, &rng).unwrap();
        let loss = cross_entropy(&logits, &labels).unwrap();
        let grads = loss.backward().unwrap();
        let (clip, _) = clip_factor(&params, &grads, 1.0).unwrap();
        opt.step(&params, &grads, 1e-3, clip).unwrap();
        if i >= 3 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let frozen = s.plan.frozen_prefix_layers();
    println!(
        "step: median {:.4} s over {} updates (16 x 64 tokens, {what}{}), peak RSS {:.0} MB",
        median(times.clone()),
        times.len(),
        if cached { format!(", layers 0-{} cached", frozen.saturating_sub(1)) } else { String::new() },
        peak_rss_mb()
    );
}

/// Batch-1, 64-token forward with the interventions, in evaluation mode.
fn bench_forward() {
    let s = setup("configs/loreft_r4_layers2_4.yaml");
    let ids = fixed_batch(1, 64);
    let batch = batch_from_ids(&ids, 0, &Device::Cpu).unwrap();
    let model = ClassifierModel { backbone: s.backbone.as_ref(), interventions: &s.interventions, head: &s.head, dtype: DType::F32 };
    let rng = RefCell::new(SeededRng::new(0));
    let mut times = Vec::new();
    for i in 0..60 {
        let t0 = Instant::now();
        let logits: Tensor = model.logits(&batch, None, false, &rng).unwrap();
        let _ = logits.to_vec2::<f32>().unwrap();
        if i >= 10 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!("forward: median {:.2} ms over {} runs (batch 1 x 64 tokens), peak RSS {:.0} MB", median(times.clone()), times.len(), peak_rss_mb());
}

/// A whole training run of a shipped recipe through the CLI's code path.
fn bench_run(recipe: &str, epochs: usize) {
    let plan = Plan::new(
        LoadedRecipe::load_with_overrides(&repo().join(recipe), &[format!("train.epochs={epochs}")]).unwrap(),
    )
    .unwrap();
    let out = std::env::temp_dir().join(format!("reft-bench-run-{}", std::process::id()));
    let t0 = Instant::now();
    let summary = reft_core::train::train(
        &plan,
        reft_core::train::TrainOptions {
            run_dir: out.clone(),
            resume: false,
            checkpoint_every: 0,
            log_every: 50,
            cache_prefix: true,
            reporter: &mut reft_core::train::Silent,
        },
    )
    .unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&out);
    let scores = match (&summary.dev, &summary.test) {
        (Some(TaskMetrics::CausalLm(d)), _) => format!("eval response loss {:.4}, perplexity {:.3}", d.loss, d.perplexity),
        (d, t) => format!(
            "dev {:.2}%, test {:.2}%",
            100.0 * d.as_ref().and_then(|d| d.classification()).map_or(f64::NAN, |d| d.accuracy),
            100.0 * t.as_ref().and_then(|t| t.classification()).map_or(f64::NAN, |t| t.accuracy)
        ),
    };
    println!(
        "run {recipe} ({epochs} epoch(s)): {wall:.1} s wall, {:.1} s/epoch training, {scores}, peak RSS {:.0} MB",
        summary.seconds_per_epoch,
        peak_rss_mb()
    );
}

const EMOJI: &str = "configs/smollm2_emoji_loreft.yaml";

/// One optimiser update of the emoji demo's shape (EMOJI): LoReFT r4 at layer 15 of
/// SmolLM2-135M on its first training batch, layers 0-14 read from the frozen-prefix
/// cache as `reft train` does; forward to the response tokens' 49k-way log-softmax,
/// backward, clip, AdamW.
fn bench_step_causal() {
    let dev = Device::Cpu;
    let plan = Plan::new(LoadedRecipe::load(&repo().join(EMOJI)).unwrap()).unwrap();
    let backbone = model::load(&plan.model_dir, DType::F32, &dev).expect("run `reft setup` first");
    let tok = model::load_tokenizer(&plan.model_dir).unwrap();
    let data = plan.recipe.recipe.data.as_ref().unwrap();
    let set = reft_core::task::encode_file(&plan, "train", &data.train, &tok, backbone.as_causal_lm(), &mut |_: &str| {}).unwrap();
    let idx: Vec<usize> = (0..plan.recipe.recipe.train.batch_size.min(set.len())).collect();
    let rows: Vec<Vec<u32>> = idx.iter().map(|&i| set.ids[i].clone()).collect();
    let batch = batch_from_ids(&rows, tok.pad_id(), &dev).unwrap();
    let interventions = plan.build_interventions(&dev, DType::F32, 1).unwrap();
    let model = CausalLmModel::new(backbone.as_ref(), &interventions, DType::F32, &dev).unwrap();
    let params: Vec<_> = reft_core::adapter::named_tensors(&interventions, None).into_iter().filter(|(_, v)| v.trainable).collect();
    let mut opt = AdamW::new(&params, 0.0).unwrap();
    let frozen = plan.frozen_prefix_layers();
    let cache = PrefixCache::build(backbone.as_ref(), frozen, &set.ids, tok.pad_id(), 64, &dev).unwrap();
    let prompts = set.prompt_lengths().unwrap();
    let response_tokens: usize = idx.iter().map(|&i| set.ids[i].len() - prompts[i]).sum();
    let mut times = Vec::new();
    for i in 0..25 {
        let t0 = Instant::now();
        let rng = RefCell::new(SeededRng::new(i));
        let loss = model.batch_loss(&batch, &set, &idx, Some(&cache), &rng).unwrap();
        let grads = loss.backward().unwrap();
        let (clip, _) = clip_factor(&params, &grads, 1.0).unwrap();
        opt.step(&params, &grads, 1e-3, clip).unwrap();
        if i >= 3 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let (b, s) = batch.dims();
    println!(
        "step-causal: median {:.4} s over {} updates ({b} x {s} tokens, {response_tokens} scored response tokens; \
LoReFT r4 at layer 15 of SmolLM2-135M, first and last prompt tokens, layers 0-{} cached), peak RSS {:.0} MB",
        median(times.clone()),
        times.len(),
        frozen.saturating_sub(1),
        peak_rss_mb()
    );
}

const LOREFT_R4: &str = "configs/loreft_r4_layers2_4.yaml";

fn main() {
    reft_core::alloc::tune_for_tensors();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    match args.first().map(String::as_str) {
        Some("step") => bench_step(LOREFT_R4, "LoReFT r4 at layers 2,4, all positions", false),
        Some("step-cached") => bench_step(LOREFT_R4, "LoReFT r4 at layers 2,4, all positions", true),
        Some("step-lora") => bench_step("configs/lora_qv.yaml", "LoRA r8 on query,value of all 6 layers", false),
        Some("step-causal") => bench_step_causal(),
        Some("forward") => bench_forward(),
        Some("run") => bench_run(args.get(1).map_or("configs/loreft_r4_layers2_4.yaml", |s| s), args.get(2).and_then(|e| e.parse().ok()).unwrap_or(1)),
        _ => {
            // Each figure in a fresh process, for its own peak RSS.
            let me = std::env::current_exe().unwrap();
            for mode in ["step", "step-cached", "step-lora", "step-causal", "forward", "run"] {
                let status = std::process::Command::new(&me).arg(mode).status().unwrap();
                assert!(status.success(), "{mode} failed");
            }
        }
    }
}
