//! Training a recipe's interventions and task head on a frozen backbone.
//!
//! Seeded and deterministic on CPU: the batch order of an epoch and the dropout masks of
//! an update are pure functions of (seed, epoch, update), so `--resume` replays exactly
//! what an unbroken run would have done.

pub mod adamw;
pub mod checkpoint;
mod log;
mod reporter;
pub mod schedule;

pub use log::MetricsLog;
pub use reporter::{Reporter, Silent};

use crate::adapter::{self, HeadEntry, InterventionEntry, Manifest, ModelEntry, TaskEntry};
use crate::intervention::attach::Interventions;
use crate::data::{batch_order, read_examples, read_pairs, Example, Format};
use crate::error::{Error, Result};
use crate::model::{self, tokenizer::batch_from_ids, Backbone, PrefixCache};
use crate::recipe::{Plan, TaskKind};
use crate::rng::SeededRng;
use crate::task::causal_lm::{self, CausalLmModel, PromptFormat};
use crate::task::classification::{ClassifierHead, ClassifierModel};
use crate::task::metrics::{ClassificationMetrics, LmMetrics, TaskMetrics};
use crate::task::{Encoded, TaskModel, Targets};
use adamw::{clip_factor, AdamW};
use candle_core::DType;
use checkpoint::Progress;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct TrainOptions<'a> {
    /// Where the adapter, log and checkpoints go.
    pub run_dir: PathBuf,
    /// Continue from `run_dir`'s checkpoint.
    pub resume: bool,
    /// Write a checkpoint every this many updates (and at each epoch end).
    pub checkpoint_every: usize,
    /// Write a loss record to the log every this many updates.
    pub log_every: usize,
    /// Cache the frozen layers below the lowest intervention (on by default).
    pub cache_prefix: bool,
    pub reporter: &'a mut dyn Reporter,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub best_epoch: usize,
    /// Metrics on `data.eval` with the best weights (all zero without an eval file).
    pub dev: TaskMetrics,
    pub test: Option<TaskMetrics>,
    pub trainable_parameters: usize,
    pub steps: usize,
    /// Mean training seconds per epoch (evaluation excluded).
    pub seconds_per_epoch: f64,
}

/// Read and tokenise a data file named in the recipe, the way its task reads data.
/// `lm` is the model, needed by causal LM for its end token.
pub fn encode_file(
    plan: &Plan,
    key: &str,
    file: &str,
    tok: &model::tokenizer::TextTokenizer,
    lm: Option<&dyn model::CausalLm>,
    reporter: &mut dyn Reporter,
) -> Result<Encoded> {
    let recipe = &plan.recipe;
    let data = recipe.recipe.data.as_ref().expect("caller checked");
    let path = recipe.resolve_path(&format!("data.{key}"), file)?;
    if !path.exists() {
        return Err(recipe.error_at(&format!("data.{key}"), format!("{} does not exist (run `reft setup` for the default data)", path.display())));
    }
    let format = Format::of(&path, data.format)?;
    let task = &recipe.recipe.task;
    match task.kind {
        TaskKind::Classification => {
            let examples: Vec<Example> = read_examples(&path, format, &data.text, &data.label, task.num_labels, task.labels.as_deref())?;
            let ids = examples
                .iter()
                .map(|e| tok.encode(&e.text, Some(data.max_length)))
                .collect::<Result<Vec<_>>>()?;
            Ok(Encoded { ids, targets: Targets::Labels(examples.iter().map(|e| e.label).collect()) })
        }
        TaskKind::CausalLm => {
            let lm = lm.ok_or_else(|| recipe.error_at("task.kind", "causal_lm needs a decoder model"))?;
            let eos = *lm.stop_tokens().first().ok_or_else(|| Error::Other("the model names no end-of-sequence token".into()))?;
            let (prompt_col, response_col) = data.pair_columns();
            let pairs = read_pairs(&path, format, prompt_col, response_col)?;
            let prompts = PromptFormat::new(task.uses_chat_template(), task.system.clone(), &plan.model_dir)?;
            let (encoded, truncated) = causal_lm::encode_pairs(&path, &pairs, tok, &prompts, eos, data.max_length)?;
            if truncated > 0 {
                reporter.message(&format!(
                    "{}: {truncated} of {} responses cut to `data.max_length` {} tokens (their end token too)",
                    path.display(),
                    pairs.len(),
                    data.max_length
                ));
            }
            Ok(encoded)
        }
    }
}

/// The lowest layer any intervention touches: everything below it is frozen and fixed.
pub fn frozen_prefix_layers(plan: &Plan) -> usize {
    let n = crate::hooks::HookSurface::num_layers(&plan.model.config);
    plan.interventions
        .iter()
        // `embeddings` sits below layer 0: nothing is frozen below it.
        .map(|p| p.site.layer.unwrap_or(0))
        .min()
        .unwrap_or(n)
}

/// The manifest describing a plan's adapter.
pub fn manifest_for(plan: &Plan, model_dir: &Path) -> Result<Manifest> {
    let r = &plan.recipe.recipe;
    Ok(Manifest {
        format: adapter::FORMAT.into(),
        format_version: adapter::FORMAT_VERSION,
        reft_version: env!("CARGO_PKG_VERSION").into(),
        base_model: ModelEntry {
            path: model_dir.display().to_string(),
            arch: plan.model.arch.clone(),
            fingerprint: adapter::fingerprint(model_dir)?,
            parameters: plan.model.num_parameters,
        },
        interventions: plan
            .interventions
            .iter()
            .map(|p| InterventionEntry {
                name: p.name.clone(),
                kind: p.factory.name.into(),
                version: p.factory.version.into(),
                hook: p.site.to_string(),
                positions: p.positions.to_string(),
                options: p.options.clone(),
            })
            .collect(),
        plugins: crate::plugin::loaded_libraries()
            .into_iter()
            .filter(|lib| plan.interventions.iter().any(|p| lib.plugins.contains(&p.factory.name)))
            .map(|lib| lib.path.display().to_string())
            .collect(),
        head: (r.task.kind == TaskKind::Classification).then(|| HeadEntry {
            kind: "classification".into(),
            num_labels: r.task.num_labels,
            pooling: r.task.pooling,
            labels: r.task.labels.clone(),
        }),
        task: (r.task.kind == TaskKind::CausalLm).then(|| TaskEntry {
            kind: TaskKind::CausalLm,
            chat_template: r.task.uses_chat_template(),
            system: r.task.system.clone(),
        }),
        recipe: serde_yaml::to_value(r).ok(),
        max_length: r.data.as_ref().map(|d| d.max_length),
        tensors: Default::default(),
        weights_sha256: String::new(),
        metrics: None,
    })
}

fn step_rng(seed: u64, step: usize) -> SeededRng {
    SeededRng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (step as u64).wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Train `plan` into `opts.run_dir`.
pub fn train(plan: &Plan, opts: TrainOptions) -> Result<TrainSummary> {
    let recipe = &plan.recipe;
    let r = &recipe.recipe;
    let data = r.data.as_ref().ok_or_else(|| recipe.error_at_key("model", "the recipe has no `data:` section to train on"))?;
    let t = &r.train;
    if t.batch_size == 0 || t.epochs == 0 && t.max_steps.is_none() {
        return Err(recipe.error_at("train", "`batch_size` and `epochs` must be at least 1"));
    }
    if !(t.lr.is_finite() && t.lr > 0.0) {
        return Err(recipe.error_at("train.lr", format!("learning rate must be positive, got {}", t.lr)));
    }
    let device = crate::device::parse(&r.model.device).map_err(|e| recipe.error_at("model.device", e.to_string()))?;
    let dtype = r.model.dtype.dtype();
    let reporter = opts.reporter;
    std::fs::create_dir_all(&opts.run_dir).map_err(|e| Error::io(&opts.run_dir, e))?;

    // Model, data, interventions, head.
    let backbone = model::load(&plan.model_dir, dtype, &device)?;
    let tok = model::load_tokenizer(&plan.model_dir)?;
    let pad = tok.pad_id();
    let lm = backbone.as_causal_lm();
    let train_set = encode_file(plan, "train", &data.train, &tok, lm, reporter)?;
    let dev_set = match &data.eval { Some(f) => Some(encode_file(plan, "eval", f, &tok, lm, reporter)?), None => None };
    let test_set = match &data.test { Some(f) => Some(encode_file(plan, "test", f, &tok, lm, reporter)?), None => None };
    reporter.message(&format!(
        "data: {} train, {} dev, {} test examples",
        train_set.ids.len(),
        dev_set.as_ref().map_or(0, |d| d.ids.len()),
        test_set.as_ref().map_or(0, |d| d.ids.len())
    ));
    let mut init = SeededRng::new(t.seed);
    let interventions = plan.build_interventions(&device, dtype, init.next_u64())?;
    // Only classification has a head of its own; a causal LM reuses its frozen LM head.
    let head = match r.task.kind {
        TaskKind::Classification => Some(ClassifierHead::new(backbone.hidden_size(), r.task.num_labels, r.task.pooling, &mut init.fork(), dtype, &device)?),
        TaskKind::CausalLm => None,
    };
    let params = adapter::named_tensors(&interventions, head.as_ref())
        .into_iter()
        .filter(|(_, v)| v.trainable)
        .collect::<Vec<_>>();
    let trainable: usize = params.iter().map(|(_, v)| v.var.elem_count()).sum();
    let model = task_model(backbone.as_ref(), &interventions, head.as_ref(), dtype, &device)?;

    // The frozen prefix, computed once.
    let prefix_layer = if opts.cache_prefix { frozen_prefix_layers(plan) } else { 0 };
    let caches = if prefix_layer > 0 {
        let started = Instant::now();
        let build = |e: &Encoded| PrefixCache::build(backbone.as_ref(), prefix_layer, &e.ids, pad, 64, &device);
        let c = (build(&train_set)?, dev_set.as_ref().map(build).transpose()?, test_set.as_ref().map(build).transpose()?);
        let bytes = c.0.bytes() + c.1.as_ref().map_or(0, |x| x.bytes()) + c.2.as_ref().map_or(0, |x| x.bytes());
        reporter.message(&format!(
            "cached the frozen layers below layer {prefix_layer} ({:.0} MB, {:.1} s)",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        ));
        Some(c)
    } else {
        None
    };
    let train_cache = caches.as_ref().map(|c| &c.0);
    let dev_cache = caches.as_ref().and_then(|c| c.1.as_ref());
    let test_cache = caches.as_ref().and_then(|c| c.2.as_ref());

    // Schedule.
    let n = train_set.ids.len();
    let per_epoch = n.div_ceil(t.batch_size);
    // `max_steps`, when set, overrides `epochs` (as in HF's Trainer).
    let total = t.max_steps.unwrap_or(per_epoch * t.epochs);
    let epochs = total.div_ceil(per_epoch);
    let warmup = (t.warmup_ratio * total as f64).ceil() as usize;
    let lengths: Vec<usize> = train_set.ids.iter().map(|r| r.len()).collect();

    let mut opt = AdamW::new(&params, t.weight_decay)?;
    let mut progress = if opts.resume {
        let p = checkpoint::load(&opts.run_dir, &params, &mut opt, &device)?;
        reporter.message(&format!("resuming at update {} (epoch {}, batch {})", p.global_step, p.epoch + 1, p.batch_in_epoch));
        p
    } else {
        Progress { global_step: 0, epoch: 0, batch_in_epoch: 0, best_dev_accuracy: None, best_epoch: None, history: vec![], train_seconds: 0.0, epoch_loss_sum: 0.0 }
    };
    let log = MetricsLog::open(&opts.run_dir.join("metrics.jsonl"), opts.resume.then_some(progress.global_step))?;
    let mut manifest = manifest_for(plan, &plan.model_dir)?;
    let eval_batch = model.eval_batch_size(t.batch_size);

    reporter.begin(total, progress.global_step);
    'epochs: while progress.epoch < epochs {
        let epoch = progress.epoch;
        let order = batch_order(n, t.batch_size, t.seed, epoch, t.bucket_by_length.then_some(&lengths[..]));
        let mut clock = Instant::now();
        let mut examples_since = 0usize;
        for idx in order.iter().skip(progress.batch_in_epoch) {
            if progress.global_step >= total {
                break;
            }
            let step = progress.global_step;
            let lr = schedule::linear_lr(t.lr, step, total, warmup);
            let rows: Vec<Vec<u32>> = idx.iter().map(|&i| train_set.ids[i].clone()).collect();
            let batch = batch_from_ids(&rows, pad, &device)?;
            let rng = RefCell::new(step_rng(t.seed, step));
            let loss = model.batch_loss(&batch, &train_set, idx, train_cache, &rng)?;
            let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss_value.is_finite() {
                // The weights have not been touched by this batch yet: they are the last good state.
                checkpoint::save(&opts.run_dir, &params, &opt, &progress)?;
                return Err(Error::Other(format!(
                    "training stopped: the loss became {loss_value} at update {} (epoch {}, lr {lr:.3e}). \
The last good state is saved in {}; lower `train.lr` and resume with --resume, or start again.",
                    step + 1,
                    epoch + 1,
                    checkpoint::path(&opts.run_dir).display()
                )));
            }
            let grads = loss.backward()?;
            let (clip, grad_norm) = clip_factor(&params, &grads, t.max_grad_norm)?;
            opt.step(&params, &grads, lr, clip)?;
            progress.global_step += 1;
            progress.batch_in_epoch += 1;
            progress.epoch_loss_sum += loss_value;
            examples_since += idx.len();
            let secs = clock.elapsed().as_secs_f64();
            reporter.step(progress.global_step, epoch, loss_value, examples_since as f64 / secs.max(1e-9));
            if progress.global_step % opts.log_every.max(1) == 0 {
                log.write(serde_json::json!({
                    "type": "step", "step": progress.global_step, "epoch": epoch + 1, "loss": loss_value,
                    "lr": lr, "grad_norm": grad_norm, "examples_per_sec": examples_since as f64 / secs.max(1e-9)
                }))?;
            }
            if opts.checkpoint_every > 0 && progress.global_step % opts.checkpoint_every == 0 {
                progress.train_seconds += clock.elapsed().as_secs_f64();
                clock = Instant::now();
                examples_since = 0;
                checkpoint::save(&opts.run_dir, &params, &opt, &progress)?;
            }
        }
        progress.train_seconds += clock.elapsed().as_secs_f64();
        let batches_done = progress.batch_in_epoch;
        if batches_done < order.len() && progress.global_step < total {
            continue 'epochs;
        }
        // End of epoch: evaluate on dev and keep the best adapter.
        let mean_loss = progress.epoch_loss_sum / batches_done.max(1) as f64;
        let dev = match &dev_set {
            Some(d) => Some(model.metrics(d, eval_batch, pad, dev_cache)?),
            None => None,
        };
        let score = dev.map_or(-mean_loss, |d| d.score());
        let best = progress.best_dev_accuracy.is_none_or(|b| score > b);
        if best {
            progress.best_dev_accuracy = Some(score);
            progress.best_epoch = Some(epoch);
            adapter::save(&opts.run_dir, &manifest, &interventions, head.as_ref())?;
        }
        let record = serde_json::json!({
            "type": "epoch", "step": progress.global_step, "epoch": epoch + 1, "train_loss": mean_loss,
            "dev": dev, "best": best, "train_seconds": progress.train_seconds
        });
        log.write(record.clone())?;
        progress.history.push(record);
        if let Some(d) = &dev {
            reporter.epoch(epoch, d, best);
        }
        progress.epoch += 1;
        progress.batch_in_epoch = 0;
        progress.epoch_loss_sum = 0.0;
        checkpoint::save(&opts.run_dir, &params, &opt, &progress)?;
        if progress.global_step >= total {
            break;
        }
    }
    reporter.end();

    // Test with the best weights, read back from disk (the same path a resumed run takes).
    let file = model::safetensors_file::WeightFile::load(&opts.run_dir.join(adapter::WEIGHTS_FILE), dtype, &device)?;
    for (name, v) in adapter::named_tensors(&interventions, head.as_ref()) {
        v.var.set(&file.get(&name, v.var.dims())?)?;
    }
    let dev = match &dev_set {
        Some(d) => model.metrics(d, eval_batch, pad, dev_cache)?,
        None => match r.task.kind {
            TaskKind::Classification => TaskMetrics::Classification(ClassificationMetrics::compute(&[], &[], r.task.num_labels, 0.0)),
            TaskKind::CausalLm => TaskMetrics::CausalLm(LmMetrics::from_sum(0.0, 0, 0)),
        },
    };
    let test = match &test_set {
        Some(d) => Some(model.metrics(d, eval_batch, pad, test_cache)?),
        None => None,
    };
    let best_epoch = progress.best_epoch.unwrap_or(0);
    let summary = TrainSummary {
        run_dir: opts.run_dir.clone(),
        best_epoch: best_epoch + 1,
        dev,
        test,
        trainable_parameters: trainable,
        steps: progress.global_step,
        seconds_per_epoch: progress.train_seconds / (progress.epoch.max(1)) as f64,
    };
    log.write(serde_json::json!({ "type": "final", "step": progress.global_step, "summary": summary }))?;
    manifest.metrics = serde_json::to_value(&summary).ok();
    adapter::save(&opts.run_dir, &manifest, &interventions, head.as_ref())?;
    // A LoRA-only adapter is also written in HF PEFT's layout, so PEFT (and anything that reads
    // it) can load the run folder as it is.
    if adapter::peft::writable(&interventions, &manifest).is_ok() {
        adapter::peft::save(&opts.run_dir, &manifest, &interventions, &plan.model.config)?;
    }
    crate::io::write_atomic(&opts.run_dir.join("summary.json"), serde_json::to_string_pretty(&summary).unwrap().as_bytes())?;
    Ok(summary)
}

/// The task's model over `backbone`: a classifier when there is a `head`, else a causal LM.
fn task_model<'a>(
    backbone: &'a dyn Backbone,
    interventions: &'a Interventions,
    head: Option<&'a ClassifierHead>,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Box<dyn TaskModel + 'a>> {
    Ok(match head {
        Some(head) => Box::new(ClassifierModel { backbone, interventions, head, dtype }),
        None => Box::new(CausalLmModel::new(backbone, interventions, dtype, device)?),
    })
}

/// The model to evaluate or predict with, built from a loaded adapter.
pub fn classifier_of(loaded: &adapter::Loaded) -> Result<ClassifierModel<'_>> {
    let head = loaded.head.as_ref().ok_or_else(|| Error::Other(format!("{}: the adapter has no classification head", loaded.dir.display())))?;
    Ok(ClassifierModel { backbone: loaded.backbone.as_ref(), interventions: &loaded.interventions, head, dtype: DType::F32 })
}
