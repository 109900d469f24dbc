//! Sweeps (`reft sweep SWEEP.yaml`): train a base recipe under many overrides and seeds, one
//! trial after another, each in its own run folder under the sweep folder; select by dev.
//!
//! - [`spec`]: the sweep file, its grid or random search, checked against the recipe up front;
//! - [`record`]: `sweep.jsonl`, a line per finished trial (what resuming reads);
//! - [`select`]: the ranking by mean dev over seeds, and `summary.md`.
//!
//! A killed sweep resumes where it stopped: recorded trials are skipped, and the trial that
//! was running continues from its checkpoint (`reft train --resume`'s path).

pub mod record;
pub mod select;
pub mod spec;

pub use record::{Direction, TrialRecord, RECORDS_FILE};
pub use select::{rank, summary_markdown, ConfigResult};
pub use spec::{EarlyStopRule, Sweep};

use crate::error::{Error, Result};
use crate::recipe::{LoadedRecipe, Plan};
use crate::train::{self, EarlyStop, Reporter, TrainOptions};
use std::path::{Path, PathBuf};

pub const SUMMARY_FILE: &str = "summary.md";
/// The sweep file as it was when the folder was started: resuming with another is refused.
pub const SWEEP_COPY_FILE: &str = "sweep.yaml";

/// One trial to run: configuration `config` with `train.seed = seed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    pub config: usize,
    pub seed: u64,
}

impl Trial {
    pub fn name(&self) -> String {
        format!("c{:03}-s{}", self.config, self.seed)
    }
}

/// What the caller sees as the sweep goes.
pub trait SweepReporter {
    /// Trial `index` of `total` (counting the skipped ones) is about to train.
    fn trial_start(&mut self, index: usize, total: usize, trial: &Trial, description: &str, resumed: bool);
    fn trial_end(&mut self, record: &TrialRecord);
    /// The trainer's own reporter for the running trial.
    fn trainer(&mut self) -> &mut dyn Reporter;
}

/// Every trial in order: configurations in order, each over the seeds.
pub fn trials(sweep: &Sweep) -> Vec<Trial> {
    (0..sweep.configs.len()).flat_map(|config| sweep.seeds.iter().map(move |&seed| Trial { config, seed })).collect()
}

/// Open (or reopen) the sweep folder: keep a copy of the sweep file, refuse a folder started
/// from another, and return the records of the trials already finished there.
pub fn open(sweep: &Sweep, dir: &Path) -> Result<Vec<TrialRecord>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let copy = dir.join(SWEEP_COPY_FILE);
    let text = std::fs::read_to_string(&sweep.path).map_err(|e| Error::io(&sweep.path, e))?;
    match std::fs::read_to_string(&copy) {
        Ok(old) if old != text => {
            return Err(Error::Other(format!(
                "{} was started from another sweep file (its copy is {}); give another --out, or delete that folder to start again",
                dir.display(),
                copy.display()
            )))
        }
        Ok(_) => {}
        Err(_) => crate::io::write_atomic(&copy, text.as_bytes())?,
    }
    record::read(dir)
}

/// The trials not yet recorded, with their index among all trials.
pub fn pending(sweep: &Sweep, records: &[TrialRecord]) -> Vec<(usize, Trial)> {
    trials(sweep).into_iter().enumerate().filter(|(_, t)| !records.iter().any(|r| r.config == t.config && r.seed == t.seed)).collect()
}

/// The run folder of `trial`, and whether it holds a checkpoint to continue from.
pub fn run_dir(dir: &Path, trial: &Trial) -> (PathBuf, bool) {
    let run_dir = dir.join(trial.name());
    let resumed = run_dir.join(crate::train::checkpoint::CHECKPOINT_DIR).exists();
    (run_dir, resumed)
}

/// The record of a finished trial, from its training summary.
pub fn record_of(sweep: &Sweep, trial: &Trial, summary: crate::train::TrainSummary, seconds: f64) -> Result<TrialRecord> {
    let recipe = sweep.recipe(trial.config);
    let Some(dev) = summary.dev else {
        return Err(Error::Other(format!("{}: the recipe has no `data.eval`; a sweep selects by dev, so it needs one", recipe.display())));
    };
    Ok(TrialRecord {
        trial: trial.name(),
        config: trial.config,
        seed: trial.seed,
        overrides: sweep.config_overrides(trial.config),
        recipe: (sweep.recipes.len() > 1).then(|| recipe.display().to_string()),
        dev: record::score(&dev).0,
        test: summary.test.as_ref().map(|t| record::score(t).0),
        transfer: summary.transfer.iter().map(|(k, m)| (k.clone(), record::score(m).0)).collect(),
        trainable_parameters: summary.trainable_parameters,
        seconds,
        dev_metrics: Some(dev),
        test_metrics: summary.test,
        dev_by_epoch: summary.dev_by_epoch,
        stopped_after_epoch: summary.stopped_after_epoch,
    })
}

/// The median rule for the next trial, from the trials recorded so far: stop after
/// `after_epoch` below the median of their scores there. None without `early_stop`, or while
/// fewer than `min_trials` trials have reached that epoch.
pub fn early_stop(sweep: &Sweep, records: &[TrialRecord]) -> Option<EarlyStop> {
    let rule = sweep.early_stop?;
    let mut scores: Vec<f64> = records.iter().filter_map(|r| r.dev_by_epoch.get(rule.after_epoch - 1).copied()).collect();
    if scores.len() < rule.min_trials {
        return None;
    }
    scores.sort_by(|a, b| a.total_cmp(b));
    let n = scores.len();
    let median = if n % 2 == 1 { scores[n / 2] } else { (scores[n / 2 - 1] + scores[n / 2]) / 2.0 };
    Some(EarlyStop { after_epoch: rule.after_epoch, below: median })
}

/// Append a finished trial to `sweep.jsonl` and rewrite `summary.md`.
pub fn finish(sweep: &Sweep, dir: &Path, records: &mut Vec<TrialRecord>, rec: TrialRecord) -> Result<()> {
    record::append(dir, &rec)?;
    records.push(rec);
    write_summary(sweep, dir, records, trials(sweep).len())?;
    Ok(())
}

/// Run (or resume) `sweep` into `dir`, one trial after another in this process; returns
/// every record, in trial order.
pub fn run(sweep: &Sweep, dir: &Path, reporter: &mut dyn SweepReporter) -> Result<Vec<TrialRecord>> {
    let mut records = open(sweep, dir)?;
    let total = trials(sweep).len();
    for (i, trial) in pending(sweep, &records) {
        let (run_dir, resumed) = run_dir(dir, &trial);
        reporter.trial_start(i, total, &trial, &sweep.describe(trial.config), resumed);
        let overrides = sweep.overrides(trial.config, trial.seed);
        let recipe = sweep.recipe(trial.config);
        let base = std::fs::read_to_string(recipe).map_err(|e| Error::io(recipe, e))?;
        let plan = Plan::new(LoadedRecipe::parse_with_overrides(recipe, &base, &overrides)?)?;
        let start = std::time::Instant::now();
        let summary = train::train(
            &plan,
            TrainOptions {
                run_dir,
                resume: resumed,
                checkpoint_every: 50,
                log_every: 10,
                cache_prefix: true,
                prefix_cache_dir: Some(prefix_cache_dir(dir)),
                reporter: reporter.trainer(),
                collective: &crate::dist::SingleProcess,
                early_stop: early_stop(sweep, &records),
            },
        )?;
        let rec = record_of(sweep, &trial, summary, start.elapsed().as_secs_f64())?;
        reporter.trial_end(&rec);
        finish(sweep, dir, &mut records, rec)?;
    }
    write_summary(sweep, dir, &records, total)?;
    Ok(in_trial_order(sweep, records))
}

/// Where a sweep keeps its frozen-prefix caches: trials that share a model, a lowest
/// intervened layer and data build each once.
pub fn prefix_cache_dir(dir: &Path) -> PathBuf {
    dir.join("prefix-cache")
}

/// `records` sorted as the trials are listed.
pub fn in_trial_order(sweep: &Sweep, mut records: Vec<TrialRecord>) -> Vec<TrialRecord> {
    let all = trials(sweep);
    records.sort_by_key(|r| all.iter().position(|t| t.config == r.config && t.seed == r.seed));
    records
}

/// The direction of the records' metric (accuracy unless they hold losses).
pub fn direction(records: &[TrialRecord]) -> Direction {
    records.iter().find_map(|r| r.dev_metrics.as_ref()).map_or(Direction::Higher, |m| record::score(m).1)
}

pub fn write_summary(sweep: &Sweep, dir: &Path, records: &[TrialRecord], total: usize) -> Result<PathBuf> {
    let d = direction(records);
    let md = summary_markdown(sweep, &rank(records, d), d, total, records.len());
    let path = dir.join(SUMMARY_FILE);
    crate::io::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dev_by_epoch: Vec<f64>) -> TrialRecord {
        TrialRecord {
            trial: "c000-s1".into(),
            config: 0,
            seed: 1,
            overrides: vec![],
            recipe: None,
            dev: 0.0,
            test: None,
            transfer: Default::default(),
            trainable_parameters: 1,
            seconds: 1.0,
            dev_metrics: None,
            test_metrics: None,
            dev_by_epoch,
            stopped_after_epoch: None,
        }
    }

    #[test]
    fn the_median_rule_waits_for_enough_trials_and_takes_their_median_at_its_epoch() {
        let mut sweep = Sweep {
            path: PathBuf::from("s.yaml"),
            recipes: vec![PathBuf::from("r.yaml")],
            seeds: vec![1],
            set: Default::default(),
            configs: vec![Default::default()],
            config_recipe: vec![0],
            early_stop: None,
        };
        let recs = vec![record(vec![0.5, 0.875]), record(vec![0.75, 0.625]), record(vec![0.625]), record(vec![0.875, 0.75])];
        assert_eq!(early_stop(&sweep, &recs), None, "no rule in the sweep file");
        sweep.early_stop = Some(EarlyStopRule { after_epoch: 2, min_trials: 4 });
        // Three trials reached epoch 2 (one was stopped after epoch 1): not yet four.
        assert_eq!(early_stop(&sweep, &recs), None);
        sweep.early_stop = Some(EarlyStopRule { after_epoch: 2, min_trials: 3 });
        assert_eq!(early_stop(&sweep, &recs), Some(EarlyStop { after_epoch: 2, below: 0.75 }));
        sweep.early_stop = Some(EarlyStopRule { after_epoch: 1, min_trials: 3 });
        // An even count: the mean of the middle two.
        assert_eq!(early_stop(&sweep, &recs), Some(EarlyStop { after_epoch: 1, below: 0.6875 }));
    }
}
