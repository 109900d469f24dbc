//! Training a recipe's interventions and task head on a frozen backbone.
//!
//! Seeded and deterministic on CPU: the batch order of an epoch and the dropout masks of
//! an update are pure functions of (seed, epoch, update), so `--resume` replays exactly
//! what an unbroken run would have done.

pub mod adamw;
pub mod checkpoint;
mod log;
pub mod prefix_store;
mod reporter;
pub mod run_dir;
pub mod schedule;

pub use log::{EpochRecord, FinalRecord, MetricsLog, Record, StepRecord};
pub use reporter::{Reporter, Silent};

use crate::adapter;
use crate::data::batch_order;
use crate::dist::{self, Collective};
use crate::error::{Error, Result};
use crate::model::{self, tokenizer::batch_from_ids, PrefixCache};
use crate::recipe::{Plan, TaskKind};
use crate::rng::SeededRng;
use crate::task::classification::ClassifierHead;
use crate::task::metrics::TaskMetrics;
use crate::task::{encode_file, task_model, Encoded};
use adamw::{clip_factor, AdamW};
use candle_core::DType;
use checkpoint::Progress;
use std::cell::RefCell;
use std::path::PathBuf;
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
    /// Keep those caches in this folder and reuse them across runs (a sweep's trials);
    /// None: build them in memory each run.
    pub prefix_cache_dir: Option<PathBuf>,
    pub reporter: &'a mut dyn Reporter,
    /// The data-parallel world (`dist::world::connect`; `&SingleProcess` for one process).
    /// Every rank trains its share of each batch; rank 0 alone evaluates and writes.
    pub collective: &'a dyn Collective,
    /// Stop a hopeless run early (a sweep's median rule); None: train every epoch.
    pub early_stop: Option<EarlyStop>,
}

/// Stop after epoch `after_epoch` (1-based) when that epoch's dev score
/// ([`TaskMetrics::score`]: accuracy, or minus the response loss) is below `below`. The
/// run then ends as a finished one: its best epoch so far is kept, and test and transfer
/// sets are evaluated with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStop {
    pub after_epoch: usize,
    pub below: f64,
}

impl std::str::FromStr for EarlyStop {
    type Err = String;
    /// `EPOCH:SCORE`, as `reft train --stop-below` takes it.
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (epoch, score) = text.split_once(':').ok_or_else(|| format!("`{text}`: expected EPOCH:SCORE, e.g. 1:0.75"))?;
        let after_epoch = epoch.trim().parse::<usize>().ok().filter(|&e| e >= 1).ok_or_else(|| format!("`{epoch}`: the epoch is a whole number from 1"))?;
        let below = score.trim().parse::<f64>().ok().filter(|s| s.is_finite()).ok_or_else(|| format!("`{score}`: the score is a finite number"))?;
        Ok(EarlyStop { after_epoch, below })
    }
}

impl<'a> TrainOptions<'a> {
    /// One process training a fresh run into `run_dir`: no checkpoints but the epoch ends',
    /// a log record every 10 updates, the frozen prefix cached in memory. Callers change the
    /// fields they need (`TrainOptions { resume: true, ..TrainOptions::one_process(dir, r) }`).
    pub fn one_process(run_dir: PathBuf, reporter: &'a mut dyn Reporter) -> Self {
        TrainOptions {
            run_dir,
            resume: false,
            checkpoint_every: 0,
            log_every: 10,
            cache_prefix: true,
            prefix_cache_dir: None,
            reporter,
            collective: &dist::SingleProcess,
            early_stop: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub best_epoch: usize,
    /// Metrics on `data.eval` with the best weights; None (`null` in summary.json) without
    /// an eval file, never zeros that read as a score.
    pub dev: Option<TaskMetrics>,
    pub test: Option<TaskMetrics>,
    /// Metrics on each `data.transfer` file with the best weights, by the recipe's name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub transfer: std::collections::BTreeMap<String, TaskMetrics>,
    pub trainable_parameters: usize,
    pub steps: usize,
    /// Mean training seconds per epoch (evaluation excluded).
    pub seconds_per_epoch: f64,
    /// The dev score ([`TaskMetrics::score`]) after each epoch trained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dev_by_epoch: Vec<f64>,
    /// The epoch (1-based) after which [`TrainOptions::early_stop`] ended the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_after_epoch: Option<usize>,
}

/// The dev score of each epoch in a run's history (epochs without dev data have none).
fn dev_scores(history: &[serde_json::Value]) -> Vec<f64> {
    history
        .iter()
        .filter_map(|h| match serde_json::from_value::<Record>(h.clone()) {
            Ok(Record::Epoch(e)) => e.dev.map(|d| d.score()),
            _ => None,
        })
        .collect()
}

fn step_rng(seed: u64, step: usize) -> SeededRng {
    SeededRng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (step as u64).wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Train `plan` into `opts.run_dir`.
pub fn train(plan: &Plan, opts: TrainOptions) -> Result<TrainSummary> {
    let recipe = &plan.recipe;
    let r = &recipe.recipe;
    let data = r.data.as_ref().ok_or_else(|| recipe.error_at_key("model", "the recipe has no `data:` section to train on"))?;
    // Plan::new checked every `train:` and `data:` number (recipe/train_check.rs).
    let t = &r.train;
    // Mixed precision: the frozen base computes in the recipe's dtype; interventions, head,
    // optimiser state and loss stay in f32 (states are cast at the hooks).
    let base_dtype = r.model.dtype.dtype();
    let dtype = DType::F32;
    let reporter = opts.reporter;
    let world = opts.collective;
    let root = world.is_root();
    // Under a launcher, `device: cuda` is the GPU of this rank's local rank (dist::gpu_of_rank).
    let device = dist::rank_device(&r.model.device, world).map_err(|e| recipe.error_at("model.device", e.to_string()))?;
    let identity = run_dir::RunIdentity::of(plan)?;
    // Every rank must train the same recipe on the same data with the same binary.
    if world.world_size() > 1 {
        dist::check_same_everywhere(world, &identity.fingerprint()?, "recipe, data files or reft binary")?;
    }
    // One trainer per folder; then nothing else writes here, so leftovers of a killed writer
    // go. Only rank 0 writes the run folder.
    let _lock = if root {
        std::fs::create_dir_all(&opts.run_dir).map_err(|e| Error::io(&opts.run_dir, e))?;
        let lock = run_dir::RunLock::acquire(&opts.run_dir)?;
        run_dir::remove_stray_temp_files(&opts.run_dir)?;
        Some(lock)
    } else {
        None
    };
    // A fresh run into a folder that holds an earlier one replaces it: say so, never silently.
    if root && !opts.resume && ["summary.json", crate::adapter::WEIGHTS_FILE, "checkpoint"].iter().any(|f| opts.run_dir.join(f).exists()) {
        reporter.message(&format!(
            "note: {} holds an earlier run; this one replaces its adapter, metrics and checkpoint \
             (--resume continues it instead; --out DIR keeps it)",
            opts.run_dir.display()
        ));
    }
    if opts.resume && root {
        match run_dir::RunIdentity::load(&opts.run_dir)? {
            Some(recorded) => identity.check_resume(&recorded, &opts.run_dir)?,
            None => reporter.message(&format!(
                "note: {} records no {} (an older reft made it): the recipe and data are not checked against the run's",
                opts.run_dir.display(),
                run_dir::IDENTITY_FILE
            )),
        }
    }
    if root {
        identity.save(&opts.run_dir)?;
    }

    // Model, data, interventions, head.
    let backbone = model::load(&plan.model_dir, base_dtype, &device)?;
    let tok = model::load_tokenizer(&plan.model_dir)?;
    let pad = tok.pad_id();
    let lm = backbone.as_causal_lm();
    let mut note = |m: &str| reporter.message(m);
    let train_set = encode_file(plan, "train", &data.train, &tok, lm, &mut note)?;
    let dev_set = match &data.eval { Some(f) => Some(encode_file(plan, "eval", f, &tok, lm, &mut note)?), None => None };
    let test_set = match &data.test { Some(f) => Some(encode_file(plan, "test", f, &tok, lm, &mut note)?), None => None };
    // Read now, so a missing transfer file stops the run before training, not after.
    let mut transfer_sets = Vec::new();
    for (name, file) in &data.transfer {
        transfer_sets.push((name.clone(), encode_file(plan, &format!("transfer.{name}"), file, &tok, lm, &mut note)?));
    }
    reporter.message(&format!(
        "data: {} train, {} dev, {} test examples",
        train_set.ids.len(),
        dev_set.as_ref().map_or(0, |d| d.ids.len()),
        test_set.as_ref().map_or(0, |d| d.ids.len())
    ));
    let ranks = world.world_size();
    if ranks > train_set.ids.len() {
        return Err(Error::Other(format!("{ranks} ranks for {} training examples: use at most one rank per example", train_set.ids.len())));
    }
    if ranks > t.batch_size {
        return Err(recipe.error_at(
            "train.batch_size",
            format!("`batch_size` {} is the global batch, split over {ranks} ranks: it must be at least the world size", t.batch_size),
        ));
    }
    let mut init = SeededRng::new(t.seed);
    let interventions = plan.build_interventions(&device, dtype, init.next_u64())?;
    // Only classification has a head of its own; a causal LM reuses its frozen LM head.
    let head = match r.task.kind {
        TaskKind::Classification => {
            let mut head = ClassifierHead::new(backbone.hidden_size(), r.task.num_labels, r.task.pooling, &mut init.fork(), dtype, &device)?;
            if let Some(p) = r.task.classifier_dropout {
                head.dropout = p;
            }
            Some(head)
        }
        TaskKind::CausalLm => None,
    };
    let params = adapter::named_tensors(&interventions, head.as_ref())
        .into_iter()
        .filter(|(_, v)| v.trainable)
        .collect::<Vec<_>>();
    let trainable: usize = params.iter().map(|(_, v)| v.var.elem_count()).sum();
    let model = task_model(backbone.as_ref(), &interventions, head.as_ref(), dtype, &device)?;

    // The frozen prefix, computed once.
    let prefix_layer = if opts.cache_prefix { plan.frozen_prefix_layers() } else { 0 };
    let caches = if prefix_layer > 0 {
        let started = Instant::now();
        let reused = std::cell::Cell::new(0usize);
        let build = |e: &Encoded| match &opts.prefix_cache_dir {
            Some(dir) => prefix_store::load_or_build(dir, backbone.as_ref(), &plan.model_dir, base_dtype, prefix_layer, &e.ids, pad, &device).map(|(c, read)| {
                reused.set(reused.get() + read as usize);
                c
            }),
            None => PrefixCache::build(backbone.as_ref(), prefix_layer, &e.ids, pad, 64, &device),
        };
        // Only rank 0 evaluates.
        let c = (build(&train_set)?, dev_set.as_ref().filter(|_| root).map(build).transpose()?, test_set.as_ref().filter(|_| root).map(build).transpose()?);
        let bytes = c.0.bytes() + c.1.as_ref().map_or(0, |x| x.bytes()) + c.2.as_ref().map_or(0, |x| x.bytes());
        let how = match (&opts.prefix_cache_dir, reused.get()) {
            (Some(dir), 0) => format!(", written to {}", dir.display()),
            (Some(dir), n) => format!(", {n} of them read from {}", dir.display()),
            (None, _) => String::new(),
        };
        reporter.message(&format!(
            "cached the frozen layers below layer {prefix_layer} ({:.0} MB, {:.1} s{how})",
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
        Progress {
            global_step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            best_dev_accuracy: None,
            best_epoch: None,
            history: vec![],
            train_seconds: 0.0,
            epoch_loss_sum: 0.0,
            stopped_after_epoch: None,
        }
    };
    let log = if root { Some(MetricsLog::open(&opts.run_dir.join("metrics.jsonl"), opts.resume.then_some((progress.global_step, progress.epoch)))?) } else { None };
    let write_log = |record: &Record| log.as_ref().map_or(Ok(()), |l| l.write(record));
    // Only rank 0 writes checkpoints (the others' state is the same).
    let save_checkpoint = |opt: &AdamW, progress: &Progress| if root { checkpoint::save(&opts.run_dir, &params, opt, progress) } else { Ok(()) };
    let mut manifest = adapter::manifest_for(plan, &plan.model_dir)?;
    let eval_batch = model.eval_batch_size(t.batch_size);

    // What data parallelism costs: all-reduce bytes and time (waiting for the slowest rank
    // included) per update, said at the end.
    let mut comm = dist::CommStats::default();
    reporter.begin(total, progress.global_step);
    'epochs: while progress.epoch < epochs && progress.stopped_after_epoch.is_none() {
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
            // This rank's share of the global batch; its mean loss weighted by its share of
            // what the global mean divides by, so the ranks' gradients sum to the global one.
            let mine = dist::shard(idx, world.rank(), ranks);
            let rng = RefCell::new(step_rng(t.seed, step));
            let (mut grads, mut loss_value) = if mine.is_empty() {
                (candle_core::backprop::GradStore::default(), 0.0)
            } else {
                let rows: Vec<Vec<u32>> = mine.iter().map(|&i| train_set.ids[i].clone()).collect();
                let batch = batch_from_ids(&rows, pad, &device)?;
                let mut loss = model.batch_loss(&batch, &train_set, mine, train_cache, &rng)?;
                if ranks > 1 {
                    let share = model.loss_weight(&train_set, mine)? as f64 / model.loss_weight(&train_set, idx)?.max(1) as f64;
                    loss = (loss * share)?;
                }
                let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                (if value.is_finite() { loss.backward()? } else { candle_core::backprop::GradStore::default() }, value)
            };
            let reduce_start = Instant::now();
            if ranks > 1 {
                let mut sum = [loss_value];
                world.all_reduce_sum_f64(&mut sum)?;
                loss_value = sum[0];
                comm.bytes += std::mem::size_of::<f64>();
            }
            if !loss_value.is_finite() {
                // The weights have not been touched by this batch yet: they are the last good state.
                save_checkpoint(&opt, &progress)?;
                return Err(Error::Other(format!(
                    "training stopped: the loss became {loss_value} at update {} (epoch {}, lr {lr:.3e}). \
The last good state is saved in {}; lower `train.lr` and resume with --resume, or start again.",
                    step + 1,
                    epoch + 1,
                    checkpoint::path(&opts.run_dir).display()
                )));
            }
            comm.bytes += dist::grads::all_reduce(world, &params, &mut grads)?;
            comm.seconds += reduce_start.elapsed().as_secs_f64();
            comm.updates += 1;
            let (clip, grad_norm) = clip_factor(&params, &grads, t.max_grad_norm)?;
            opt.step(&params, &grads, lr, clip)?;
            progress.global_step += 1;
            progress.batch_in_epoch += 1;
            progress.epoch_loss_sum += loss_value;
            examples_since += idx.len();
            let secs = clock.elapsed().as_secs_f64();
            reporter.step(progress.global_step, epoch, loss_value, examples_since as f64 / secs.max(1e-9));
            if progress.global_step % opts.log_every.max(1) == 0 {
                write_log(&Record::Step(StepRecord {
                    step: progress.global_step,
                    epoch: epoch + 1,
                    loss: loss_value,
                    lr,
                    grad_norm,
                    examples_per_sec: examples_since as f64 / secs.max(1e-9),
                }))?;
            }
            if opts.checkpoint_every > 0 && progress.global_step % opts.checkpoint_every == 0 {
                progress.train_seconds += clock.elapsed().as_secs_f64();
                clock = Instant::now();
                examples_since = 0;
                save_checkpoint(&opt, &progress)?;
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
            Some(d) if root => Some(model.metrics(d, eval_batch, pad, dev_cache)?),
            _ => None,
        };
        let score = dev.map_or(-mean_loss, |d| d.score());
        let best = progress.best_dev_accuracy.is_none_or(|b| score > b);
        if best && root {
            progress.best_dev_accuracy = Some(score);
            progress.best_epoch = Some(epoch);
            adapter::save(&opts.run_dir, &manifest, &interventions, head.as_ref())?;
        }
        let record = Record::Epoch(EpochRecord {
            step: progress.global_step,
            epoch: epoch + 1,
            train_loss: mean_loss,
            dev,
            best,
            train_seconds: progress.train_seconds,
        });
        write_log(&record)?;
        progress.history.push(serde_json::to_value(&record).map_err(|e| Error::Other(e.to_string()))?);
        if let Some(d) = &dev {
            reporter.epoch(epoch, d, best);
        }
        // Rank 0 alone has the dev score: it decides, and every rank follows.
        if let Some(rule) = opts.early_stop.filter(|r| r.after_epoch == epoch + 1 && progress.global_step < total) {
            let mut worse = [if root && score < rule.below { 1.0 } else { 0.0 }];
            if !world.is_single_process() {
                world.all_reduce_sum_f64(&mut worse)?;
            }
            if worse[0] > 0.0 {
                progress.stopped_after_epoch = Some(epoch + 1);
                reporter.message(&format!(
                    "stopped early after epoch {}: dev score {score:.4} is below {:.4} (the sweep's median rule); the best epoch so far is kept",
                    epoch + 1,
                    rule.below
                ));
            }
        }
        progress.epoch += 1;
        progress.batch_in_epoch = 0;
        progress.epoch_loss_sum = 0.0;
        save_checkpoint(&opt, &progress)?;
        if progress.global_step >= total || progress.stopped_after_epoch.is_some() {
            break;
        }
    }
    reporter.end();
    if ranks > 1 && comm.updates > 0 {
        reporter.message(&comm.describe(ranks));
    }
    let seconds_per_epoch = progress.train_seconds / (progress.epoch.max(1)) as f64;
    if !root {
        // Rank 0 evaluates and writes; the others' part ends with the last update.
        return Ok(TrainSummary {
            run_dir: opts.run_dir.clone(),
            best_epoch: 0,
            dev: None,
            test: None,
            transfer: Default::default(),
            trainable_parameters: trainable,
            steps: progress.global_step,
            seconds_per_epoch,
            dev_by_epoch: vec![],
            stopped_after_epoch: progress.stopped_after_epoch,
        });
    }

    // Test with the best weights, read back from disk (the same path a resumed run takes).
    let file = model::safetensors_file::WeightFile::load(&opts.run_dir.join(adapter::WEIGHTS_FILE), dtype, &device)?;
    for (name, v) in adapter::named_tensors(&interventions, head.as_ref()) {
        v.var.set(&file.get(&name, v.var.dims())?)?;
    }
    let dev = match &dev_set {
        Some(d) => Some(model.metrics(d, eval_batch, pad, dev_cache)?),
        None => None,
    };
    let test = match &test_set {
        Some(d) => Some(model.metrics(d, eval_batch, pad, test_cache)?),
        None => None,
    };
    // Other domains, without the prefix cache (each is evaluated once).
    let mut transfer = std::collections::BTreeMap::new();
    for (name, set) in &transfer_sets {
        transfer.insert(name.clone(), model.metrics(set, eval_batch, pad, None)?);
    }
    let best_epoch = progress.best_epoch.unwrap_or(0);
    let summary = TrainSummary {
        run_dir: opts.run_dir.clone(),
        best_epoch: best_epoch + 1,
        dev,
        test,
        transfer,
        trainable_parameters: trainable,
        steps: progress.global_step,
        seconds_per_epoch,
        dev_by_epoch: dev_scores(&progress.history),
        stopped_after_epoch: progress.stopped_after_epoch,
    };
    write_log(&Record::Final(FinalRecord { step: progress.global_step, summary: summary.clone() }))?;
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

