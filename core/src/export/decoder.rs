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
use crate::onnx::decoder::{layer_name, DecoderExport, DecoderInputs, GENAI_PAST_KEY, GENAI_PAST_VALUE, PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE, POSITION_IDS};
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

/// Which graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prefill,
    Decode,
    /// The one graph ONNX Runtime GenAI runs for every step: the cache comes in (with no
    /// positions at the prefill), the interventions apply only when it is empty (the
    /// prefill, as in candle), and the logits are `[batch, 1, vocab]` (the last token's).
    Genai,
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

/// The mask the interventions of a GenAI graph see: the new tokens' attention mask while the
/// cache is empty (the prefill), zeros at every later step, so an adapter edits the prompt
/// only, as `reft generate` does. (A decoding step still evaluates the intervention nodes on
/// its one token, multiplied by zero; docs/export.md has what that costs.)
fn prefill_only(g: &mut Graph, mask: &str, first_past_key: &str) -> String {
    let s = g.node("Shape", &[INPUT_IDS], vec![("start", super::Attr::Int(1)), ("end", super::Attr::Int(2))]);
    let start = g.node("Neg", &[&s], vec![]);
    let end = g.const_i64("const_i64_max", &[1], &[i64::MAX]);
    let axes = g.const_i64("const_axes_1", &[1], &[1]);
    let new_tokens = g.node("Slice", &[mask, &start, &end, &axes], vec![]);
    let cached = g.node("Shape", &[first_past_key], vec![("start", super::Attr::Int(2)), ("end", super::Attr::Int(3))]);
    let zero = g.const_i64("const_i64_0_1d", &[1], &[0]);
    let empty = g.node("Equal", &[&cached, &zero], vec![]);
    let gate = g.node("Cast", &[&empty], vec![("to", super::Attr::Int(DataType::Float as i64))]);
    g.mul(&new_tokens, &gate)
}

/// A GenAI graph runs every step with the same weights, so a delta folded into a weight (or
/// added at a linear module) would act on generated tokens too, where `reft generate` applies
/// it to the prompt only: refused by name rather than exported with another meaning.
fn refuse_linear_hooks(interventions: &Interventions) -> Result<()> {
    match interventions.items.iter().find(|a| a.site.kind() == crate::hooks::HookKind::Linear) {
        Some(a) => Err(crate::error::Error::Other(format!(
            "--format genai: intervention `{}` ({}) sits at the linear module `{}`; reft applies it to the prompt only, \
             and a GenAI graph would fold it into weights every generated token uses. Export this adapter with the \
             default format (`reft generate --runtime ort`), or keep its interventions at representation hooks",
            a.name,
            a.module.kind(),
            a.site
        ))),
        None => Ok(()),
    }
}

/// Build the prefill graph (with `interventions`), the decode-step graph (without), or the
/// single GenAI graph (with them, gated to the prefill).
pub fn decoder_graph(lm: &dyn DecoderExport, stage: Stage, interventions: &Interventions, int8: bool, doc: &str) -> Result<DecoderGraph> {
    use Dim::{Fixed, Named};
    let geo = lm.geometry();
    let mut g = Graph::new();
    g.int8_frozen = int8;
    let n = geo.num_layers;
    let (past_key, past_value) = if stage == Stage::Genai { (GENAI_PAST_KEY, GENAI_PAST_VALUE) } else { (PAST_KEY, PAST_VALUE) };
    let past: Vec<(String, String)> = (0..n).map(|l| (layer_name(past_key, l), layer_name(past_value, l))).collect();
    let present: Vec<(String, String)> = (0..n).map(|l| (layer_name(PRESENT_KEY, l), layer_name(PRESENT_VALUE, l))).collect();
    for name in [INPUT_IDS, ATTENTION_MASK, POSITION_IDS, LOGITS] {
        g.reserve(name)?;
    }
    let cached = stage != Stage::Prefill;
    for (k, v) in present.iter().chain(if cached { &past[..] } else { &[] }) {
        g.reserve(k)?;
        g.reserve(v)?;
    }

    let mask = g.node("Cast", &[ATTENTION_MASK], vec![("to", super::Attr::Int(DataType::Float as i64))]);
    let io = DecoderInputs {
        ids: INPUT_IDS,
        mask: &mask,
        positions: POSITION_IDS,
        past: cached.then_some(&past[..]),
    };
    let (out, report) = match stage {
        Stage::Prefill => {
            let mut hooks = InterventionNodes::new(interventions, &mask)?;
            let out = lm.emit_decoder(&mut g, &io, &mut hooks)?;
            (out, hooks.report())
        }
        Stage::Decode => (lm.emit_decoder(&mut g, &io, &mut Frozen)?, Vec::new()),
        Stage::Genai => {
            refuse_linear_hooks(interventions)?;
            let gated = prefill_only(&mut g, &mask, &past[0].0);
            let mut hooks = InterventionNodes::new(interventions, &gated)?;
            let out = lm.emit_decoder(&mut g, &io, &mut hooks)?;
            (out, hooks.report())
        }
    };
    let logits = if stage == Stage::Genai {
        let axes = g.const_i64("const_axes_1", &[1], &[1]);
        g.node("Unsqueeze", &[&out.logits, &axes], vec![])
    } else {
        out.logits.clone()
    };
    g.output(&logits, LOGITS);
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
    if cached {
        for (k, v) in &past {
            inputs.push(port(k, DataType::Float, &[Named("batch"), Fixed(kv), Named("past_sequence"), Fixed(hd)]));
            inputs.push(port(v, DataType::Float, &[Named("batch"), Fixed(kv), Named("past_sequence"), Fixed(hd)]));
        }
    }
    // GenAI reads a fixed 1 in the middle as "the graph gives the last token's logits only".
    let logits_dims: &[Dim] = if stage == Stage::Genai { &[Named("batch"), Fixed(1), Fixed(geo.vocab_size)] } else { &[Named("batch"), Fixed(geo.vocab_size)] };
    let mut outputs = vec![port(LOGITS, DataType::Float, logits_dims)];
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
