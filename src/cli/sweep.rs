//! `reft sweep SWEEP.yaml`: train a recipe under a grid or random search of overrides and
//! seeds (reft_core::sweep), one trial after another; run it again to resume.

use super::progress::BarReporter;
use reft_core::sweep::{self, Sweep, SweepReporter, Trial, TrialRecord};
use reft_core::train::Reporter;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The sweep file: `recipe:`, `seeds:`, `set:`, and `grid:` or `random:` (docs/sweeps.md).
    pub sweep: PathBuf,
    /// Sweep folder: a run folder per trial, sweep.jsonl, summary.md (default:
    /// out/sweeps/<sweep file name>). Running the same sweep into it again resumes.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// List the trials and their overrides, train nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Trials to train at once, each a `reft train` process with its share of the worker
    /// threads (its output in train.log in its run folder). Default 1: one after another,
    /// each with every thread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
}

struct Progress {
    bar: BarReporter,
}

impl SweepReporter for Progress {
    fn trial_start(&mut self, index: usize, total: usize, trial: &Trial, description: &str, resumed: bool) {
        let again = if resumed { " (resuming from its checkpoint)" } else { "" };
        eprintln!("[{}/{total}] {}  {description}{again}", index + 1, trial.name());
    }
    fn trial_end(&mut self, r: &TrialRecord) {
        let pct = |x: f64| format!("{:.2}%", 100.0 * x);
        let show = |x: f64| if r.dev_metrics.as_ref().is_some_and(|m| sweep::record::score(m).1 == sweep::Direction::Lower) { format!("loss {x:.4}") } else { pct(x) };
        let stopped = r.stopped_after_epoch.map_or(String::new(), |e| format!(" (stopped after epoch {e} by the median rule)"));
        eprintln!("      {}: dev {}, test {}, {:.0} s{stopped}", r.trial, show(r.dev), r.test.map_or("—".into(), show), r.seconds);
    }
    fn trainer(&mut self) -> &mut dyn Reporter {
        &mut self.bar
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    super::train::refuse_under_launcher("reft sweep", "one `reft sweep` process (`--jobs N` runs trials side by side)")?;
    let sweep = Sweep::load(&args.sweep)?;
    let dir = args.out.clone().unwrap_or_else(|| {
        let stem = args.sweep.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sweep".into());
        PathBuf::from("out/sweeps").join(stem)
    });
    let trials = sweep::trials(&sweep);
    let done = sweep::record::read(&dir)?;
    println!(
        "sweep        {} configuration(s) x {} seed(s) = {} trials of {} ({} already done in {})",
        sweep.configs.len(),
        sweep.seeds.len(),
        trials.len(),
        sweep.recipes_display(),
        done.len(),
        dir.display()
    );
    if args.dry_run {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for t in &trials {
            let state = if done.iter().any(|r| r.config == t.config && r.seed == t.seed) { "done" } else { "to run" };
            // A closed stdout (`| head`) ends the listing quietly.
            if writeln!(out, "  {}  {:<7} {}", t.name(), state, sweep.overrides(t.config, t.seed).join(" ")).is_err() {
                break;
            }
        }
        return Ok(());
    }
    let records = if args.jobs > 1 {
        let mut progress = Progress { bar: BarReporter::new() };
        super::sweep_jobs::run(&sweep, &dir, args.jobs as usize, |r| progress.trial_end(r))?
    } else {
        let mut progress = Progress { bar: BarReporter::new() };
        sweep::run(&sweep, &dir, &mut progress)?
    };
    let summary = std::fs::read_to_string(dir.join(sweep::SUMMARY_FILE))?;
    println!("{summary}");
    println!("records      {} ({} trials)", dir.join(sweep::RECORDS_FILE).display(), records.len());
    Ok(())
}
