//! `reft sweep --jobs N`: N trials at once, each a `reft train` child process given its share
//! of the worker threads (`RAYON_NUM_THREADS`). Processes rather than threads because the
//! thread count of candle's kernels is process-wide. Only this process writes `sweep.jsonl`
//! and `summary.md`; each child writes its own run folder and its output to `train.log` there.

use anyhow::Context;
use reft_core::sweep::{self, Sweep, Trial, TrialRecord};
use reft_core::train::TrainSummary;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The log a child's stdout and stderr go to, in its run folder.
pub const TRIAL_LOG: &str = "train.log";

struct Running {
    index: usize,
    trial: Trial,
    run_dir: PathBuf,
    child: Child,
    started: Instant,
}

/// Worker threads per trial: this process's count (`RAYON_NUM_THREADS`, which reft fixes at
/// start-up) split evenly, at least one.
pub fn threads_per_trial(jobs: usize) -> usize {
    let total = std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0);
    let total = total.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    (total / jobs.max(1)).max(1)
}

/// Run the pending trials of `sweep`, `jobs` at a time; `end` is told of each finished one.
pub fn run(sweep: &Sweep, dir: &Path, jobs: usize, mut end: impl FnMut(&TrialRecord)) -> anyhow::Result<Vec<TrialRecord>> {
    let mut records = sweep::open(sweep, dir)?;
    let total = sweep::trials(sweep).len();
    let threads = threads_per_trial(jobs);
    let exe = std::env::current_exe().context("finding the reft executable to start trials with")?;
    let mut queue = sweep::pending(sweep, &records).into_iter();
    let mut running: Vec<Running> = Vec::new();
    let mut failed: Option<String> = None;
    loop {
        // Start trials until `jobs` run (none after a failure: the running ones finish).
        while running.len() < jobs && failed.is_none() {
            let Some((index, trial)) = queue.next() else { break };
            let (run_dir, resumed) = sweep::run_dir(dir, &trial);
            std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
            let log = std::fs::File::create(run_dir.join(TRIAL_LOG)).with_context(|| format!("creating {}", run_dir.join(TRIAL_LOG).display()))?;
            let mut cmd = Command::new(&exe);
            cmd.arg("train").arg(sweep.recipe(trial.config)).arg("--out").arg(&run_dir).arg("--json");
            for o in sweep.overrides(trial.config, trial.seed) {
                cmd.arg("--set").arg(o);
            }
            if resumed {
                cmd.arg("--resume");
            }
            cmd.arg("--prefix-cache-dir").arg(sweep::prefix_cache_dir(dir));
            // The median rule from the trials finished when this one starts (running ones
            // have no score yet).
            if let Some(rule) = sweep::early_stop(sweep, &records) {
                cmd.arg("--stop-below").arg(format!("{}:{}", rule.after_epoch, rule.below));
            }
            cmd.env("RAYON_NUM_THREADS", threads.to_string()).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
            let child = cmd.spawn().with_context(|| format!("starting {}", exe.display()))?;
            let again = if resumed { " (resuming from its checkpoint)" } else { "" };
            eprintln!("[{}/{total}] {}  {}{again}  ({threads} thread(s), log {})", index + 1, trial.name(), sweep.describe(trial.config), run_dir.join(TRIAL_LOG).display());
            running.push(Running { index, trial, run_dir, child, started: Instant::now() });
        }
        if running.is_empty() {
            break;
        }
        let mut still = Vec::new();
        for mut r in running.drain(..) {
            match r.child.try_wait()? {
                None => still.push(r),
                Some(status) if status.success() => {
                    let path = r.run_dir.join("summary.json");
                    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    let summary: TrainSummary = serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
                    let rec = sweep::record_of(sweep, &r.trial, summary, r.started.elapsed().as_secs_f64())?;
                    end(&rec);
                    sweep::finish(sweep, dir, &mut records, rec)?;
                }
                Some(status) => {
                    let log = r.run_dir.join(TRIAL_LOG);
                    let tail = last_lines(&log, 5);
                    eprintln!("[{}/{total}] {} failed ({status}); its log: {}\n{tail}", r.index + 1, r.trial.name(), log.display());
                    failed.get_or_insert(format!("trial {} failed ({status}); see {}", r.trial.name(), log.display()));
                }
            }
        }
        running = still;
        std::thread::sleep(Duration::from_millis(200));
    }
    sweep::write_summary(sweep, dir, &records, total)?;
    if let Some(f) = failed {
        anyhow::bail!("{f}; the trials that finished are recorded, and running the sweep again continues it");
    }
    Ok(sweep::in_trial_order(sweep, records))
}

/// The last `n` lines of a log, indented (an `error:` line is what a failed trial ends with).
fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("      {l}")).collect::<Vec<_>>().join("\n")
}
