//! Causal-LM training on the real SmolLM2-135M-Instruct with the emoji demo's data
//! (configs/data/emoji): the loss falls within a few updates, the same seed gives the same
//! losses and adapter, the adapter round trip (train → save → load → `reft generate
//! --adapter`) gives the in-memory model's greedy tokens, and recipe mistakes name their line.
//!
//! Needs the asset from `reft setup`; without it each test returns early with a note
//! (under REFT_REQUIRE_ASSETS=1 it fails instead).

mod common;

use common::*;
use reft_core::adapter;
use reft_core::intervention::attach::Interventions;
use reft_core::candle_core::{DType, Device};
use reft_core::generate::{generate, GenerateOptions, Sampling};
use reft_core::model::{self, tokenizer::batch_from_ids, NoHooks};
use reft_core::recipe::{LoadedRecipe, Plan};
use reft_core::rng::SeededRng;
use reft_core::task::causal_lm::{CausalLmModel, PromptFormat};
use reft_core::task::TaskModel;
use reft_core::train::{self, adamw::AdamW, Silent, TrainOptions};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

fn emoji_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/data/emoji").join(name)
}

/// The demo recipe's shape (rank-4 LoReFT at layer 15, first and last prompt tokens) on `model`,
/// written into `dir`, with `train` settings.
fn recipe(dir: &Path, model: &Path, train: &str) -> PathBuf {
    let text = format!(
        "model: {{ path: \"{}\" }}\n\
task: {{ kind: causal_lm }}\n\
data: {{ train: \"{}\", eval: \"{}\", max_length: 96 }}\n\
interventions:\n  - {{ kind: loreft, hooks: \"layers[15].block_output\", positions: f1+l1, rank: 4 }}\n\
train: {{ {train} }}\n",
        model.display(),
        emoji_data("train.jsonl").display(),
        emoji_data("eval.jsonl").display()
    );
    let path = dir.join("recipe.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn step_losses(run: &Path) -> Vec<f64> {
    logged(run, "step", "loss")
}

#[test]
fn loss_falls_within_a_few_updates_and_same_seed_same_run() {
    let Some(gguf) = smollm2_gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let path = recipe(tmp.path(), &gguf, "max_steps: 9, batch_size: 8, lr: 1.0e-2, seed: 42");
    let run = |out: &str| {
        let plan = Plan::new(LoadedRecipe::load(&path).unwrap()).unwrap();
        let mut silent = Silent;
        let opts = TrainOptions { log_every: 1, ..TrainOptions::one_process(tmp.path().join(out), &mut silent) };
        train::train(&plan, opts).unwrap()
    };
    let a = run("a");
    let b = run("b");
    let (la, lb) = (step_losses(&tmp.path().join("a")), step_losses(&tmp.path().join("b")));
    println!("losses: {la:?}");
    assert_eq!(la.len(), 9);
    assert_eq!(la, lb, "same seed, different losses");
    let sha = |d: &str| reft_assets::sha256_file(&tmp.path().join(d).join(adapter::WEIGHTS_FILE)).unwrap();
    assert_eq!(sha("a"), sha("b"));
    // 20 pairs in batches of 8, 8 and 4: updates 1-3 see the whole set once, 7-9 a third time.
    let (first, last) = (la[..3].iter().sum::<f64>() / 3.0, la[6..].iter().sum::<f64>() / 3.0);
    println!("mean loss of the first epoch's updates {first:.3}, of the third's {last:.3}");
    assert!(last < first - 0.4, "the loss did not fall: {la:?}");
    let dev = a.dev.as_ref().and_then(|d| d.causal_lm()).expect("causal-LM metrics");
    assert_eq!(dev.examples, 4);
    assert!(dev.tokens > 4 && dev.loss.is_finite() && (dev.perplexity - dev.loss.exp()).abs() < 1e-9, "{dev:?}");
    assert_eq!(a.dev, b.dev);
    // `reft eval` on the saved adapter gives the trainer's eval figure.
    let run_a = tmp.path().join("a");
    let (ok, out, err) = run_reft(&["eval", "--adapter", run_a.to_str().unwrap(), "--data", emoji_data("eval.jsonl").to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let eval: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(eval["metrics"]["tokens"].as_u64(), Some(dev.tokens as u64));
    assert!((eval["metrics"]["loss"].as_f64().unwrap() - dev.loss).abs() < 1e-5, "{eval} vs {dev:?}");
    // The manifest records the task, so generation forms prompts the same way.
    let manifest = adapter::read_manifest(&tmp.path().join("a")).unwrap();
    let task = manifest.task.expect("a causal-LM manifest records its task");
    assert!(task.chat_template && task.system.is_none());
    assert!(manifest.head.is_none());
}

#[test]
fn a_run_without_an_eval_set_records_no_dev_metrics_rather_than_zeros() {
    let Some(gguf) = smollm2_gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let path = recipe(tmp.path(), &gguf, "max_steps: 2, batch_size: 8, lr: 1.0e-2, seed: 42");
    // The same recipe without `eval:`.
    let text = std::fs::read_to_string(&path).unwrap();
    let without_eval = text.replace(&format!(", eval: \"{}\"", emoji_data("eval.jsonl").display()), "");
    assert_ne!(text, without_eval);
    std::fs::write(&path, without_eval).unwrap();
    let run = tmp.path().join("run");
    let (ok, out, err) = run_reft(&["train", path.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("dev          (no eval set"), "{out}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert!(summary["dev"].is_null(), "{summary}");
    assert_eq!(summary["steps"], 2);
}

/// Greedy tokens for each prompt, with `interventions` applied in the prefill (or none).
fn greedy(lm: &dyn model::Backbone, ids: &[Vec<u32>], interventions: Option<&Interventions>) -> Vec<Vec<u32>> {
    let opts = GenerateOptions { max_new_tokens: 16, sampling: Sampling::Greedy, extra_stop_tokens: vec![] };
    let lm = lm.as_causal_lm().unwrap();
    ids.iter()
        .map(|p| {
            let batch = batch_from_ids(std::slice::from_ref(p), 0, &Device::Cpu).unwrap();
            let rng = RefCell::new(SeededRng::new(0));
            let gen = match interventions {
                Some(iv) => generate(lm, &batch, &iv.hooks(&batch, false, DType::F32, &rng).unwrap(), &opts, &mut |_| Ok(())),
                None => generate(lm, &batch, &NoHooks, &opts, &mut |_| Ok(())),
            };
            gen.unwrap().tokens
        })
        .collect()
}

#[test]
fn adapter_round_trip_gives_the_in_memory_greedy_tokens() {
    let Some(gguf) = smollm2_gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan::new(LoadedRecipe::load(&recipe(tmp.path(), &gguf, "batch_size: 8, lr: 1.0e-2, seed: 5")).unwrap()).unwrap();
    let dev = Device::Cpu;
    let backbone = model::load(&plan.model_dir, DType::F32, &dev).unwrap();
    let tok = model::load_tokenizer(&plan.model_dir).unwrap();
    let set = reft_core::task::encode_file(&plan, "train", plan.recipe.recipe.data.as_ref().unwrap().train.as_str(), &tok, backbone.as_causal_lm(), &mut |_: &str| {}).unwrap();
    let iv = plan.build_interventions(&dev, DType::F32, 5).unwrap();
    let params: Vec<_> = adapter::named_tensors(&iv, None).into_iter().filter(|(_, v)| v.trainable).collect();
    let mut opt = AdamW::new(&params, 0.0).unwrap();
    let model = CausalLmModel::new(backbone.as_ref(), &iv, DType::F32, &dev).unwrap();
    // A few updates on the whole set (no prefix cache: the plain path).
    let idx: Vec<usize> = (0..set.len()).collect();
    let batch = batch_from_ids(&set.ids, tok.pad_id(), &dev).unwrap();
    for step in 0..6 {
        let rng = RefCell::new(SeededRng::new(step));
        let loss = model.batch_loss(&batch, &set, &idx, None, &rng).unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&params, &grads, 1e-2, 1.0).unwrap();
    }

    // Held-out prompts, formed as training formed them.
    let heldout = emoji_data("heldout.jsonl");
    let prompts: Vec<String> = std::fs::read_to_string(&heldout)
        .unwrap()
        .lines()
        .take(3)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["instruction"].as_str().unwrap().to_string())
        .collect();
    let format = PromptFormat::new(true, None, &plan.model_dir).unwrap();
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| format.encode(&tok, p).unwrap()).collect();
    let in_memory = greedy(backbone.as_ref(), &ids, Some(&iv));
    let base = greedy(backbone.as_ref(), &ids, None);
    assert_ne!(in_memory, base, "six updates changed no greedy answer: the test would prove nothing");

    // Save, load, generate again: the same tokens.
    let dir = tmp.path().join("adapter");
    std::fs::create_dir_all(&dir).unwrap();
    adapter::save(&dir, &adapter::manifest_for(&plan, &plan.model_dir).unwrap(), &iv, None).unwrap();
    let loaded = adapter::load(&dir, None, &dev).unwrap();
    assert!(loaded.head.is_none());
    let reloaded = greedy(loaded.backbone.as_ref(), &ids, Some(&loaded.interventions));
    assert_eq!(reloaded, in_memory);

    // And through the CLI, which reads the prompt format from the manifest.
    let few = tmp.path().join("few.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&heldout).unwrap().lines().take(3).map(str::to_string).collect();
    std::fs::write(&few, lines.join("\n")).unwrap();
    let (ok, out, err) = run_reft(&["generate", "--adapter", dir.to_str().unwrap(), "--prompts", few.to_str().unwrap(), "--max-new-tokens", "16", "--json"]);
    assert!(ok, "{err}");
    let cli: Vec<Vec<u32>> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["token_ids"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect())
        .collect();
    assert_eq!(cli, in_memory);
    // A single prompt without --prompts, streamed: the same text as the first JSON record.
    let (ok, text, err) = run_reft(&["generate", "--adapter", dir.to_str().unwrap(), "--max-new-tokens", "16", &prompts[0]]);
    assert!(ok, "{err}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(text.trim_end_matches('\n'), first["output"].as_str().unwrap());
    // `reft chat --adapter`: the first turn is the same prompt, edited the same way.
    let mut child = std::process::Command::new(reft_bin())
        .args(["chat", "--adapter", dir.to_str().unwrap(), "--max-new-tokens", "16"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(format!("{}\n", prompts[0]).as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end_matches('\n'), first["output"].as_str().unwrap());

    // Exported (prefill graph with the edit, decode-step graph with the KV cache) and run on
    // ONNX Runtime: the same text. The pipeline takes the chat format from `--chat`.
    let pipeline = tmp.path().join("pipeline");
    let (ok, _, err) = run_reft(&["export", "--adapter", dir.to_str().unwrap(), "--out", pipeline.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, ort_text, err) = run_reft(&["generate", "--runtime", "ort", "--pipeline", pipeline.to_str().unwrap(), "--chat", "--max-new-tokens", "16", &prompts[0]]);
    assert!(ok, "{err}");
    assert_eq!(ort_text.trim_end_matches('\n'), first["output"].as_str().unwrap(), "ONNX Runtime and candle generate differently");
}

#[test]
fn causal_recipe_mistakes_name_their_line() {
    let Some(gguf) = smollm2_gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let check = |text: String| -> String {
        let path = tmp.path().join("r.yaml");
        std::fs::write(&path, text).unwrap();
        match LoadedRecipe::load(&path).and_then(Plan::new) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    };
    let head = format!("model: {{ path: \"{}\" }}\n", gguf.display());
    let e = check(format!("{head}task: {{ kind: causal_lm }}\ninterventions:\n  - {{ kind: lora, hooks: \"layers[3].attention.query\", rank: 4 }}\n"));
    assert!(e.contains("r.yaml:4:") && e.contains("edits the prompt only"), "{e}");
    let e = check(format!("{head}task: {{ kind: causal_lm }}\n"));
    assert!(e.contains("nothing to train"), "{e}");
    let e = check(format!("{head}task:\n  kind: causal_lm\n  chat_template: false\n  system: Be brief.\ninterventions:\n  - {{ kind: loreft, hooks: \"layers[3].block_output\", rank: 4 }}\n"));
    assert!(e.contains("r.yaml:5:") && e.contains("chat_template: false"), "{e}");
    let e = check(format!("{head}task: {{ kind: classification }}\ndata: {{ train: x.jsonl, prompt: q }}\n"));
    assert!(e.contains("r.yaml:3:") && e.contains("causal_lm"), "{e}");
    // A data file whose prompt leaves no room for the response names its line.
    let data = tmp.path().join("long.jsonl");
    std::fs::write(&data, "{\"instruction\": \"hi\", \"response\": \"👋\"}\n{\"instruction\": \"a very long prompt indeed\", \"response\": \"x\"}\n").unwrap();
    // Room for the short prompt and two more tokens, not for the long one.
    let tok = model::load_tokenizer(&gguf).unwrap();
    let format = PromptFormat::new(true, None, &gguf).unwrap();
    let max_length = format.encode(&tok, "hi").unwrap().len() + 2;
    assert!(format.encode(&tok, "a very long prompt indeed").unwrap().len() >= max_length);
    let path = tmp.path().join("long.yaml");
    std::fs::write(&path, format!("{head}task: {{ kind: causal_lm }}\ndata: {{ train: long.jsonl, max_length: {max_length} }}\ninterventions:\n  - {{ kind: loreft, hooks: \"layers[3].block_output\", positions: l1, rank: 4 }}\n")).unwrap();
    let plan = Plan::new(LoadedRecipe::load(&path).unwrap()).unwrap();
    let mut silent = Silent;
    let opts = TrainOptions { log_every: 1, ..TrainOptions::one_process(tmp.path().join("run"), &mut silent) };
    let e = train::train(&plan, opts).unwrap_err().to_string();
    assert!(e.contains("long.jsonl:2") && e.contains("max_length"), "{e}");
}
