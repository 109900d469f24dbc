//! Data parallelism under `mpirun` (cargo feature `mpi`; `.ci/run` installs Open MPI and runs
//! `cargo test --release --features mpi --test distributed`):
//! - two ranks with a per-rank batch of 16 train the same adapter as one process with batch
//!   32, within 1e-5 after 20 updates with dropout 0: LoReFT and LoRA on the tiny model, and
//!   LoReFT on MiniLM;
//! - a killed rank stops the run with an error that names it, and the last checkpoint stays
//!   intact: one process resumes it to the end;
//! - on GPUs (`--features cuda,nccl`), ranks whose gradients NCCL sums train what one GPU
//!   process trains.
#![cfg(feature = "mpi")]

mod common;

use common::*;
use reft_core::candle_core::{safetensors, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `mpirun -n N reft ARGS`, one worker thread per rank (root in CI containers, more ranks
/// than cores allowed).
fn mpirun(n: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-n", &n.to_string(), "--oversubscribe", "--allow-run-as-root", "--bind-to", "none", reft_bin()]);
    c.args(args).env("RAYON_NUM_THREADS", "1");
    c
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A tiny model, 96 labelled texts and a recipe with `interventions` in `dir`.
fn tiny_recipe(dir: &Path, interventions: &str, max_steps: usize) -> PathBuf {
    common::tiny_model::write(&dir.join("model"));
    let words = ["good", "bad", "film", "movie", "great", "awful", "the", "cat", "sat", "hello", "world", "fine"];
    let mut rows = String::from("text\tlabel\n");
    for i in 0..96 {
        let n = 3 + i % 5;
        let text: Vec<&str> = (0..n).map(|k| words[(i * 7 + k * 5) % words.len()]).collect();
        rows.push_str(&format!("{}\t{}\n", text.join(" "), (i / 2) % 2));
    }
    std::fs::write(dir.join("train.tsv"), &rows).unwrap();
    let recipe = dir.join("recipe.yaml");
    std::fs::write(
        &recipe,
        format!(
            "model: {{ path: model }}\ntask: {{ kind: classification, num_labels: 2, classifier_dropout: 0 }}\n\
data: {{ train: train.tsv, eval: train.tsv, max_length: 16 }}\ninterventions:\n{interventions}\n\
train: {{ max_steps: {max_steps}, batch_size: 32, lr: 0.02, seed: 3 }}\n"
        ),
    )
    .unwrap();
    recipe
}

fn checkpoint_state(run: &Path) -> HashMap<String, Tensor> {
    safetensors::load(run.join("checkpoint/state.safetensors"), &Device::Cpu).unwrap()
}

/// Train `recipe` (with `set`) as one process and as two ranks; every tensor of the final
/// checkpoint (weights and AdamW moments) must agree within `tol`.
fn one_process_equals_two_ranks(recipe: &Path, set: &[&str], tol: f32) {
    one_process_equals_ranks(2, recipe, set, tol, "");
}

/// Train `recipe` (with `set`) as one process and as `ranks` ranks, whose collective's
/// description must contain `library`; every tensor of the final checkpoint (weights and
/// AdamW moments) must agree within `tol`.
fn one_process_equals_ranks(ranks: usize, recipe: &Path, set: &[&str], tol: f32, library: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("ranks"));
    let mut args = vec!["train", recipe.to_str().unwrap()];
    for s in set {
        args.extend(["--set", s]);
    }
    let out = Command::new(reft_bin()).args(&args).args(["--out", one.to_str().unwrap()]).env("RAYON_NUM_THREADS", "1").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = mpirun(ranks, &args).args(["--out", two.to_str().unwrap()]).output().unwrap();
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    let banner = format!("data parallel: {ranks} rank{} over {library}", if ranks == 1 { "" } else { "s" });
    assert!(printed.contains(&banner) && printed.contains("global batch 32"), "no `{banner}`: {printed}");
    // Rank 0 alone printed the summary.
    assert_eq!(printed.matches("best epoch").count(), 1, "{printed}");
    let (a, b) = (checkpoint_state(&one), checkpoint_state(&two));
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    let mut worst = (0f32, String::new());
    for (name, ta) in &a {
        let d = max_abs(ta, &b[name]);
        if d > worst.0 {
            worst = (d, name.clone());
        }
    }
    assert!(worst.0 <= tol, "{} differs by {} between one process and {ranks} ranks", worst.1, worst.0);
    // The run moved: the trained weights are not still at their start.
    let progress: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(two.join("checkpoint/progress.json")).unwrap()).unwrap();
    assert_eq!(progress["progress"]["global_step"], 20, "{progress}");
    // Rank 1 wrote nothing of its own: one summary, one log.
    assert!(two.join("summary.json").is_file());
}

#[test]
fn two_ranks_train_the_loreft_adapter_of_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "  - { kind: loreft, hooks: \"layers[0,1].block_output\", positions: f1+l1, rank: 2 }", 20);
    one_process_equals_two_ranks(&recipe, &[], 1e-5);
}

/// Under a launcher the gradients go through the library even for one rank (that is how a
/// one-GPU NCCL run is checked): the round trip must change nothing.
#[test]
fn one_rank_under_mpirun_trains_the_adapter_of_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "  - { kind: loreft, hooks: \"layers[0,1].block_output\", positions: f1+l1, rank: 2 }", 20);
    one_process_equals_ranks(1, &recipe, &[], 0.0, "MPI (");
}

#[test]
fn two_ranks_train_the_lora_adapter_of_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "  - { kind: lora, target: [query, value], rank: 4, alpha: 8 }", 20);
    one_process_equals_two_ranks(&recipe, &[], 1e-5);
}

#[test]
fn two_ranks_train_loreft_on_minilm_as_one_process_does() {
    let _ = minilm_dir();
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/loreft_glue.yaml");
    one_process_equals_two_ranks(&recipe, &["train.max_steps=20", "task.classifier_dropout=0"], 1e-5);
}

/// The pid of the process whose environment says it is rank `rank` and whose command line
/// names `marker`.
fn rank_pid(rank: usize, marker: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(marker) || !String::from_utf8_lossy(&cmdline).contains("train") {
            continue;
        }
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if env.split(|&b| b == 0).any(|v| v == format!("OMPI_COMM_WORLD_RANK={rank}").as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_killed_rank_stops_the_run_by_name_and_the_checkpoint_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "  - { kind: loreft, hooks: \"layers[0,1].block_output\", positions: f1, rank: 2 }", 100_000);
    let run = tmp.path().join("killed-run");
    let mut child = mpirun(2, &["train", recipe.to_str().unwrap(), "--out", run.to_str().unwrap(), "--checkpoint-every", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !run.join("checkpoint/progress.json").is_file() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint in 2 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = rank_pid(1, run.to_str().unwrap()).expect("rank 1's process");
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let printed = text(&out);
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("rank 1"), "the error should name rank 1:\n{printed}");
    // The checkpoint is whole: one process continues it (the batch is global, so the
    // world size may change) and stops at the new end.
    let out = Command::new(reft_bin())
        .args(["train", recipe.to_str().unwrap(), "--out", run.to_str().unwrap(), "--resume", "--set", "train.max_steps=60"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let progress: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint/progress.json")).unwrap()).unwrap();
    assert_eq!(progress["progress"]["global_step"], 60, "{progress}");
}

#[test]
fn a_world_larger_than_the_batch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "  - { kind: loreft, hooks: \"layers[0].block_output\", positions: f1, rank: 1 }", 5);
    let out = mpirun(3, &["train", recipe.to_str().unwrap(), "--out", tmp.path().join("r").to_str().unwrap(), "--set", "train.batch_size=2"]).output().unwrap();
    let printed = text(&out);
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("batch_size") && printed.contains("3 ranks"), "{printed}");
}

/// GPU sessions (`--features cuda,nccl`): NCCL sums the gradients. One rank on one GPU trains
/// what one process on that GPU trains (under a launcher the all-reduce runs even for one
/// rank, so this is NCCL's path); with two GPUs or more, two ranks train what one does.
#[cfg(all(feature = "nccl", feature = "cuda"))]
#[test]
fn nccl_ranks_on_gpus_train_the_adapter_of_one_gpu_process() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "  - { kind: loreft, hooks: \"layers[0,1].block_output\", positions: f1+l1, rank: 2 }", 20);
    one_process_equals_ranks(1, &recipe, &["model.device=cuda"], 1e-5, "NCCL on GPU 0");
    let gpus = Command::new("nvidia-smi").arg("-L").output().map(|o| String::from_utf8_lossy(&o.stdout).lines().count()).unwrap_or(0);
    if gpus >= 2 {
        one_process_equals_ranks(2, &recipe, &["model.device=cuda"], 1e-5, "NCCL on GPU 0");
    } else {
        eprintln!("one GPU ({gpus} listed by nvidia-smi -L): the two-rank NCCL comparison needs two");
    }
}
