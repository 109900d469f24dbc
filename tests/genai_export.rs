//! `reft export --format genai` loaded by ONNX Runtime GenAI itself (`onnxruntime-genai`
//! from PyPI, which `reft setup` installs into the cache's Python, beside the ONNX checker):
//! greedy tokens from GenAI's Python API equal `reft generate`'s, for SmolLM2 as it is and
//! with a trained causal-LM adapter (the emoji LoReFT recipe, a few steps), whose edits
//! apply to the prompt only; GenAI's tokenizer reads the folder's tokenizer files as reft
//! tokenises.
//!
//! Needs the assets from `reft setup`; without SmolLM2 or the Python packages each test
//! returns early with a note (under REFT_REQUIRE_ASSETS=1 it fails instead).

mod common;

use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const NEW_TOKENS: usize = 16;

/// python3 with the cache's packages, if GenAI imports there.
fn genai_python() -> Option<(String, PathBuf)> {
    let python = std::env::var("REFT_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into());
    let site = reft_assets::python_dir(&reft_assets::cache_dir());
    let ok = Command::new(&python).env("PYTHONPATH", &site).args(["-c", "import onnxruntime_genai"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !reft_assets::assets_required(),
            "{}=1 but onnxruntime_genai does not import from {} — run `reft setup`",
            reft_assets::REQUIRE_ASSETS_ENV,
            site.display()
        );
        eprintln!("note: onnxruntime_genai not in {}; test skipped (run `reft setup`)", site.display());
        return None;
    }
    Some((python, site))
}

/// `reft generate --json` over `prompts`: one record per prompt (prompt_ids, token_ids, stop).
fn reft_generate(extra: &[&str], prompts: &[&str], dir: &Path) -> Vec<serde_json::Value> {
    let file = dir.join("prompts.txt");
    std::fs::write(&file, prompts.join("\n") + "\n").unwrap();
    let mut args = vec!["generate", "--prompts", file.to_str().unwrap(), "--json", "--max-new-tokens"];
    let n = NEW_TOKENS.to_string();
    args.push(&n);
    args.extend_from_slice(extra);
    let (ok, out, err) = run_reft(&args);
    assert!(ok, "reft generate: {err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// GenAI's greedy tokens for each of reft's prompts (same prompt ids).
fn genai_generate(folder: &Path, records: &[serde_json::Value], raw_text: bool) -> Vec<serde_json::Value> {
    let (python, site) = genai_python().expect("checked by the caller");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/genai_greedy.py");
    let mut child = Command::new(python).env("PYTHONPATH", site).arg(script).arg(folder).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for r in records {
            let mut req = serde_json::json!({ "prompt_ids": r["prompt_ids"], "max_new_tokens": NEW_TOKENS });
            if raw_text {
                req["text"] = r["prompt"].clone();
            }
            writeln!(stdin, "{req}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "GenAI failed on {}:\n{}", folder.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|x| x.as_u64().unwrap()).collect()
}

/// GenAI's tokens equal reft's; GenAI keeps the end token it stopped on, reft does not.
fn assert_same_tokens(reft: &[serde_json::Value], genai: &[serde_json::Value], eos: &[u64], what: &str) {
    assert_eq!(reft.len(), genai.len());
    for (r, g) in reft.iter().zip(genai) {
        let (want, mut got) = (ids(&r["token_ids"]), ids(&g["token_ids"]));
        if r["stop"] == "end_of_sequence" {
            let last = got.pop();
            assert!(last.is_some_and(|t| eos.contains(&t)), "{what}: {:?}: GenAI did not stop on an end token: {got:?}", r["prompt"]);
        }
        assert_eq!(got, want, "{what}: {:?}: GenAI's greedy tokens differ from reft generate's", r["prompt"]);
    }
}

fn export_genai(args: &[&str], out: &Path) -> serde_json::Value {
    let mut all = vec!["export", "--format", "genai", "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let (ok, stdout, err) = run_reft(&all);
    assert!(ok, "reft export --format genai: {err}");
    assert!(stdout.contains("onnxruntime_genai"), "{stdout}");
    for f in ["genai_config.json", "model.onnx", "model.onnx.data", "tokenizer.json", "tokenizer_config.json"] {
        assert!(out.join(f).is_file(), "no {f} in {}", out.display());
    }
    serde_json::from_str(&std::fs::read_to_string(out.join("genai_config.json")).unwrap()).unwrap()
}

const PROMPTS: [&str; 3] = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village by the sea, there lived"];

#[test]
fn genai_runs_the_base_model_as_reft_generate_does() {
    let Some(gguf) = smollm2_gguf() else { return };
    if genai_python().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("smol-genai");
    let config = export_genai(&["--model", gguf.to_str().unwrap()], &folder);
    assert_eq!(config["model"]["decoder"]["num_hidden_layers"], 30);
    assert_eq!(config["search"]["past_present_share_buffer"], false);
    // GenAI's own default cache names, so tools that assume them find them.
    assert_eq!(config["model"]["decoder"]["inputs"]["past_key_names"], "past_key_values.%d.key");
    onnx_checker(&folder.join("model.onnx"));
    let eos = ids(&config["model"]["eos_token_id"]);

    let reft = reft_generate(&["--model", gguf.to_str().unwrap()], &PROMPTS, tmp.path());
    let genai = genai_generate(&folder, &reft, true);
    assert_same_tokens(&reft, &genai, &eos, "base model");
    for (r, g) in reft.iter().zip(&genai) {
        // GenAI's tokenizer, from the folder's files, encodes the prompt as reft does.
        assert_eq!(ids(&g["encoded"]), ids(&r["prompt_ids"]), "{:?}: GenAI's tokenizer differs", r["prompt"]);
    }
}

#[test]
fn genai_applies_a_causal_lm_adapter_to_the_prompt_only() {
    let Some(gguf) = smollm2_gguf() else { return };
    if genai_python().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let adapter = tmp.path().join("emoji");
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/smollm2_emoji_loreft.yaml");
    let (ok, _, err) = run_reft(&[
        "train",
        recipe.to_str().unwrap(),
        "--out",
        adapter.to_str().unwrap(),
        "--set",
        "train.max_steps=8",
        "--set",
        "train.lr=0.05",
    ]);
    assert!(ok, "train: {err}");
    let folder = tmp.path().join("emoji-genai");
    let config = export_genai(&["--adapter", adapter.to_str().unwrap()], &folder);
    let eos = ids(&config["model"]["eos_token_id"]);
    let prompts = ["What is your name?", "Describe the sea in one sentence.", "What do you like to eat?"];
    let reft = reft_generate(&["--adapter", adapter.to_str().unwrap()], &prompts, tmp.path());
    let genai = genai_generate(&folder, &reft, false);
    assert_same_tokens(&reft, &genai, &eos, "emoji adapter");
    // The adapter matters: the base model, on the same prompt ids, answers otherwise.
    let base = tmp.path().join("base-genai");
    export_genai(&["--model", gguf.to_str().unwrap()], &base);
    let plain = genai_generate(&base, &reft, false);
    assert!(plain.iter().zip(&genai).any(|(p, g)| p["token_ids"] != g["token_ids"]), "the adapter changed no generation: the test would not see a lost edit");
}

#[test]
fn genai_refuses_what_it_cannot_honour() {
    let Some(gguf) = smollm2_gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let (ok, _, err) = run_reft(&["export", "--format", "genai", "--model", gguf.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quantize", "int8"]);
    assert!(!ok && err.contains("--quantize applies to reft pipelines"), "{err}");
    assert!(!out.join("genai_config.json").exists());
}
