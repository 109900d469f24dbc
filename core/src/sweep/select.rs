//! Choosing the best configuration: by the mean dev metric over its seeds, never by test;
//! and `summary.md`, every configuration sorted by that mean.

use super::record::{Direction, TrialRecord};
use super::spec::Sweep;

/// A configuration's trials, summarised.
#[derive(Debug, Clone)]
pub struct ConfigResult {
    pub config: usize,
    pub seeds: usize,
    pub dev_mean: f64,
    pub dev_sd: f64,
    pub test_mean: Option<f64>,
    pub test_sd: Option<f64>,
    /// Mean and sd on each transfer set every seed was evaluated on.
    pub transfer: std::collections::BTreeMap<String, (f64, f64)>,
    pub trainable_parameters: usize,
    /// How many of its trials the median rule stopped early.
    pub stopped: usize,
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = if xs.len() > 1 { (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (mean, sd)
}

/// Every configuration with at least one finished trial, best first by mean dev.
pub fn rank(records: &[TrialRecord], direction: Direction) -> Vec<ConfigResult> {
    let mut configs: Vec<usize> = records.iter().map(|r| r.config).collect();
    configs.sort();
    configs.dedup();
    let mut out: Vec<ConfigResult> = configs
        .into_iter()
        .map(|c| {
            let mine: Vec<&TrialRecord> = records.iter().filter(|r| r.config == c).collect();
            let dev: Vec<f64> = mine.iter().map(|r| r.dev).collect();
            let test: Vec<f64> = mine.iter().filter_map(|r| r.test).collect();
            let (dev_mean, dev_sd) = mean_sd(&dev);
            let (test_mean, test_sd) = if test.len() == mine.len() {
                let (m, s) = mean_sd(&test);
                (Some(m), Some(s))
            } else {
                (None, None)
            };
            let mut transfer = std::collections::BTreeMap::new();
            for name in mine.iter().flat_map(|r| r.transfer.keys()) {
                let xs: Vec<f64> = mine.iter().filter_map(|r| r.transfer.get(name).copied()).collect();
                if xs.len() == mine.len() {
                    transfer.insert(name.clone(), mean_sd(&xs));
                }
            }
            let stopped = mine.iter().filter(|r| r.stopped_after_epoch.is_some()).count();
            ConfigResult { config: c, seeds: mine.len(), dev_mean, dev_sd, test_mean, test_sd, transfer, trainable_parameters: mine[0].trainable_parameters, stopped }
        })
        .collect();
    out.sort_by(|a, b| {
        let order = a.dev_mean.partial_cmp(&b.dev_mean).unwrap_or(std::cmp::Ordering::Equal);
        match direction {
            Direction::Higher => order.reverse(),
            Direction::Lower => order,
        }
        .then(a.config.cmp(&b.config))
    });
    out
}

/// `summary.md`: the best configuration, then the table.
pub fn summary_markdown(sweep: &Sweep, ranked: &[ConfigResult], direction: Direction, total_trials: usize, done: usize) -> String {
    let (metric, scale) = match direction {
        Direction::Higher => ("accuracy (%)", 100.0),
        Direction::Lower => ("response loss", 1.0),
    };
    let pm = |m: f64, s: f64| format!("{:.2} ± {:.2}", scale * m, scale * s);
    let transfer: std::collections::BTreeSet<&String> = ranked.iter().flat_map(|r| r.transfer.keys()).collect();
    let also = if transfer.is_empty() { " is" } else { " and transfer are" };
    let mut out = format!(
        "# Sweep `{}`\n\nBase recipe `{}`; {done} of {total_trials} trials done; seeds {:?}. Selected by mean dev {metric} over the seeds; test{also} reported, never used to select.\n\n",
        sweep.path.display(),
        sweep.recipes_display(),
        sweep.seeds
    );
    if let Some(rule) = sweep.early_stop {
        let stopped: usize = ranked.iter().map(|r| r.stopped).sum();
        out.push_str(&format!(
            "Early stopping: the median rule after epoch {} (once {} trials have reached it); {stopped} trial{} stopped there, each keeping its best epoch so far (marked \"stopped\" below).\n\n",
            rule.after_epoch,
            rule.min_trials,
            if stopped == 1 { "" } else { "s" }
        ));
    }
    if let Some(best) = ranked.first() {
        out.push_str(&format!(
            "**Best**: {} — dev {}, test {} ({} seed{}, {} trainable parameters)\n\n",
            sweep.describe(best.config),
            pm(best.dev_mean, best.dev_sd),
            best.test_mean.zip(best.test_sd).map_or("—".into(), |(m, s)| pm(m, s)),
            best.seeds,
            if best.seeds == 1 { "" } else { "s" },
            best.trainable_parameters
        ));
    }
    let extra_head: String = transfer.iter().map(|t| format!(" {t} |")).collect();
    let extra_rule: String = transfer.iter().map(|_| "---|").collect();
    out.push_str(&format!("| rank | configuration | trainable | seeds | dev {metric} | test {metric} |{extra_head}\n|---|---|---|---|---|---|{extra_rule}\n"));
    for (i, r) in ranked.iter().enumerate() {
        let extra: String = transfer.iter().map(|t| format!(" {} |", r.transfer.get(*t).map_or("—".into(), |(m, s)| pm(*m, *s)))).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |{extra}\n",
            i + 1,
            sweep.describe(r.config),
            r.trainable_parameters,
            if r.stopped > 0 { format!("{} ({} stopped)", r.seeds, r.stopped) } else { r.seeds.to_string() },
            pm(r.dev_mean, r.dev_sd),
            r.test_mean.zip(r.test_sd).map_or("—".into(), |(m, s)| pm(m, s))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(config: usize, seed: u64, dev: f64, test: f64) -> TrialRecord {
        TrialRecord {
            trial: format!("c{config:03}-s{seed}"),
            config,
            seed,
            overrides: vec![],
            recipe: None,
            transfer: Default::default(),
            dev,
            test: Some(test),
            trainable_parameters: 10,
            seconds: 1.0,
            dev_metrics: None,
            test_metrics: None,
            dev_by_epoch: vec![],
            stopped_after_epoch: None,
        }
    }

    #[test]
    fn the_best_is_chosen_by_mean_dev_even_when_test_says_otherwise() {
        // Configuration 1 has the best single dev run and the best test, but the lower mean dev.
        let records = vec![rec(0, 1, 0.80, 0.70), rec(0, 2, 0.82, 0.71), rec(1, 1, 0.90, 0.95), rec(1, 2, 0.70, 0.94)];
        let ranked = rank(&records, Direction::Higher);
        assert_eq!(ranked[0].config, 0);
        assert!((ranked[0].dev_mean - 0.81).abs() < 1e-12);
        assert!((ranked[0].dev_sd - (0.0002f64).sqrt()).abs() < 1e-12);
        // A loss is better low.
        let ranked = rank(&records, Direction::Lower);
        assert_eq!(ranked[0].config, 1);
    }

    #[test]
    fn one_seed_has_no_spread() {
        assert_eq!(mean_sd(&[0.5]), (0.5, 0.0));
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0]);
        assert_eq!((m, s), (2.0, 1.0));
    }
}
