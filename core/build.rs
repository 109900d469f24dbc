//! Generates the ONNX protobuf message types (`onnx.proto`, vendored from the PyPI `onnx`
//! 1.23.2 wheel) with prost. protoc comes from `protoc-bin-vendored`, so the build needs no
//! system protoc and no network.

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
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
