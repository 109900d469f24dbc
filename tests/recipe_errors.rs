//! Bad inputs to the real `reft` binary: every one is a clean failure (non-zero exit, no
//! panic) whose message names the file, the line:column where one applies, and what is wrong.

mod common;

use common::run_reft;
use std::path::{Path, PathBuf};

/// A temp dir holding `recipe.yaml` with `text` (`MODEL` replaced by the real MiniLM folder).
fn recipe(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recipe.yaml");
    let model = common::minilm_dir();
    std::fs::write(&path, text.replace("MODEL", &model.display().to_string())).unwrap();
    (dir, path)
}

/// Run `reft ARGS`, assert it failed cleanly, and return its stderr.
fn fails(args: &[&str]) -> String {
    let (ok, stdout, stderr) = run_reft(args);
    assert!(!ok, "reft {args:?} succeeded:\n{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "reft {args:?} panicked:\n{stderr}");
    assert!(stderr.starts_with("error: "), "reft {args:?}: unexpected stderr:\n{stderr}");
    stderr
}

/// `reft check` on a recipe with `text`; returns (stderr, recipe path as printed).
fn check_fails(text: &str) -> (String, String) {
    let (_dir, path) = recipe(text);
    let p = path.display().to_string();
    (fails(&["check", &p]), p)
}

fn assert_has(stderr: &str, needles: &[&str]) {
    for n in needles {
        assert!(stderr.contains(n), "expected {n:?} in:\n{stderr}");
    }
}

/// `reft collect` on `dir` for one hook and one text.
fn collect_fails(dir: &Path) -> String {
    let out = dir.join("out.safetensors");
    fails(&[
        "collect",
        "--model",
        &dir.display().to_string(),
        "--hooks",
        "layers[0].block_output",
        "--text",
        "hi",
        "--out",
        &out.display().to_string(),
    ])
}

/// A model folder with the real config.json and tokenizer.json (copied) and the given weights.
fn model_copy(weights: &[u8]) -> tempfile::TempDir {
    let src = common::minilm_dir();
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("model.safetensors"), weights).unwrap();
    dir
}

const GOOD: &str = "model:\n  path: MODEL\ninterventions:\n  - kind: loreft\n    hooks: layers[0].block_output\n    rank: 4\n";

#[test]
fn good_recipe_checks() {
    let (_dir, path) = recipe(GOOD);
    let (ok, stdout, stderr) = run_reft(&["check", &path.display().to_string()]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("layers[0].block_output"), "{stdout}");
}

#[test]
fn malformed_yaml_bad_indentation() {
    let (e, p) = check_fails("model:\n  path: MODEL\n   dtype: f32\n");
    assert_has(&e, &[&format!("{p}:3:9:"), "mapping values are not allowed"]);
}

#[test]
fn malformed_yaml_unclosed_bracket() {
    let (e, p) = check_fails(
        "model:\n  path: MODEL\ninterventions:\n  - kind: loreft\n    hooks: [\"layers[0].block_output\"\n    rank: 4\n",
    );
    // The error is found where the `]` was expected; the message says where the list began.
    assert_has(&e, &[&format!("{p}:6:5:"), "expected ',' or ']'", "flow sequence at line 5 column 12"]);
}

#[test]
fn unknown_top_level_key() {
    let (e, p) = check_fails("modle:\n  path: MODEL\n");
    assert_has(&e, &[&format!("{p}:1:1:"), "unknown field `modle`", "`model`"]);
}

#[test]
fn unknown_nested_key() {
    let (e, p) = check_fails("model:\n  path: MODEL\ntrain: {lr: 1e-3, epocs: 3}\n");
    assert_has(&e, &[&format!("{p}:3:19:"), "unknown field `epocs`", "`epochs`"]);
}

#[test]
fn unknown_plugin_kind() {
    let (e, p) = check_fails(&GOOD.replace("kind: loreft", "kind: loreftt"));
    assert_has(
        &e,
        &[
            &format!("{p}:4:11:"),
            "unknown intervention kind `loreftt`",
            "did you mean `loreft`",
            "known kinds:",
            "noreft",
            "mlp",
            "linear",
        ],
    );
}

#[test]
fn misspelt_plugin_option() {
    let (e, p) = check_fails(&GOOD.replace("rank: 4", "rnak: 4"));
    // Points at the key `rnak` itself (line 6, column 5).
    assert_has(&e, &[&format!("{p}:6:5:"), "unknown field `rnak`", "`rank`"]);
}

#[test]
fn hook_on_a_layer_the_model_lacks() {
    let (e, p) = check_fails(
        "model:\n  path: MODEL\ninterventions:\n  - kind: loreft\n    hooks:\n      - layers[0].block_output\n      - layers[9].block_output\n    rank: 4\n",
    );
    assert_has(&e, &[&format!("{p}:7:9:"), "`layers[9].block_output`", "layer 9 does not exist", "6 layers"]);
}

#[test]
fn unknown_component() {
    let (e, p) = check_fails(&GOOD.replace("block_output", "block_ouput"));
    assert_has(&e, &[&format!("{p}:5:12:"), "unknown component `block_ouput`", "did you mean `block_output`"]);
}

#[test]
fn linear_hook_given_to_loreft() {
    let (e, p) = check_fails(&GOOD.replace("block_output", "attention.query"));
    assert_has(&e, &[&format!("{p}:5:12:"), "`loreft` attaches to a representation", "`layers[0].attention.query`"]);
}

#[test]
fn bad_positions() {
    let (e, p) = check_fails(&GOOD.replace("    rank: 4", "    positions: f0\n    rank: 4"));
    assert_has(&e, &[&format!("{p}:6:16:"), "positions `f0`", "`f<k>`"]);
}

#[test]
fn missing_model_folder() {
    let (e, p) = check_fails("model:\n  path: /nonexistent/reft-test/model\n");
    assert_has(&e, &[&format!("{p}:2:9:"), "/nonexistent/reft-test/model", "model folder not found"]);
}

#[test]
fn empty_recipe_file() {
    let (e, p) = check_fails("");
    assert_has(&e, &[&p, "the recipe is empty", "`model:`"]);
    let (e, p) = check_fails("# only a comment\n\n");
    assert_has(&e, &[&p, "the recipe is empty"]);
}

#[test]
fn truncated_weight_file() {
    let real = std::fs::read(common::minilm_dir().join("model.safetensors")).unwrap();
    // Cut inside the tensor data: the header is whole, the tensors are not.
    let dir = model_copy(&real[..real.len() / 2]);
    let weights = dir.path().join("model.safetensors").display().to_string();
    let e = collect_fails(dir.path());
    assert_has(&e, &[&weights, "not a valid safetensors file", "truncated or corrupt"]);
    // `check` reads only the header, and still sees the file is too short for it.
    let (_r, path) = recipe(&format!("model:\n  path: {}\n", dir.path().display()));
    let p = path.display().to_string();
    let e = fails(&["check", &p]);
    assert_has(&e, &[&format!("{p}:2:9:"), &weights, "truncated"]);
    // Cut inside the 8-byte length prefix.
    let dir = model_copy(&real[..5]);
    let weights = dir.path().join("model.safetensors").display().to_string();
    assert_has(&collect_fails(dir.path()), &[&weights, "not a valid safetensors file"]);
}

#[test]
fn corrupt_tokenizer_file() {
    let src = common::minilm_dir();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    std::os::unix::fs::symlink(src.join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let tok = std::fs::read_to_string(src.join("tokenizer.json")).unwrap();
    let tok_path = dir.path().join("tokenizer.json");
    std::fs::write(&tok_path, &tok[..5000]).unwrap();
    let e = collect_fails(dir.path());
    assert_has(&e, &[&tok_path.display().to_string(), "not a valid tokenizer.json"]);
    // Valid JSON of the wrong shape.
    std::fs::write(&tok_path, r#"{"model": {"type": "WordPiece", "vocab": 3}}"#).unwrap();
    let e = collect_fails(dir.path());
    assert_has(&e, &[&tok_path.display().to_string(), "not a valid tokenizer.json"]);
    // A file the `tokenizers` crate panics on: still a clean error, and no panic message.
    let mut json: serde_json::Value = serde_json::from_str(&tok).unwrap();
    json["model"] = serde_json::json!({"type": "BPE", "vocab": {"a": 0, "aa": 1}, "merges": ["a a"], "continuing_subword_prefix": "##"});
    std::fs::write(&tok_path, json.to_string()).unwrap();
    let e = collect_fails(dir.path());
    assert_has(&e, &[&tok_path.display().to_string(), "not a valid tokenizer.json"]);
}

#[test]
fn weight_of_the_wrong_shape() {
    use safetensors::tensor::{Dtype, TensorView};
    let real = std::fs::read(common::minilm_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&real).unwrap();
    let bad_name = "encoder.layer.3.attention.self.query.weight";
    let bad_data = vec![0u8; 384 * 383 * 4];
    let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
    for (name, view) in st.tensors() {
        if name == bad_name {
            views.push((name, TensorView::new(Dtype::F32, vec![384, 383], &bad_data).unwrap()));
        } else {
            views.push((name, view));
        }
    }
    let bytes = safetensors::serialize(views, None).unwrap();
    drop(real);
    let dir = model_copy(&bytes);
    drop(bytes);
    let weights = dir.path().join("model.safetensors").display().to_string();
    let e = collect_fails(dir.path());
    assert_has(&e, &[&weights, &format!("`{bad_name}`"), "[384, 383]", "[384, 384]"]);
}

const LORA: &str = "model:\n  path: MODEL\ninterventions:\n  - kind: lora\n    target: [query, value]\n    rank: 8\n";

#[test]
fn lora_target_name_that_matches_nothing() {
    let (e, p) = check_fails(&LORA.replace("value]", "valeu]"));
    assert_has(&e, &[&format!("{p}:5:21:"), "`target` name `valeu` matches no linear module", "attention.value"]);
}

#[test]
fn lora_target_pattern_that_matches_nothing() {
    let (e, p) = check_fails(&LORA.replace("[query, value]", "'.*\\.self\\.qeury'"));
    assert_has(&e, &[&format!("{p}:5:13:"), "matches no linear module", "encoder.layer.0.attention.self.query"]);
}

#[test]
fn lora_with_both_hooks_and_target() {
    let (e, p) = check_fails(&LORA.replace("    rank: 8", "    hooks: layers[0].attention.query\n    rank: 8"));
    assert_has(&e, &[&format!("{p}:5:5:"), "either `hooks` or `target`"]);
}

#[test]
fn lora_layers_the_model_lacks() {
    let (e, p) = check_fails(&LORA.replace("    rank: 8", "    layers: [1, 7]\n    rank: 8"));
    assert_has(&e, &[&format!("{p}:6:13:"), "layer 7 does not exist"]);
}

#[test]
fn target_given_to_a_representation_plugin() {
    let (e, p) = check_fails(&LORA.replace("kind: lora", "kind: loreft"));
    assert_has(&e, &[&format!("{p}:5:5:"), "`target` picks linear modules", "`loreft` edits representations"]);
}

#[test]
fn lora_bad_alpha_names_the_key() {
    let (e, p) = check_fails(&LORA.replace("rank: 8", "rank: 8\n    alpha: -2"));
    assert_has(&e, &[&format!("{p}:7:5:"), "`alpha` must be a positive number"]);
}

#[test]
fn deeply_nested_yaml_is_refused_before_parsing_with_its_position() {
    // 100k nested `[` once took libyaml's scanner 38 s; it is refused in one pass.
    let text = format!("model: {{ path: MODEL }}\ntask: {}\n", "[".repeat(100_000));
    let (stderr, p) = check_fails(&text);
    assert_has(&stderr, &[&format!("{p}:2:71:"), "nested more than 64 deep"]);
    // Brackets in quoted strings, comments and plain scalars do not count.
    let quoted = format!("model: {{ path: MODEL }}\n# {}\nnote: \"{}\"\nx: don't\ny: 'a[{}'\n", "[".repeat(100), "[".repeat(100), "{".repeat(100));
    let (stderr, _) = check_fails(&quoted);
    assert!(!stderr.contains("nested more than"), "{stderr}");
}

/// A recipe on the tiny test model in `dir` (its config edited by `edit`): the model line,
/// then `body`.
fn tiny_recipe(dir: &Path, edit: impl Fn(&mut serde_json::Value), body: &str) -> PathBuf {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    common::tiny_model::write(&model);
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("train.tsv"), "text\tlabel\nhello world\t1\nthe cat sat\t0\n").unwrap();
    let path = dir.join("recipe.yaml");
    std::fs::write(&path, format!("model: {{ path: model }}\n{body}")).unwrap();
    path
}

#[test]
fn check_refuses_what_train_would_refuse_or_could_not_train() {
    let tmp = tempfile::tempdir().unwrap();
    let task = "task: { kind: classification, num_labels: 2 }\n";
    let data = "data: { train: train.tsv, max_length: 16 }\n";
    let check = |body: String| fails(&["check", tiny_recipe(tmp.path(), |_| {}, &body).to_str().unwrap()]);
    let cases: &[(&str, &str)] = &[
        ("train: { lr: -1 }\n", "learning rate must be a number in (0, 10]"),
        ("train: { lr: .nan }\n", "got NaN"),
        ("train: { lr: .inf }\n", "got inf"),
        ("train: { lr: 1e30 }\n", "got 1000000000000000000000000000000"),
        ("train: { batch_size: 0 }\n", "`batch_size` must be at least 1"),
        ("train: { epochs: 0 }\n", "`epochs` must be at least 1"),
        ("train: { max_steps: 0 }\n", "`max_steps` must be at least 1"),
        ("train: { weight_decay: .nan }\n", "weight_decay"),
        ("train: { warmup_ratio: 2 }\n", "warmup_ratio"),
    ];
    for (train, needle) in cases {
        let err = check(format!("{task}{data}{train}"));
        assert!(err.contains(needle) && err.contains("recipe.yaml:"), "{train}: {err}");
    }
    // max_length 0, or past the model's 32 positions (it used to fail only at inference).
    for max_length in [0, 100_000] {
        let err = check(format!("{task}data: {{ train: train.tsv, max_length: {max_length} }}\n"));
        assert!(err.contains("max_length") && err.contains("32 positions"), "{err}");
    }
    let err = check(format!("task: {{ kind: classification, num_labels: 2, labels: [a, b, c] }}\n{data}"));
    assert!(err.contains("3 label names for `num_labels: 2`"), "{err}");
    let err = check(format!("task: {{ kind: classification, num_labels: 1 }}\n{data}"));
    assert!(err.contains("at least 2 labels"), "{err}");
    // `reft check` used to pass `device: cuda` on a build without CUDA; only `train` refused it.
    if !cfg!(feature = "cuda") {
        let recipe = tiny_recipe(tmp.path(), |_| {}, &format!("{task}{data}"));
        let text = std::fs::read_to_string(&recipe).unwrap().replace("model: { path: model }", "model: { path: model, device: cuda }");
        std::fs::write(&recipe, text).unwrap();
        let err = fails(&["check", recipe.to_str().unwrap()]);
        assert!(err.contains("built without CUDA"), "{err}");
    }
    // A config value that would turn every hidden state into NaN is refused by name.
    let recipe = tiny_recipe(tmp.path(), |c| c["layer_norm_eps"] = serde_json::json!(-1.0), &format!("{task}{data}"));
    let err = fails(&["check", recipe.to_str().unwrap()]);
    assert!(err.contains("layer_norm_eps -1"), "{err}");
}
