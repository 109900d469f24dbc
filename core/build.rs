//! Generates the ONNX protobuf message types (`onnx.proto`, vendored from the PyPI `onnx`
//! 1.23.2 wheel) with prost. protoc comes from `protoc-bin-vendored`, so the build needs no
//! system protoc and no network.

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    emit_build_id();
    let protoc = match protoc_bin_vendored::protoc_bin_path() {
        Ok(p) => p,
        Err(e) => {
            println!("cargo:warning=protoc-bin-vendored has no protoc for this platform: {e}");
            std::process::exit(1);
        }
    };
    // SAFETY-free: build scripts are single-threaded; prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc);
    let mut config = prost_build::Config::new();
    if let Err(e) = config.compile_protos(&["proto/onnx.proto"], &["proto/"]) {
        println!("cargo:warning=cannot generate the ONNX message types: {e}");
        std::process::exit(1);
    }
}

/// `REFT_BUILD_ID`: what a run-time plugin must have been built with (core/src/plugin).
/// Rust has no stable ABI, so the id names everything that changes type layouts or symbol
/// names: reft's version, the exact rustc, candle's version, the target, the profile and
/// the `cuda` feature.
fn emit_build_id() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = std::process::Command::new(&rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "rustc (unknown)".into());
    let id = format!(
        "reft {}; {}; candle {}; {}; {}{}",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
        rustc_version,
        candle_version(),
        std::env::var("TARGET").unwrap_or_default(),
        std::env::var("PROFILE").unwrap_or_default(),
        if std::env::var_os("CARGO_FEATURE_CUDA").is_some() { "; cuda" } else { "" },
    );
    println!("cargo:rustc-env=REFT_BUILD_ID={id}");
    println!("cargo:rerun-if-changed=../Cargo.lock");
    println!("cargo:rerun-if-env-changed=RUSTC");
}

/// candle-core's locked version from the workspace's Cargo.lock (the requirement when the
/// crate is built outside this workspace).
fn candle_version() -> String {
    let lock = std::fs::read_to_string("../Cargo.lock").unwrap_or_default();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"candle-core\"" {
            if let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return v.trim_end_matches('"').to_string();
            }
        }
    }
    "0.11".into()
}
