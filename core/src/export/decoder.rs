//! The two graphs of a causal-LM pipeline, in the shape of candle's generation
//! ([`crate::generate`]):
//!
//! - **prefill**: the prompt, `input_ids`/`attention_mask`/`position_ids` `[batch, sequence]`,
//!   with the interventions at their hooks (`h + m ⊙ Δ`, `m` from the attention mask) and
//!   mergeable deltas folded into the weights; outputs the logits of each row's last real
//!   token and every layer's keys/values (`present.{i}.key/value`);
//! - **decode step**: new tokens after a cache, with `past.{i}.key/value` in and the grown
//!   cache out, **without interventions**: in candle the hooks apply to the prompt only, so a
//!   generated token costs what it costs without an adapter.
//!
//! A backbone offers this through [`DecoderExport`] (llama: `model/llama/onnx.rs`).

use super::InterventionNodes;
use crate::deploy::{ExportedIntervention, Port};
use crate::error::Result;
use crate::hooks::Site;
use crate::intervention::attach::Interventions;
use crate::onnx::decoder::{layer_name, DecoderExport, DecoderInputs, PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE, POSITION_IDS};
use crate::onnx::proto::{tensor_proto::DataType, ModelProto, ValueInfoProto};
use crate::onnx::{model_of, value_info, ExportHooks, Graph, ATTENTION_MASK, INPUT_IDS, LOGITS};
use candle_core::Tensor;

/// The decode step's hooks: the frozen model, nothing added or merged.
struct Frozen;

impl ExportHooks for Frozen {
    fn representation(&mut self, _: &mut Graph, _: Site, h: String) -> Result<String> {
        Ok(h)
    }
    fn linear_weight(&mut self, _: Site, weight: &Tensor) -> Result<Tensor> {
        Ok(weight.clone())
    }
    fn linear(&mut self, _: &mut Graph, _: Site, _: &str, y: String) -> Result<String> {
        Ok(y)
    }
}

/// Which of the two graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prefill,
    Decode,
}

/// One finished graph with its declared inputs and outputs.
pub struct DecoderGraph {
    pub model: ModelProto,
    pub nodes: usize,
    pub initializer_bytes: usize,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    /// How each intervention entered the graph (empty for the decode step).
    pub interventions: Vec<ExportedIntervention>,
}

/// A dimension of a declared input or output.
enum Dim {
    Fixed(usize),
    Named(&'static str),
}

fn port(name: &str, elem: DataType, dims: &[Dim]) -> (ValueInfoProto, Port) {
    let onnx: Vec<std::result::Result<i64, &str>> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => Ok(*n as i64),
            Dim::Named(s) => Err(*s),
        })
        .collect();
    let dtype = match elem {
        DataType::Int64 => "int64",
        _ => "float32",
    };
    let shape = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Named(s) => s.to_string(),
        })
        .collect();
    (value_info(name, elem, &onnx), Port { name: name.into(), dtype: dtype.into(), shape })
}

/// Build the prefill graph (with `interventions`) or the decode-step graph (without).
pub fn decoder_graph(lm: &dyn DecoderExport, stage: Stage, interventions: &Interventions, int8: bool, doc: &str) -> Result<DecoderGraph> {
    use Dim::{Fixed, Named};
    let geo = lm.geometry();
    let mut g = Graph::new();
    g.int8_frozen = int8;
    let n = geo.num_layers;
    let past: Vec<(String, String)> = (0..n).map(|l| (layer_name(PAST_KEY, l), layer_name(PAST_VALUE, l))).collect();
    let present: Vec<(String, String)> = (0..n).map(|l| (layer_name(PRESENT_KEY, l), layer_name(PRESENT_VALUE, l))).collect();
    for name in [INPUT_IDS, ATTENTION_MASK, POSITION_IDS, LOGITS] {
        g.reserve(name)?;
    }
    for (k, v) in present.iter().chain(if stage == Stage::Decode { &past[..] } else { &[] }) {
        g.reserve(k)?;
        g.reserve(v)?;
    }

    let mask = g.node("Cast", &[ATTENTION_MASK], vec![("to", super::Attr::Int(DataType::Float as i64))]);
    let io = DecoderInputs {
        ids: INPUT_IDS,
        mask: &mask,
        positions: POSITION_IDS,
        past: (stage == Stage::Decode).then_some(&past[..]),
    };
    let (out, report) = match stage {
        Stage::Prefill => {
            let mut hooks = InterventionNodes::new(interventions, &mask)?;
            let out = lm.emit_decoder(&mut g, &io, &mut hooks)?;
            (out, hooks.report())
        }
        Stage::Decode => (lm.emit_decoder(&mut g, &io, &mut Frozen)?, Vec::new()),
    };
    g.output(&out.logits, LOGITS);
    for ((k, v), (pk, pv)) in out.presents.iter().zip(&present) {
        g.output(k, pk);
        g.output(v, pv);
    }

    let (kv, hd) = (geo.num_kv_heads, geo.head_dim);
    // The mask covers the cache and the new tokens: `sequence` in the prefill,
    // `past_sequence + sequence` (named total_sequence) in a decoding step.
    let keys = if stage == Stage::Prefill { "sequence" } else { "total_sequence" };
    let mut inputs = vec![
        port(INPUT_IDS, DataType::Int64, &[Named("batch"), Named("sequence")]),
        port(ATTENTION_MASK, DataType::Int64, &[Named("batch"), Named(keys)]),
        port(POSITION_IDS, DataType::Int64, &[Named("batch"), Named("sequence")]),
    ];
    if stage == Stage::Decode {
        for (k, v) in &past {
            inputs.push(port(k, DataType::Float, &[Named("batch"), Fixed(kv), Named("past_sequence"), Fixed(hd)]));
            inputs.push(port(v, DataType::Float, &[Named("batch"), Fixed(kv), Named("past_sequence"), Fixed(hd)]));
        }
    }
    let mut outputs = vec![port(LOGITS, DataType::Float, &[Named("batch"), Fixed(geo.vocab_size)])];
    for (k, v) in &present {
        outputs.push(port(k, DataType::Float, &[Named("batch"), Fixed(kv), Named(keys), Fixed(hd)]));
        outputs.push(port(v, DataType::Float, &[Named("batch"), Fixed(kv), Named(keys), Fixed(hd)]));
    }
    let (nodes, initializer_bytes) = (g.num_nodes(), g.initializer_bytes());
    let (in_info, in_ports): (Vec<_>, Vec<_>) = inputs.into_iter().unzip();
    let (out_info, out_ports): (Vec<_>, Vec<_>) = outputs.into_iter().unzip();
    let model = model_of(g, in_info, out_info, doc);
    Ok(DecoderGraph { model, nodes, initializer_bytes, inputs: in_ports, outputs: out_ports, interventions: report })
}
