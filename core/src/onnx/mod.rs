//! The ONNX vocabulary every layer may write in: the protobuf messages ([`proto`]), the
//! [`Graph`] builder, int8 weights ([`quantize`]), the trait a backbone calls at each hook
//! point while it writes its nodes ([`ExportHooks`]), and what a decoder must offer to be
//! exported as prefill + decode-step graphs ([`decoder`]).
//!
//! It sits below the backbones and the `Intervention` trait, so each backbone writes its
//! own nodes beside its candle forward (`model/bert/onnx.rs`, `model/llama/onnx.rs`) and
//! each plugin its own (`Intervention::to_onnx`); `crate::export` only assembles pipelines.

pub mod decoder;
pub mod graph;
pub mod proto;
pub mod quantize;
pub mod shared_data;

pub use decoder::{DecoderExport, DecoderGeometry, POSITION_IDS};
pub use graph::{Attr, Graph};

use crate::error::{Error, Result};
use crate::hooks::Site;
use candle_core::Tensor;
use prost::Message;
use proto::{tensor_proto, type_proto, ModelProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto};
use std::path::{Path, PathBuf};

/// Names of the graph's inputs and output.
pub const INPUT_IDS: &str = "input_ids";
pub const ATTENTION_MASK: &str = "attention_mask";
pub const LOGITS: &str = "logits";

/// What a backbone's export calls at each hook point (the export-time twin of
/// [`crate::hooks::Hooks`]).
pub trait ExportHooks {
    /// A representation hook: return the name of the (possibly edited) hidden state.
    fn representation(&mut self, g: &mut Graph, site: Site, h: String) -> Result<String>;
    /// The weight `[out, in]` to write for the linear module at `site`: the frozen one with
    /// every mergeable intervention's delta added.
    fn linear_weight(&mut self, site: Site, weight: &Tensor) -> Result<Tensor>;
    /// A linear-module hook: `x` its input, `y` its output; add non-mergeable interventions.
    fn linear(&mut self, g: &mut Graph, site: Site, x: &str, y: String) -> Result<String>;
    /// Whether layer `layer` may be emitted for the first token of each row alone (the graph
    /// twin of `Hooks::first_token_suffices`): no hook there edits the layer's input. The
    /// hooks after attention are then called through `first_token_representation`, and the
    /// query's linear hook with the first tokens' input. The default answers no.
    fn first_token_suffices(&self, _layer: usize) -> bool {
        false
    }
    /// A representation hook on the first tokens alone, `h` `[batch, 1, hidden]`: each row's
    /// position 0 is edited as the full hook would edit it.
    fn first_token_representation(&mut self, g: &mut Graph, site: Site, h: String) -> Result<String> {
        let _ = (g, site);
        if self.first_token_suffices(site.layer.unwrap_or(0)) {
            Ok(h)
        } else {
            Err(Error::Other(format!("internal: first-token states reached `{site}`, which has hooks")))
        }
    }
}

/// Column 0 of a `[batch, seq, ...]` value: `[batch, 1, ...]`.
pub fn first_token(g: &mut Graph, x: &str) -> String {
    let zero = g.const_i64("const_i64_0_1d", &[1], &[0]);
    let one = g.const_i64("const_i64_1_1d", &[1], &[1]);
    g.node("Slice", &[x, &zero, &one, &one], vec![])
}

/// A graph input or output declaration: element type and dims (`Ok(n)` fixed, `Err("batch")`
/// a named dynamic axis).
pub fn value_info(name: &str, elem: tensor_proto::DataType, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    use proto::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Ok(v) => Value::DimValue(*v),
                Err(p) => Value::DimParam(p.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Any graph as an ONNX model with the given inputs and outputs (opset 17, IR 8).
pub fn model_of(g: Graph, inputs: Vec<ValueInfoProto>, outputs: Vec<ValueInfoProto>, doc: &str) -> ModelProto {
    let graph = proto::GraphProto {
        node: g.nodes,
        name: Some("reft_pipeline".into()),
        initializer: g.initializers,
        input: inputs,
        output: outputs,
        doc_string: Some(doc.to_string()),
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(proto::IR_VERSION),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(proto::OPSET) }],
        producer_name: Some("reft".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    }
}

/// The serialized model (protobuf bytes), e.g. to hand to ONNX Runtime from memory.
pub fn model_bytes(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Protobuf messages cannot pass 2 GiB; past this many initializer bytes the weights go to
/// an external data file beside the model.
pub const EXTERNAL_DATA_THRESHOLD: usize = (1usize << 31) - (64 << 20);

/// Initializers smaller than this stay inside the model file even with external data (as
/// `onnx.external_data_helper` does).
const EXTERNAL_MIN_BYTES: usize = 1024;

/// Write `model` to `path` atomically. When its initializers pass `external_threshold`
/// bytes, they move to `<file name>.data` beside it (ONNX external data, offsets 64-byte
/// aligned; tensors under 1 KiB stay inline) and the model keeps only their locations. Returns the files written.
pub fn write_model(model: &mut ModelProto, path: &Path, external_threshold: usize) -> Result<Vec<PathBuf>> {
    let graph = model.graph.as_mut().ok_or_else(|| Error::Other("ONNX model without a graph".into()))?;
    let bytes: usize = graph.initializer.iter().map(|t| t.raw_data.as_ref().map_or(0, |d| d.len())).sum();
    let mut written = Vec::new();
    if bytes > external_threshold {
        let file_name = format!("{}.data", path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.onnx".into()));
        let data_path = path.with_file_name(&file_name);
        let mut data = Vec::with_capacity(bytes + 64 * graph.initializer.len());
        for t in graph.initializer.iter_mut() {
            // Small tensors (shapes, axes, scalars) stay inline: shape inference reads them.
            if t.raw_data.as_ref().is_none_or(|d| d.len() < EXTERNAL_MIN_BYTES) {
                continue;
            }
            let Some(raw) = t.raw_data.take() else { continue };
            while data.len() % 64 != 0 {
                data.push(0);
            }
            let entry = |k: &str, v: String| proto::StringStringEntryProto { key: Some(k.into()), value: Some(v) };
            t.external_data = vec![
                entry("location", file_name.clone()),
                entry("offset", data.len().to_string()),
                entry("length", raw.len().to_string()),
            ];
            t.data_location = Some(tensor_proto::DataLocation::External as i32);
            data.extend_from_slice(&raw);
        }
        crate::io::write_atomic(&data_path, &data)?;
        written.push(data_path);
    }
    crate::io::write_atomic(path, &model.encode_to_vec())?;
    written.insert(0, path.to_path_buf());
    Ok(written)
}
