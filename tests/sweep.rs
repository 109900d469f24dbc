//! `reft sweep` on the tiny test model: a grid over two keys and two seeds, the ranking by
//! mean dev (recomputed here from sweep.jsonl), resume after a kill (finished trials are not
//! trained again), errors that name the sweep file's line and column, and the median rule
//! that stops hopeless trials early.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A tiny model, data and recipe in `dir`; returns the recipe path.
fn tiny_recipe(dir: &Path, epochs: usize) -> PathBuf {
    std::fs::create_dir_all(dir.join("model")).unwrap();
    common::tiny_model::write(&dir.join("model"));
    let words = ["good", "bad", "film", "movie", "great", "awful", "the", "cat", "sat", "hello", "world", "fine"];
    let mut rows = String::from("text\tlabel\n");
    for i in 0..96 {
        let text: Vec<&str> = (0..6).map(|k| words[(i * 7 + k * 5) % words.len()]).collect();
        rows.push_str(&format!("{}\t{}\n", text.join(" "), i % 2));
    }
    std::fs::write(dir.join("train.tsv"), &rows).unwrap();
    std::fs::write(dir.join("dev.tsv"), &rows).unwrap();
    let recipe = dir.join("recipe.yaml");
    std::fs::write(
        &recipe,
        format!(
            "model: {{ path: model }}\ntask: {{ kind: classification, num_labels: 2 }}\n\
data: {{ train: train.tsv, eval: dev.tsv, test: dev.tsv, max_length: 16 }}\n\
interventions:\n  - {{ kind: loreft, hooks: \"layers[1].block_output\", positions: f1, rank: 1 }}\n\
train: {{ epochs: {epochs}, batch_size: 4, lr: 0.01 }}\n"
        ),
    )
    .unwrap();
    recipe
}

const GRID: &str = "recipe: recipe.yaml\nseeds: [1, 2]\nset:\n  train.batch_size: 8\ngrid:\n  train.lr: [0.001, 0.05]\n  interventions[0].rank: [1, 2]\n";

fn records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("sweep.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_grid_trains_every_trial_and_selects_by_mean_dev() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_recipe(tmp.path(), 1);
    let sweep = tmp.path().join("sweep.yaml");
    std::fs::write(&sweep, GRID).unwrap();
    let out = tmp.path().join("out");
    let (ok, stdout, err) = run_reft(&["sweep", sweep.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let recs = records(&out);
    assert_eq!(recs.len(), 8, "{recs:?}");
    let names: std::collections::BTreeSet<&str> = recs.iter().map(|r| r["trial"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 8);
    for r in &recs {
        let run = out.join(r["trial"].as_str().unwrap());
        assert!(run.join("summary.json").is_file(), "{} has no summary.json", run.display());
        // The trial trained what its record says.
        let trained: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        assert_eq!(trained["trainable_parameters"], r["trainable_parameters"]);
    }
    // rank 2 has more parameters than rank 1.
    let params = |rank: &str| recs.iter().find(|r| r["overrides"].as_array().unwrap().iter().any(|o| o == &serde_json::json!(format!("interventions[0].rank={rank}")))).unwrap()["trainable_parameters"].as_u64().unwrap();
    assert!(params("2") > params("1"));

    // The best configuration is the one with the highest mean dev accuracy over its seeds.
    let mut by_config: std::collections::BTreeMap<u64, Vec<f64>> = Default::default();
    for r in &recs {
        by_config.entry(r["config"].as_u64().unwrap()).or_default().push(r["dev"].as_f64().unwrap());
    }
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let best = by_config.iter().max_by(|a, b| mean(a.1).partial_cmp(&mean(b.1)).unwrap().then(b.0.cmp(a.0))).unwrap();
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    let best_line = summary.lines().find(|l| l.starts_with("**Best**")).expect(&summary);
    let best_record = recs.iter().find(|r| r["config"].as_u64() == Some(*best.0)).unwrap();
    for o in best_record["overrides"].as_array().unwrap() {
        assert!(best_line.contains(o.as_str().unwrap()), "{best_line} should name {o}");
    }
    assert!(best_line.contains(&format!("dev {:.2}", 100.0 * mean(best.1))), "{best_line}");
    assert!(stdout.contains("8 trials"), "{stdout}");
    // The trials share the model, layer and data (train, dev and test are the same rows): one
    // frozen-prefix cache on disk, built by the first trial and read by the others. The last
    // trial, trained again with no cache at all, scores what its record says.
    let caches: Vec<_> = std::fs::read_dir(out.join("prefix-cache")).unwrap().flatten().collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    let last = recs.last().unwrap();
    let recipe = tmp.path().join("recipe.yaml");
    let mut args = vec!["train".to_string(), recipe.to_str().unwrap().to_string(), "--no-cache".into(), "--json".into()];
    args.extend(["--out".into(), tmp.path().join("again").to_str().unwrap().to_string()]);
    let seed = format!("train.seed={}", last["seed"]);
    for o in last["overrides"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).chain(["train.batch_size=8", seed.as_str()]) {
        args.extend(["--set".into(), o.to_string()]);
    }
    let (ok, printed, err) = run_reft(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    let again: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(again["dev"]["accuracy"], last["dev"], "{printed}");
    // `reft plot` on the sweep folder: a panel per swept key and the frontier.
    let (ok, printed, err) = run_reft(&["plot", out.to_str().unwrap(), "--width", "800", "--height", "600"]);
    assert!(ok && printed.contains("8 trials, 2 swept keys"), "{printed}{err}");
    let png = image::open(out.join("sweep.png")).unwrap();
    assert_eq!((png.width(), png.height()), (800, 600));
    // Running it again trains nothing.
    let (ok, _, err) = run_reft(&["sweep", sweep.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok && !err.contains("[1/8]"), "{err}");
    assert_eq!(records(&out).len(), 8);
}

#[test]
fn a_killed_sweep_resumes_without_training_finished_trials_again() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_recipe(tmp.path(), 6);
    let sweep = tmp.path().join("sweep.yaml");
    std::fs::write(&sweep, GRID).unwrap();
    let out = tmp.path().join("out");
    let mut child = std::process::Command::new(reft_bin())
        .args(["sweep", sweep.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while records(&out).len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(300), "no trial finished in 5 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = records(&out);
    assert!(before.len() < 8, "every trial finished before the kill");
    let (ok, _, err) = run_reft(&["sweep", sweep.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let after = records(&out);
    assert_eq!(after.len(), 8, "{after:?}");
    // The records of the first run are kept as they were, and those trials did not run again.
    assert_eq!(&after[..before.len()], &before[..]);
    for r in &before {
        let name = r["trial"].as_str().unwrap();
        assert!(!err.contains(&format!("] {name} ")), "{name} trained again:\n{err}");
    }
    let names: std::collections::BTreeSet<&str> = after.iter().map(|r| r["trial"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 8);
}

fn sweep_fails(text: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    tiny_recipe(tmp.path(), 1);
    let sweep = tmp.path().join("sweep.yaml");
    std::fs::write(&sweep, text).unwrap();
    let (ok, _, err) = run_reft(&["sweep", sweep.to_str().unwrap(), "--out", tmp.path().join("out").to_str().unwrap(), "--dry-run"]);
    assert!(!ok, "accepted:\n{text}");
    assert!(!tmp.path().join("out").exists(), "a refused sweep wrote its folder");
    err
}

#[test]
fn sweep_errors_name_the_line_and_column() {
    let err = sweep_fails("recipe: recipe.yaml\ngrid:\n  train.lr: [0.01]\n  interventions[0].rnak: [2, 4]\n");
    assert!(err.contains("sweep.yaml:4:3") && err.contains("interventions[0].rnak") && err.contains("rnak"), "{err}");
    let err = sweep_fails("recipe: recipe.yaml\ngrdi:\n  train.lr: [0.01]\n");
    assert!(err.contains("sweep.yaml:2:1") && err.contains("unknown field `grdi`"), "{err}");
    let err = sweep_fails("recipe: recipe.yaml\ngrid:\n  train.seed: [1, 2]\n");
    assert!(err.contains("sweep.yaml:3:3") && err.contains("`seeds:`"), "{err}");
    let err = sweep_fails("recipe: recipe.yaml\ngrid: { train.lr: [0.1] }\nrandom: { trials: 2, params: { train.lr: { log_uniform: [0.001, 0.01] } } }\n");
    assert!(err.contains("not both"), "{err}");
    let err = sweep_fails("recipe: recipe.yaml\nrandom:\n  trials: 3\n  params:\n    train.lr: { log_uniform: [0.01, 0.001] }\n");
    assert!(err.contains("sweep.yaml:5:5") && err.contains("0 < lo < hi"), "{err}");
    let err = sweep_fails("recipe: nowhere.yaml\n");
    assert!(err.contains("sweep.yaml:1:1") && err.contains("no recipe at"), "{err}");
    let err = sweep_fails("recipe: recipe.yaml\ngrid:\n  train.lr: [0.01, -1]\n");
    assert!(err.contains("sweep.yaml:3:3") && err.contains("train.lr"), "{err}");
    let err = sweep_fails("recipe: recipe.yaml\nearly_stop:\n  after_epoch: 0\n");
    assert!(err.contains("sweep.yaml:3:3") && err.contains("counts from 1"), "{err}");
    let err = sweep_fails("recipe: recipe.yaml\nearly_stop: { after_epoch: 1, median: true }\n");
    assert!(err.contains("sweep.yaml:2") && err.contains("unknown field `median`"), "{err}");
}

/// The median rule: a trial whose dev accuracy after epoch 1 is below the median of the
/// earlier trials' stops there, keeps its best epoch, and is still evaluated and recorded;
/// the trials above the median train every epoch.
#[test]
fn the_median_rule_stops_a_hopeless_trial_after_its_first_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_recipe(tmp.path(), 3);
    // Data a trial can learn in one epoch: the label is in the words (of the tiny vocabulary).
    let (pos, neg) = (["good", "love", "hi"], ["bad", "hate", "not"]);
    let mut rows = String::from("text\tlabel\n");
    for i in 0..96 {
        let words = if i % 2 == 1 { pos } else { neg };
        let text: Vec<&str> = (0..4).map(|k| words[(i + k) % 3]).collect();
        rows.push_str(&format!("{}\t{}\n", text.join(" "), i % 2));
    }
    std::fs::write(tmp.path().join("train.tsv"), &rows).unwrap();
    std::fs::write(tmp.path().join("dev.tsv"), &rows).unwrap();
    let sweep = tmp.path().join("sweep.yaml");
    // A learning rate that learns, then one too small to move the weights at all. (Mean
    // pooling: the random tiny model's pooler flattens the [CLS] state.)
    std::fs::write(&sweep, "recipe: recipe.yaml\nseeds: [1]\nearly_stop: { after_epoch: 1, min_trials: 1 }\nset:\n  task.pooling: mean\ngrid:\n  train.lr: [0.05, 1.0e-9]\n").unwrap();
    let out = tmp.path().join("out");
    let (ok, _, err) = run_reft(&["sweep", sweep.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let recs = records(&out);
    assert_eq!(recs.len(), 2, "{recs:?}");
    let (good, hopeless) = (&recs[0], &recs[1]);
    assert!(good["stopped_after_epoch"].is_null(), "{good}");
    assert_eq!(good["dev_by_epoch"].as_array().unwrap().len(), 3, "{good}");
    assert_eq!(hopeless["stopped_after_epoch"], 1, "{hopeless}");
    let first = hopeless["dev_by_epoch"].as_array().unwrap();
    assert_eq!(first.len(), 1, "{hopeless}");
    assert!(first[0].as_f64().unwrap() < good["dev_by_epoch"][0].as_f64().unwrap(), "{recs:?}");
    assert!(err.contains("stopped after epoch 1 by the median rule"), "{err}");
    // It trained one epoch and was evaluated as a finished run: its test accuracy is there.
    let log = std::fs::read_to_string(out.join("c001-s1/metrics.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"type\":\"epoch\"")).count(), 1, "{log}");
    assert!(hopeless["test"].as_f64().is_some(), "{hopeless}");
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("1 trial stopped") && summary.contains("| 1 (1 stopped) |"), "{summary}");
}

/// What `reft sweep --jobs` passes its trials: `reft train --stop-below EPOCH:SCORE`. No
/// accuracy exceeds 1, so this run stops after epoch 1 of 3, as a finished run.
#[test]
fn reft_train_stops_below_a_score_after_the_epoch_it_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), 3);
    let run = tmp.path().join("run");
    let (ok, _, err) = run_reft(&["train", recipe.to_str().unwrap(), "--out", run.to_str().unwrap(), "--stop-below", "1:1.01"]);
    assert!(ok, "{err}");
    assert!(err.contains("stopped early after epoch 1"), "{err}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["stopped_after_epoch"], 1, "{summary}");
    assert_eq!(summary["best_epoch"], 1, "{summary}");
    assert!(summary["test"]["accuracy"].as_f64().is_some(), "{summary}");
    let (ok, _, err) = run_reft(&["train", recipe.to_str().unwrap(), "--out", run.to_str().unwrap(), "--stop-below", "0:0.5"]);
    assert!(!ok && err.contains("from 1"), "{err}");
}

#[test]
fn a_random_search_draws_its_trials_from_its_seed_and_refuses_a_changed_file() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_recipe(tmp.path(), 1);
    let sweep = tmp.path().join("sweep.yaml");
    let text = "recipe: recipe.yaml\nrandom:\n  trials: 3\n  seed: 5\n  params:\n    train.lr: { log_uniform: [0.001, 0.1] }\n    interventions[0].rank: { int_uniform: [1, 3] }\n";
    std::fs::write(&sweep, text).unwrap();
    let out = tmp.path().join("out");
    let (ok, listed, err) = run_reft(&["sweep", sweep.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dry-run"]);
    assert!(ok, "{err}");
    let (_, again, _) = run_reft(&["sweep", sweep.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dry-run"]);
    assert_eq!(listed, again);
    assert_eq!(listed.lines().filter(|l| l.contains("train.lr=")).count(), 3, "{listed}");
    let (ok, _, err) = run_reft(&["sweep", sweep.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(records(&out).len(), 3);
    std::fs::write(&sweep, text.replace("seed: 5", "seed: 6")).unwrap();
    let (ok, _, err) = run_reft(&["sweep", sweep.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!ok && err.contains("another sweep file"), "{err}");
}

/// A sweep over two recipes, each with a transfer set, two trials at a time: every record
/// names its recipe, trains what that recipe says, and its transfer accuracy is what
/// `reft eval` gives on the kept adapter.
#[test]
fn parallel_trials_over_several_recipes_record_transfer_as_reft_eval_measures_it() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), 2);
    // Another domain: other words, labels the other way round for half of them.
    let words = ["nice", "poor", "show", "play", "dull", "fun", "a", "dog", "ran"];
    let mut rows = String::from("text\tlabel\n");
    for i in 0..40 {
        let text: Vec<&str> = (0..5).map(|k| words[(i * 3 + k * 2) % words.len()]).collect();
        rows.push_str(&format!("{}\t{}\n", text.join(" "), (i / 3) % 2));
    }
    std::fs::write(tmp.path().join("other.tsv"), &rows).unwrap();
    let text = std::fs::read_to_string(&recipe).unwrap().replace("test: dev.tsv,", "test: dev.tsv, transfer: { other: other.tsv },");
    std::fs::write(&recipe, &text).unwrap();
    std::fs::write(tmp.path().join("wide.yaml"), text.replace("rank: 1", "rank: 3").replace("layers[1]", "layers[0,1]")).unwrap();
    let sweep = tmp.path().join("sweep.yaml");
    std::fs::write(&sweep, "recipe: [recipe.yaml, wide.yaml]\nseeds: [1, 2]\n").unwrap();
    let out = tmp.path().join("out");
    let (ok, stdout, err) = run_reft(&["sweep", sweep.to_str().unwrap(), "--out", out.to_str().unwrap(), "--jobs", "2"]);
    assert!(ok, "{err}");
    assert!(stdout.contains("2 configuration(s) x 2 seed(s) = 4 trials"), "{stdout}");
    let recs = records(&out);
    assert_eq!(recs.len(), 4, "{recs:?}");
    for r in &recs {
        let run = out.join(r["trial"].as_str().unwrap());
        assert!(run.join("train.log").is_file(), "{} has no train.log", run.display());
        let trained: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        assert_eq!(trained["trainable_parameters"], r["trainable_parameters"]);
        let wide = r["recipe"].as_str().unwrap().ends_with("wide.yaml");
        assert_eq!(wide, r["config"] == 1, "{r}");
        let (ok, printed, err) = run_reft(&["eval", "--adapter", run.to_str().unwrap(), "--data", tmp.path().join("other.tsv").to_str().unwrap(), "--json"]);
        assert!(ok, "{err}");
        let eval: serde_json::Value = serde_json::from_str(&printed).unwrap();
        assert_eq!(eval["metrics"]["examples"], 40);
        assert_eq!(r["transfer"]["other"], eval["metrics"]["accuracy"], "{r}");
    }
    let p = |c: u64| recs.iter().find(|r| r["config"] == c).unwrap()["trainable_parameters"].as_u64().unwrap();
    assert!(p(1) > p(0));
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("| other |") && summary.contains("recipe=wide.yaml"), "{summary}");

    // The frontier of this sweep's two recipes and of another sweep: a method each.
    std::fs::write(tmp.path().join("narrow.yaml"), "recipe: recipe.yaml\nseeds: [3]\n").unwrap();
    let narrow = tmp.path().join("narrow");
    let (ok, _, err) = run_reft(&["sweep", tmp.path().join("narrow.yaml").to_str().unwrap(), "--out", narrow.to_str().unwrap()]);
    assert!(ok, "{err}");
    let png = tmp.path().join("frontier.png");
    let (ok, printed, err) = run_reft(&["plot", out.to_str().unwrap(), narrow.to_str().unwrap(), "--out", png.to_str().unwrap()]);
    assert!(ok && printed.contains("(5 trials, 3 methods)"), "{printed}{err}");
    assert!(printed.lines().any(|l| l.trim_start().starts_with("wide") && l.contains("(2 seed(s))")), "{printed}");
    assert!(image::open(&png).is_ok());
    let (ok, _, err) = run_reft(&["plot", out.to_str().unwrap(), tmp.path().to_str().unwrap()]);
    assert!(!ok && err.contains("is not a sweep folder"), "{err}");
}
