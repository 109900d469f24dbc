//! Benchmarks for training and inference on the real MiniLM (docs/benchmarks.md).
//!
//!   cargo bench --bench train                 # every figure, each in its own process
//!   cargo bench --bench train -- step         # one figure: step | step-cached | step-lora | step-causal | forward | run
//!   cargo bench --bench train -- step bf16    # step, step-cached, step-lora, forward with a bf16 (or f16) base
//!   cargo bench --bench train -- run configs/loreft_glue.yaml 1 model.dtype=bf16   # a recipe, epochs, --set overrides
//!   cargo bench --bench train -- step-llm DIR [f32|bf16] [UPDATES]   # Llama-3.2-1B shape (tests/reference/llama_1b_shape.py); the first update is warm-up
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
use shared::{fixed_batch, median, peak_rss_mb, rss_mb};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Setup {
    plan: Plan,
    backbone: Box<dyn model::Backbone>,
    interventions: Interventions,
    head: ClassifierHead,
}

/// `recipe`'s model with its frozen base in `base` (interventions and head stay f32, as
/// `model.dtype` has them).
fn setup(recipe: &str, base: DType) -> Setup {
    let plan = Plan::new(LoadedRecipe::load(&repo().join(recipe)).unwrap()).unwrap();
    let backbone = model::load(&plan.model_dir, base, &Device::Cpu).unwrap();
    let interventions = plan.build_interventions(&Device::Cpu, DType::F32, 1).unwrap();
    let head = ClassifierHead::new(384, 2, plan.recipe.recipe.task.pooling, &mut SeededRng::new(2), DType::F32, &Device::Cpu).unwrap();
    Setup { plan, backbone, interventions, head }
}

/// The base dtype a bench names (`f32`, the default, or `bf16`/`f16`).
fn base_dtype(arg: Option<&String>) -> DType {
    match arg.map(String::as_str) {
        None | Some("f32") => DType::F32,
        Some("bf16") => DType::BF16,
        Some("f16") => DType::F16,
        Some(other) => panic!("unknown base dtype {other}: f32, bf16 or f16"),
    }
}

/// One optimiser update (forward, loss, backward, clip, AdamW) at 16 × 64 tokens of
/// `recipe`'s interventions (`what` describes them in the output), the base in `base`.
fn bench_step(recipe: &str, what: &str, cached: bool, base: DType) {
    let s = setup(recipe, base);
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
        "step: median {:.4} s over {} updates (16 x 64 tokens, {what}, {base:?} base{}), peak RSS {:.0} MB",
        median(times.clone()),
        times.len(),
        if cached { format!(", layers 0-{} cached", frozen.saturating_sub(1)) } else { String::new() },
        peak_rss_mb()
    );
}

/// Batch-1, 64-token forward with the interventions, in evaluation mode.
fn bench_forward(base: DType) {
    let s = setup("configs/loreft_r4_layers2_4.yaml", base);
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
    println!("forward: median {:.2} ms over {} runs (batch 1 x 64 tokens, {base:?} base), peak RSS {:.0} MB", median(times.clone()), times.len(), peak_rss_mb());
}

/// A whole training run of a shipped recipe through the CLI's code path, with `--set`-style
/// overrides (`model.dtype=bf16`).
fn bench_run(recipe: &str, epochs: usize, overrides: &[String]) {
    let mut sets = vec![format!("train.epochs={epochs}")];
    sets.extend_from_slice(overrides);
    let plan = Plan::new(
        LoadedRecipe::load_with_overrides(&repo().join(recipe), &sets).unwrap(),
    )
    .unwrap();
    let out = std::env::temp_dir().join(format!("reft-bench-run-{}", std::process::id()));
    let t0 = Instant::now();
    let summary = reft_core::train::train(
        &plan,
        reft_core::train::TrainOptions { log_every: 50, ..reft_core::train::TrainOptions::one_process(out.clone(), &mut reft_core::train::Silent) },
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
        "run {recipe} ({epochs} epoch(s){}): {wall:.1} s wall, {:.1} s/epoch training, {scores}, peak RSS {:.0} MB",
        overrides.iter().map(|o| format!(", {o}")).collect::<String>(),
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

/// One optimiser update at Llama-3.2-1B's shape (the folder tests/reference/llama_1b_shape.py
/// writes; `dtype` the base's compute dtype): LoReFT r4 at the block output of layers 3, 7,
/// 11, 15 on the first and last 5 prompt tokens, batch 4 x 256 random tokens, the first 192
/// the prompt, the causal-LM loss on the last 64; backward, clip, AdamW. The same step as
/// tests/bench/peer/step_llm.py runs with pyreft. No frozen-prefix cache (the peer has none).
fn bench_step_llm(dir: &str, dtype: &str, updates: usize) {
    use reft_core::intervention::{self, BuildSpec};
    let dev = Device::Cpu;
    let base_dtype = match dtype {
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        other => panic!("step-llm DIR [f32|bf16]: unknown dtype {other}"),
    };
    let dir = PathBuf::from(dir);
    let t_load = Instant::now();
    let backbone = model::load(&dir, base_dtype, &dev).unwrap_or_else(|e| panic!("{e} (write the model with tests/reference/llama_1b_shape.py)"));
    let load_secs = t_load.elapsed().as_secs_f64();
    eprintln!("step-llm: loaded in {load_secs:.1} s; RSS {:.0} MB, peak {:.0} MB", rss_mb(), peak_rss_mb());
    let lm = backbone.as_causal_lm().expect("a decoder");
    let (batch_size, seq, prompt, layers) = (4usize, 256usize, 192usize, [3usize, 7, 11, 15]);
    let mut rng = SeededRng::new(1);
    let mut interventions = Interventions::default();
    let options: serde_yaml::Mapping = serde_yaml::from_str("{rank: 4}").unwrap();
    for l in layers {
        let [site] = reft_core::hooks::HookPattern::parse(&format!("layers[{l}].block_output")).unwrap().resolve(backbone.as_ref()).unwrap()[..] else { unreachable!() };
        let (in_dim, out_dim) = backbone.component_dims(site.component).unwrap();
        let mut spec = BuildSpec { options: &options, site, in_dim, out_dim, device: &dev, dtype: DType::F32, rng: &mut rng };
        interventions.push(&format!("l{l}"), site, "f5+l5".parse().unwrap(), (intervention::find("loreft").unwrap().build)(&mut spec).unwrap());
    }
    let params: Vec<_> = reft_core::adapter::named_tensors(&interventions, None).into_iter().filter(|(_, v)| v.trainable).collect();
    let mut opt = AdamW::new(&params, 0.0).unwrap();
    let mut g = SeededRng::new(0);
    let vocab = lm.vocab_size() as u32;
    let rows: Vec<Vec<u32>> = (0..batch_size).map(|_| (0..seq).map(|_| 1000 + (g.next_u64() % (vocab as u64 - 2000)) as u32).collect()).collect();
    let batch = batch_from_ids(&rows, 0, &dev).unwrap();
    // Positions count over the prompt (as in `reft train`): the scope marks its tokens.
    let scope: Vec<Vec<u32>> = (0..batch_size).map(|_| (0..seq).map(|i| u32::from(i < prompt)).collect()).collect();
    // Token t+1 is predicted from position t: the last 64 tokens from positions 191..254.
    let targets: Vec<u32> = rows.iter().flat_map(|r| r[prompt..].to_vec()).collect();
    let mut times = Vec::new();
    for i in 0..updates.max(2) {
        let t0 = Instant::now();
        let step_rng = RefCell::new(SeededRng::new(i as u64));
        let hooks = interventions.hooks_within(&batch, &scope, true, DType::F32, &step_rng).unwrap();
        let rss_before = rss_mb();
        let h = backbone.forward(&batch, &hooks).unwrap();
        let rss_forward = rss_mb();
        let tail = h.narrow(1, prompt - 1, seq - prompt).unwrap();
        let logits = lm.lm_head(&tail).unwrap();
        let logits = logits.reshape((batch_size * (seq - prompt), ())).unwrap();
        // The trainer's causal-LM loss (task/causal_lm.rs): one fused op, scored in f32.
        let loss = reft_core::ops::target_log_probs(&logits, &targets).unwrap().mean_all().unwrap().neg().unwrap();
        let rss_loss = rss_mb();
        let grads = loss.backward().unwrap();
        let (rss_backward, peak_backward) = (rss_mb(), peak_rss_mb());
        let (clip, _) = clip_factor(&params, &grads, 1.0).unwrap();
        opt.step(&params, &grads, 1e-3, clip).unwrap();
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "step-llm: update {i}: {secs:.2} s, loss {:.4}; RSS MB before {rss_before:.0}, after forward {rss_forward:.0}, \
after loss {rss_loss:.0}, after backward {rss_backward:.0} (peak so far {peak_backward:.0})",
            loss.to_scalar::<f32>().unwrap()
        );
        if i >= 1 {
            times.push(secs);
        }
    }
    println!(
        "step-llm: median {:.2} s over {} updates ({batch_size} x {seq} tokens, loss on the last {}; LoReFT r4 at layers 3,7,11,15, f5+l5; \
base in {dtype}, interventions f32; {:.1} B parameters loaded in {load_secs:.0} s), peak RSS {:.0} MB",
        median(times.clone()),
        times.len(),
        seq - prompt,
        backbone.num_parameters() as f64 / 1e9,
        peak_rss_mb()
    );
}

const LOREFT_R4: &str = "configs/loreft_r4_layers2_4.yaml";

fn main() {
    reft_core::alloc::tune_for_tensors();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    match args.first().map(String::as_str) {
        Some("step") => bench_step(LOREFT_R4, "LoReFT r4 at layers 2,4, all positions", false, base_dtype(args.get(1))),
        Some("step-cached") => bench_step(LOREFT_R4, "LoReFT r4 at layers 2,4, all positions", true, base_dtype(args.get(1))),
        Some("step-lora") => bench_step("configs/lora_qv.yaml", "LoRA r8 on query,value of all 6 layers", false, base_dtype(args.get(1))),
        Some("step-causal") => bench_step_causal(),
        // Not in the all-figures run: it needs a 2.5 GB model written by a script.
        Some("step-llm") => bench_step_llm(
            args.get(1).map_or("~/.cache/reft/bench/llama-1b-shape", |s| s).replace('~', &std::env::var("HOME").unwrap_or_default()).as_str(),
            args.get(2).map_or("f32", |s| s),
            args.get(3).and_then(|n| n.parse().ok()).unwrap_or(4),
        ),
        Some("forward") => bench_forward(base_dtype(args.get(1))),
        Some("run") => bench_run(
            args.get(1).map_or("configs/loreft_r4_layers2_4.yaml", |s| s),
            args.get(2).and_then(|e| e.parse().ok()).unwrap_or(1),
            args.get(3..).unwrap_or_default(),
        ),
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
