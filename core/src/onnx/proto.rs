//! The ONNX protobuf messages, generated at build time by prost from the official
//! `onnx.proto` (vendored in `core/proto/`, from the PyPI `onnx` 1.23.2 wheel).

#![allow(clippy::all, missing_docs, rustdoc::all)]
include!(concat!(env!("OUT_DIR"), "/onnx.rs"));

/// ONNX IR version written: 8 is the IR of opset 17 (onnx 1.12), read by every ONNX Runtime
/// since 1.12 and by the checker.
pub const IR_VERSION: i64 = 8;
/// The default-domain opset the graph is written against (LayerNormalization needs ≥ 17).
pub const OPSET: i64 = 17;
