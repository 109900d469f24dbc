//! Running exported pipelines. [`ort`] runs a pipeline folder with ONNX Runtime, loaded at
//! run time from the library `reft setup` installs (or `ORT_DYLIB_PATH`).

pub mod ort;

pub use self::ort::{library_path, OrtPipeline, ORT_DYLIB_ENV};
