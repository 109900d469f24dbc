//! Running exported pipelines. [`ort`] runs a pipeline folder with ONNX Runtime, loaded at
//! run time from the library `reft setup` installs (or `ORT_DYLIB_PATH`); [`decoder`] runs
//! a causal-LM pipeline (prefill + decode-step graphs with a KV cache) to generate text.

pub mod decoder;
pub mod ort;

#[cfg(test)]
mod export_tests;

pub use self::decoder::{OrtCache, OrtDecoder};
pub use self::ort::{library_path, OrtPipeline, ORT_DYLIB_ENV};
