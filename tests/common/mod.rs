//! Shared helpers for reft's end-to-end tests.
#![allow(dead_code)]

pub mod server;
pub mod tiny_model;

use reft_core::candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

// Link the built-in plugins into every test binary (their registrations live there).
use reft_plugins as _;

/// The real all-MiniLM-L6-v2 folder, fetched by `reft setup`. Tests that need it fail
/// with a clear message when it is missing: they are not skipped.
pub fn minilm_dir() -> PathBuf {
    let dir = reft_assets::minilm_dir(&reft_assets::cache_dir());
    assert!(
        dir.join("model.safetensors").exists(),
        "the real MiniLM model is not in {} — run `cargo run --release -- setup` first",
        dir.display()
    );
    dir
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn load_fixture(name: &str) -> HashMap<String, Tensor> {
    reft_core::candle_core::safetensors::load(fixture(name), &Device::Cpu).unwrap()
}

pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap();
    d.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Token id rows from a `[b, s]` int64 fixture tensor, with padding (0) stripped.
pub fn id_rows(ids: &Tensor) -> Vec<Vec<u32>> {
    ids.to_dtype(DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().filter(|&v| v != 0).map(|v| v as u32).collect())
        .collect()
}

/// The `reft` binary built for this test run.
pub fn reft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_reft")
}

/// Run `reft` with `args`; return (success, stdout, stderr).
pub fn run_reft(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(reft_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub const PLUGIN_FILE: &str = "libreft_plugin_gated_steering.so";

/// The example plugin library next to this test binary (target/<profile>/deps), where
/// cargo puts a dev-dependency's cdylib, or one folder up where it uplifts workspace members.
pub fn plugin_library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps.join(PLUGIN_FILE), deps.parent().unwrap().join(PLUGIN_FILE)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{PLUGIN_FILE} was not built next to {}: it is a dev-dependency, so `cargo test` builds it", deps.display()))
}

/// `key` of every `kind` record (`step`, `epoch`) of a run folder's metrics.jsonl, in order.
pub fn logged(run: &Path, kind: &str, key: &str) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == kind)
        .map(|v| v[key].as_f64().unwrap())
        .collect()
}

/// The mean training loss of each epoch, from a run folder's metrics.jsonl.
pub fn epoch_train_losses(run: &Path) -> Vec<f64> {
    logged(run, "epoch", "train_loss")
}

/// The SmolLM2-135M-Instruct GGUF file that `reft setup` installs, or `None` (the test
/// returns early, with a note) when it is not in the cache, unless REFT_REQUIRE_ASSETS=1
/// (CI), where a missing file fails the test.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let cache = reft_assets::cache_dir();
    let path = reft_assets::smollm2_gguf(&cache);
    if reft_assets::is_installed(&cache, reft_assets::Asset::SmolLm2) && path.is_file() {
        return Some(path);
    }
    assert!(
        !reft_assets::assets_required(),
        "{}=1 but SmolLM2 is not in {} — run `cargo run --release -- setup` first",
        reft_assets::REQUIRE_ASSETS_ENV,
        cache.display()
    );
    eprintln!("note: SmolLM2 not in {}; test skipped (run `reft setup`)", cache.display());
    None
}

/// Run ONNX's own checker on `model` with the `onnx` package `reft setup` installs into the
/// cache. Skips (saying why) only when there is no python3 at all.
pub fn onnx_checker(model: &Path) {
    let python = std::env::var("REFT_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into());
    if std::process::Command::new(&python).arg("--version").output().is_err() {
        eprintln!("skipping ONNX's checker: no `{python}` on this machine");
        return;
    }
    let site = reft_assets::python_dir(&reft_assets::cache_dir());
    let script = "import sys, onnx\nm = onnx.load(sys.argv[1])\nonnx.checker.check_model(m, full_check=True)\nprint('checked', len(m.graph.node), 'nodes, opset', m.opset_import[0].version)";
    let out = std::process::Command::new(&python).env("PYTHONPATH", &site).args(["-c", script]).arg(model).output().unwrap();
    assert!(
        out.status.success(),
        "onnx.checker.check_model(full_check=True) rejected {} (is Python onnx installed? `reft setup` puts it in {}):\n{}",
        model.display(),
        site.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

/// Build `(kind, options yaml, hook, positions)` interventions on `backbone` from one seeded
/// generator, every tensor then drawn from N(0, `std`) (Householder signs excepted) so that
/// no edit is trivially zero.
pub fn random_interventions(backbone: &dyn reft_core::model::Backbone, specs: &[(&str, &str, &str, &str)], seed: u64, std: f32) -> reft_core::intervention::attach::Interventions {
    use reft_core::intervention::{self, BuildSpec};
    let mut rng = reft_core::rng::SeededRng::new(seed);
    let mut out = reft_core::intervention::attach::Interventions::default();
    for (i, (kind, opts, hook, positions)) in specs.iter().enumerate() {
        let options: serde_yaml::Mapping = serde_yaml::from_str(opts).unwrap();
        let [site] = reft_core::hooks::HookPattern::parse(hook).unwrap().resolve(backbone).unwrap()[..] else { panic!("{hook}") };
        let (in_dim, out_dim) = backbone.component_dims(site.component).unwrap();
        let mut spec = BuildSpec { options: &options, site, in_dim, out_dim, device: &Device::Cpu, dtype: DType::F32, rng: &mut rng };
        let module = (intervention::find(kind).unwrap().build)(&mut spec).unwrap();
        for v in module.state() {
            if v.name.ends_with("signs") {
                continue;
            }
            let t = rng.normal(v.var.shape().clone(), std, DType::F32, &Device::Cpu).unwrap();
            v.var.set(&t).unwrap();
        }
        out.push(&format!("{i}.{kind}"), site, positions.parse().unwrap(), module);
    }
    out
}

/// A data slice: the first `n` training lines and `m` dev lines spread over the file.
pub fn small_data(dir: &Path, n: usize, m: usize) -> (PathBuf, PathBuf) {
    let data = reft_assets::movie_reviews_dir(&reft_assets::cache_dir());
    let train = std::fs::read_to_string(data.join("train.tsv")).expect("run `reft setup` first");
    let dev = std::fs::read_to_string(data.join("dev.tsv")).unwrap();
    let head = |t: &str, k: usize, step: usize| -> String {
        let mut lines = t.lines();
        let header = lines.next().unwrap();
        std::iter::once(header).chain(lines.step_by(step).take(k)).map(|l| format!("{l}\n")).collect()
    };
    let (tr, dv) = (dir.join("train.tsv"), dir.join("dev.tsv"));
    std::fs::write(&tr, head(&train, n, 7)).unwrap();
    std::fs::write(&dv, head(&dev, m, 29)).unwrap();
    (tr, dv)
}
