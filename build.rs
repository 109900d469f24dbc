//! The `reft` binary also looks for its shared libraries (libreft_sdk.so and Rust's libstd,
//! see .cargo/config.toml) in `../lib` beside itself, so `reft install --prefix P` can lay out
//! `P/bin/reft` + `P/lib/*.so` and run from anywhere. Set on the binary alone: rustflags
//! would change every crate's fingerprint and rebuild the whole dependency tree.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN/../lib");
    println!("cargo:rerun-if-changed=build.rs");
}
