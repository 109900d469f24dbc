//! `reft install --prefix`: the installed binary starts, finds its libraries in PREFIX/lib
//! (not in the build tree), and runs `plugins`, `check` and a run-time plugin from an
//! unrelated working directory.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// Run the installed `reft` in `cwd` as a user's shell would: without the
/// `LD_LIBRARY_PATH` cargo sets for tests (it points into the build tree and would win over
/// the binary's own rpath). Returns (success, stdout, stderr).
fn run_installed(reft: &Path, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(reft).args(args).current_dir(cwd).env_remove("LD_LIBRARY_PATH").envs(env.iter().copied()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn installed_reft_runs_from_anywhere_on_its_own_libraries() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    let (ok, out, err) = run_reft(&["install", "--prefix", prefix.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("installed"), "{out}");
    let reft = prefix.join("bin/reft");
    let libs: Vec<String> = std::fs::read_dir(prefix.join("lib")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(libs.iter().any(|n| n.starts_with("libreft_sdk")), "{libs:?}");
    assert!(libs.iter().any(|n| n.starts_with("libstd-")), "{libs:?}");
    assert!(!prefix.join("bin").read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));

    // A working folder with nothing of the build tree in it: a tiny model, data, the plugin.
    let work = tmp.path().join("elsewhere");
    std::fs::create_dir_all(work.join("model")).unwrap();
    tiny_model::write(&work.join("model"));
    std::fs::write(work.join("train.tsv"), "text\tlabel\nhello world\t1\nworld hello\t0\n").unwrap();
    std::fs::copy(plugin_library(), work.join(PLUGIN_FILE)).unwrap();
    std::fs::write(
        work.join("recipe.yaml"),
        format!(
            "model: {{ path: model }}\nplugins: [./{PLUGIN_FILE}]\n\
task: {{ kind: classification, num_labels: 2 }}\n\
data: {{ train: train.tsv, max_length: 16 }}\n\
interventions:\n  - {{ kind: gated_steering, hooks: \"layers[1].block_output\", positions: f1 }}\n\
train: {{ epochs: 1, batch_size: 2 }}\n"
        ),
    )
    .unwrap();

    // The dynamic loader reports where each library came from: PREFIX/lib, not the build tree.
    let (ok, out, err) = run_installed(&reft, &work, &["plugins"], &[("LD_DEBUG", "libs")]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("loreft ")), "{out}");
    let sdk_line = err.lines().find(|l| l.contains("calling init:") && l.contains("libreft_sdk")).unwrap_or_else(|| panic!("no init of libreft_sdk in:\n{err}"));
    let loaded = std::fs::canonicalize(sdk_line.split("calling init:").nth(1).unwrap().trim()).unwrap();
    assert_eq!(loaded.parent().unwrap(), std::fs::canonicalize(prefix.join("lib")).unwrap(), "libreft_sdk came from elsewhere: {sdk_line}");

    let (ok, out, err) = run_installed(&reft, &work, &["check", "recipe.yaml"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("gated_steering"), "{out}");
    let (ok, out, err) = run_installed(&reft, &work, &["--plugin", PLUGIN_FILE, "plugins"], &[]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("gated_steering ")), "{out}");
}
