//! The `reft` command line on the real model: plan printing with exact counts, the plugin
//! list, help on every subcommand, and `collect` against the reference hidden states.

mod common;

use common::*;
use reft_core::candle_core::{DType, Device};

fn config(name: &str) -> String {
    format!("{}/configs/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_prints_exact_parameter_counts() {
    minilm_dir();
    let (ok, out, err) = run_reft(&["check", &config("loreft_r4_layers2_4.yaml")]);
    assert!(ok, "{err}");
    // 2·r·d + r = 2·4·384 + 4 per intervention; two of them plus the 770-scalar head.
    assert!(out.contains("layers[2].block_output  loreft  all            3,076"), "{out}");
    assert!(out.contains("layers[4].block_output"), "{out}");
    assert!(out.contains("interventions: 6,152 trainable"), "{out}");
    assert!(out.contains("total trainable: 6,922 (0.0305% of the base model's 22,713,216)"), "{out}");

    let (ok, out, _) = run_reft(&["check", &config("loreft_glue.yaml")]);
    assert!(ok);
    assert_eq!(out.matches(" 769\n").count(), 6, "{out}");
    assert!(out.contains("total trainable: 5,384"), "{out}");
}

/// A 16-bit base is named with the kernel its linear maps get on this CPU; an f32 base
/// prints no such line.
#[test]
fn check_names_the_kernel_a_16_bit_base_gets() {
    let dir = std::env::temp_dir().join(format!("reft-check-dtype-{}", std::process::id()));
    let f32_recipe = tiny_recipe(&dir.join("f32"), "");
    let (ok, out, err) = run_reft(&["check", f32_recipe.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(!out.contains("base    "), "{out}");
    let bf16 = tiny_recipe(&dir.join("bf16"), "");
    let text = std::fs::read_to_string(&bf16).unwrap().replace("model: { path: model }", "model: { path: model, dtype: bf16 }");
    std::fs::write(&bf16, text).unwrap();
    let (ok, out, err) = run_reft(&["check", bf16.to_str().unwrap()]);
    assert!(ok, "{err}");
    let kernel = if reft_core::ops::bf16_native() { "linear maps on this CPU's AVX512-BF16 dot products" } else { "linear maps widened to f32" };
    assert!(out.contains(&format!("base    bf16, {kernel}")), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_shipped_recipe_checks() {
    minilm_dir();
    for entry in std::fs::read_dir(format!("{}/configs", env!("CARGO_MANIFEST_DIR"))).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (ok, _, err) = run_reft(&["check", path.to_str().unwrap()]);
            assert!(ok, "{}: {err}", path.display());
        }
    }
}

#[test]
fn plugins_lists_every_builtin_and_help_works() {
    let (ok, out, _) = run_reft(&["plugins"]);
    assert!(ok);
    for kind in ["linear", "mlp", "loreft", "noreft", "consreft", "lobireft", "direft", "nodireft"] {
        assert!(out.lines().any(|l| l.starts_with(&format!("{kind} "))), "{kind} missing:\n{out}");
    }
    for sub in ["setup", "plugins", "check", "collect"] {
        let (ok, out, _) = run_reft(&[sub, "--help"]);
        assert!(ok && out.contains("Usage: reft"), "{sub}: {out}");
    }
}

#[test]
fn collect_matches_reference_hidden_states() {
    let dir = minilm_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("reps.safetensors");
    let (ok, _, err) = run_reft(&[
        "collect",
        "--model", dir.to_str().unwrap(),
        "--hooks", "embeddings",
        "--hooks", "layers[0..3,5].block_output",
        "--text", "Hello world.",
        "--text", "The quick brown fox jumps over the lazy dog.",
        "--out", out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let got = reft_core::candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let fx = load_fixture("minilm_hidden.safetensors");
    let mut names: Vec<&String> = got.keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["attention_mask", "embeddings", "input_ids", "layers[0].block_output", "layers[1].block_output",
         "layers[2].block_output", "layers[5].block_output"]
    );
    // Sentence 0 has 5 tokens, sentence 1 has 12: compare each on its real tokens.
    for (i, len) in [(0usize, 5usize), (1, 12)] {
        let want = fx[&format!("single_{i}_hidden_states")].to_dtype(DType::F32).unwrap();
        for (name, k) in [("embeddings", 0usize), ("layers[2].block_output", 3), ("layers[5].block_output", 6)] {
            let g = got[name].get(i).unwrap().narrow(0, 0, len).unwrap();
            let d = max_abs(&g, &want.get(k).unwrap());
            assert!(d <= 1e-4, "{name} sentence {i}: {d}");
        }
    }
}

/// A LoReFT recipe on the tiny test model with four training lines, written into `dir`
/// (with the model and data beside it); `extra` is appended to the recipe.
fn tiny_recipe(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("model")).unwrap();
    common::tiny_model::write(&dir.join("model"));
    std::fs::write(dir.join("train.tsv"), "text\tlabel\nhello world\t1\nthe cat sat\t0\ngood film\t1\nbad movie\t0\n").unwrap();
    let recipe = dir.join("recipe.yaml");
    std::fs::write(
        &recipe,
        format!(
            "model: {{ path: model }}\ntask: {{ kind: classification, num_labels: 2 }}\n\
data: {{ train: train.tsv, max_length: 16 }}\n\
interventions:\n  - {{ kind: loreft, hooks: \"layers[1].block_output\", positions: f1, rank: 1 }}\n\
train: {{ epochs: 1, batch_size: 2 }}\n{extra}"
        ),
    )
    .unwrap();
    recipe
}

#[test]
fn run_writes_the_pipeline_where_the_recipe_says() {
    // `reft run` fetches first: with the assets in the cache that is a marker check.
    let _ = minilm_dir();
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "export: { dir: pipe_here }\n");
    let run = tmp.path().join("run");
    let (ok, out, err) = run_reft(&["run", recipe.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert!(ok, "{err}");
    // Relative to the recipe's folder, as every path in a recipe is; nothing beside the adapter.
    assert!(tmp.path().join("pipe_here/pipeline.yaml").is_file(), "{out}");
    assert!(!run.join("pipeline").exists());
}

#[test]
fn training_again_into_a_run_folder_says_it_replaces_the_earlier_run() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "");
    let run = tmp.path().join("run");
    let train = || run_reft(&["train", recipe.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    let (ok, _, first) = train();
    assert!(ok, "{first}");
    assert!(!first.contains("earlier run"), "a fresh folder holds no earlier run: {first}");
    let (ok, _, second) = train();
    assert!(ok, "{second}");
    assert!(second.contains("holds an earlier run") && second.contains("--resume"), "{second}");
}
