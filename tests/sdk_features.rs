//! libreft_sdk.so must be the same library whichever cargo command built it last.
//!
//! Cargo resolves features once per invocation, over the packages that invocation builds,
//! dev-dependencies included when it builds tests or benches. If `cargo test` turns on a
//! feature of some crate in reft-sdk's tree that `cargo build` does not, it rebuilds
//! libreft_sdk.so with other symbol hashes and every plugin built by `cargo build` fails to
//! load (`undefined symbol: _ZN11candle_core…`). This test asks cargo, offline and without
//! building, which features each of those commands resolves for every package reft-sdk
//! depends on, and fails naming the package whose features differ.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// `cargo tree` lines `name vX.Y.Z [features]` for one selection of packages and edges.
fn resolved_features(selection: &[&str], edges: &str) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--offline", "--locked", "--prefix", "none", "-f", "{p} [{f}]", "-e", edges])
        .args(selection)
        .output()
        .expect("run cargo tree");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "cargo tree {selection:?} -e {edges} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let mut packages: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in stdout.lines() {
        // `(*)` repeats a package already listed; proc-macros are built for the host and never
        // linked into the library.
        if line.ends_with("(*)") || line.contains("(proc-macro)") || line.trim().is_empty() {
            continue;
        }
        let Some((package, features)) = line.rsplit_once(" [") else { continue };
        let package = package.split(" (").next().unwrap_or(package).to_string();
        packages.entry(package).or_default().insert(features.trim_end_matches(']').to_string());
    }
    packages
}

#[test]
fn every_cargo_command_builds_the_sdk_with_the_same_features() {
    // The packages inside libreft_sdk.so: reft-sdk and its normal dependencies.
    let sdk: BTreeSet<String> = resolved_features(&["-p", "reft-sdk"], "normal").into_keys().collect();
    assert!(sdk.iter().any(|p| p.starts_with("candle-core ")), "reft-sdk's tree lacks candle-core: {sdk:?}");

    // What `cargo build --release` (the default members) resolves: the build the binary and
    // the plugins link against.
    let build = resolved_features(&[], "normal,build");
    let others = [
        ("cargo test --workspace / cargo bench --workspace", resolved_features(&["--workspace"], "normal,build,dev")),
        ("cargo test / cargo bench", resolved_features(&[], "normal,build,dev")),
        ("cargo build --workspace", resolved_features(&["--workspace"], "normal,build")),
    ];
    let mut differences = Vec::new();
    for package in &sdk {
        let built = build.get(package);
        for (command, resolved) in &others {
            let other = resolved.get(package);
            if built != other {
                differences.push(format!("{package}: `cargo build` {built:?}, `{command}` {other:?}"));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "these packages inside libreft_sdk.so get other features from other cargo commands, so those \
         commands relink it and plugins built by `cargo build` stop loading; pin the features in \
         plugins/sdk/Cargo.toml (as it does for getrandom):\n  {}",
        differences.join("\n  ")
    );
}
