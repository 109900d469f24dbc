//! Export: a backbone with its interventions and head as one ONNX graph, and the deployment
//! pipeline around it (`model.onnx`, `tokenizer.json`, `pipeline.yaml`).
//!
//! The graph vocabulary (messages, the [`Graph`] builder, [`ExportHooks`]) is
//! [`crate::onnx`]; each backbone writes its own nodes (`model/bert/onnx.rs`,
//! `model/llama/onnx.rs`). Here:
//!
//! - [`decoder`]: the two graphs of a causal-LM pipeline and their inputs and outputs.
//! - [`pipeline`]: the artifact folder and `pipeline.yaml`; [`lm_pipeline`] its causal-LM
//!   form, whose two graphs share one weight file ([`shared_data`]); [`genai`] a decoder as
//!   the folder ONNX Runtime GenAI loads.
//!
//! Interventions become graph nodes the way [`crate::intervention::attach`] applies them in candle: at a
//! representation hook `h' = h + m ⊙ Δ(h)` with the position mask `m` computed inside the
//! graph from the attention mask; at a linear-module hook a mergeable delta (LoRA's `s·B·A`)
//! is folded into the frozen weight, and any other intervention's output is added to the
//! module's output.

pub mod decoder;
pub mod genai;
pub mod lm_pipeline;
pub mod pipeline;

pub use genai::{export_genai, GenaiReport};
pub use lm_pipeline::{export_base_model, export_causal_lm, with_base_model, CausalExportInput};
pub use pipeline::{causal_lm_input, export_adapter, export_pipeline, ExportInput, ExportOptions, ExportReport};

use crate::deploy::ExportedIntervention;
use crate::error::{Error, Result};
use crate::hooks::positions::Positions;
use crate::hooks::{HookKind, Site};
use crate::intervention::attach::Interventions;
use crate::model::Backbone;
use crate::onnx::proto::{tensor_proto, ModelProto};
use crate::onnx::{first_token, model_of, value_info, Attr, ExportHooks, Graph, ATTENTION_MASK, INPUT_IDS, LOGITS};
use crate::recipe::Pooling;
use crate::task::classification::ClassifierHead;
use candle_core::Tensor;
use std::collections::HashMap;

/// The position mask `[batch, seq, 1]` of `positions`, from the float attention mask
/// `[batch, seq]` — the graph form of [`Positions::mask_rows`]: first/last k count over the
/// real tokens of each row, so left and right padding both work.
pub fn position_mask(g: &mut Graph, mask: &str, positions: Positions) -> String {
    let m = match positions {
        Positions::All => mask.to_string(),
        Positions::Ends { first, last } => {
            let axis = g.const_i64("const_axis_1", &[], &[1]);
            // rank of each real token counted from the start (1-based); pads repeat the last.
            let cum = g.node("CumSum", &[mask, &axis], vec![]);
            let mut parts = Vec::new();
            if first > 0 {
                let k = g.scalar(first as f32 + 0.5);
                let lt = g.node("Less", &[&cum, &k], vec![]);
                let f = g.node("Cast", &[&lt], vec![("to", Attr::Int(tensor_proto::DataType::Float as i64))]);
                parts.push(g.mul(&f, mask));
            }
            if last > 0 {
                let axes = g.const_i64("const_axes_1", &[1], &[1]);
                let count = g.node("ReduceSum", &[mask, &axes], vec![("keepdims", Attr::Int(1))]);
                // real tokens after this one: count − rank; the last k have fewer than k.
                let after = g.sub(&count, &cum);
                let k = g.scalar(last as f32 - 0.5);
                let lt = g.node("Less", &[&after, &k], vec![]);
                let l = g.node("Cast", &[&lt], vec![("to", Attr::Int(tensor_proto::DataType::Float as i64))]);
                parts.push(g.mul(&l, mask));
            }
            match &parts[..] {
                [one] => one.clone(),
                [a, b] => g.node("Max", &[a, b], vec![]),
                _ => mask.to_string(),
            }
        }
    };
    let axes = g.const_i64("const_axes_2", &[1], &[2]);
    g.node("Unsqueeze", &[&m, &axes], vec![])
}

/// [`ExportHooks`] for a set of attached interventions.
struct InterventionNodes<'a> {
    items: &'a Interventions,
    by_site: HashMap<Site, Vec<usize>>,
    masks: HashMap<String, String>,
    merged: HashMap<usize, Tensor>,
    float_mask: String,
}

impl<'a> InterventionNodes<'a> {
    fn new(items: &'a Interventions, float_mask: &str) -> Result<Self> {
        let mut by_site: HashMap<Site, Vec<usize>> = HashMap::new();
        let mut merged = HashMap::new();
        for (i, a) in items.items.iter().enumerate() {
            by_site.entry(a.site).or_default().push(i);
            if a.site.kind() == HookKind::Linear {
                if let Some(d) = a.module.merged_weight_delta()? {
                    merged.insert(i, d);
                }
            }
        }
        Ok(InterventionNodes { items, by_site, masks: HashMap::new(), merged, float_mask: float_mask.to_string() })
    }

    fn mask(&mut self, g: &mut Graph, p: Positions) -> String {
        let key = p.to_string();
        if let Some(m) = self.masks.get(&key) {
            return m.clone();
        }
        let m = g.scoped(&format!("positions_{}", key.replace('+', "_")), |g| Ok(position_mask(g, &self.float_mask, p))).expect("infallible");
        self.masks.insert(key, m.clone());
        m
    }

    /// `h' = h + m ⊙ Δ(h)` for each intervention at `site` (unedited positions keep `h`
    /// exactly); with `first_token_only`, `h` holds position 0 alone and `m` is cut to it.
    fn edit(&mut self, g: &mut Graph, site: Site, mut h: String, first_token_only: bool) -> Result<String> {
        let Some(list) = self.by_site.get(&site).cloned() else { return Ok(h) };
        for i in list {
            let mask = self.mask(g, self.items.items[i].positions);
            let mask = if first_token_only { first_token(g, &mask) } else { mask };
            let delta = self.emit(g, i, &h)?;
            let masked = g.mul(&delta, &mask);
            h = g.add(&h, &masked);
        }
        Ok(h)
    }

    fn emit(&self, g: &mut Graph, i: usize, input: &str) -> Result<String> {
        let a = &self.items.items[i];
        g.scoped(&format!("interventions.{}", a.name), |g| a.module.to_onnx(g, input)).map_err(|e| match e {
            Error::Plugin(m) => Error::Plugin(format!("intervention `{}` at `{}`: {m}", a.name, a.site)),
            other => Error::Other(format!("ONNX export of intervention `{}` ({}) at `{}`: {other}", a.name, a.module.kind(), a.site)),
        })
    }

    fn report(&self) -> Vec<ExportedIntervention> {
        self.items
            .items
            .iter()
            .enumerate()
            .map(|(i, a)| ExportedIntervention {
                name: a.name.clone(),
                kind: a.module.kind().to_string(),
                hook: a.site.to_string(),
                positions: a.positions.to_string(),
                exported_as: if self.merged.contains_key(&i) { "merged" } else { "nodes" }.into(),
            })
            .collect()
    }
}

impl ExportHooks for InterventionNodes<'_> {
    fn representation(&mut self, g: &mut Graph, site: Site, h: String) -> Result<String> {
        self.edit(g, site, h, false)
    }

    fn linear_weight(&mut self, site: Site, weight: &Tensor) -> Result<Tensor> {
        let mut w = weight.clone();
        for i in self.by_site.get(&site).into_iter().flatten() {
            if let Some(d) = self.merged.get(i) {
                if d.dims() != w.dims() {
                    let a = &self.items.items[*i];
                    return Err(Error::Shape {
                        context: format!("merged weight delta of `{}` ({}) at `{}`", a.name, a.module.kind(), a.site),
                        expected: format!("{:?}", w.dims()),
                        got: d.dims().to_vec(),
                    });
                }
                w = (w + d.to_dtype(weight.dtype())?)?;
            }
        }
        Ok(w)
    }

    fn first_token_suffices(&self, layer: usize) -> bool {
        !self.by_site.keys().any(|site| site.layer == Some(layer) && site.component == crate::hooks::Component::BlockInput)
    }

    /// The full hook's edit at position 0: the same Δ on the first-token states, with the
    /// position mask's column 0 (so a row whose selected tokens exclude position 0, under
    /// left padding for example, keeps its first token unedited, as the full graph would).
    fn first_token_representation(&mut self, g: &mut Graph, site: Site, h: String) -> Result<String> {
        self.edit(g, site, h, true)
    }

    fn linear(&mut self, g: &mut Graph, site: Site, x: &str, mut y: String) -> Result<String> {
        let Some(list) = self.by_site.get(&site).cloned() else { return Ok(y) };
        for i in list {
            if self.merged.contains_key(&i) {
                continue;
            }
            let delta = self.emit(g, i, x)?;
            y = g.add(&y, &delta);
        }
        Ok(y)
    }
}

/// A finished classification graph.
pub struct ClassifierGraph {
    pub graph: Graph,
    pub num_labels: usize,
    pub interventions: Vec<ExportedIntervention>,
}

/// Backbone + interventions + head as one graph: `input_ids`, `attention_mask` (int64
/// `[batch, sequence]`) to `logits` (float `[batch, num_labels]`).
pub fn classifier_graph(backbone: &dyn Backbone, interventions: &Interventions, head: &ClassifierHead, int8: bool) -> Result<ClassifierGraph> {
    let mut g = Graph::new();
    g.int8_frozen = int8;
    g.reserve(INPUT_IDS)?;
    g.reserve(ATTENTION_MASK)?;
    g.reserve(LOGITS)?;
    let mask = g.node("Cast", &[ATTENTION_MASK], vec![("to", Attr::Int(tensor_proto::DataType::Float as i64))]);
    let mut hooks = InterventionNodes::new(interventions, &mask)?;
    // [CLS] pooling reads the first token alone, and the backbone may skip the rest.
    let hidden = match head.pooling {
        Pooling::Cls => backbone.to_onnx_first_token(&mut g, INPUT_IDS, &mask, &mut hooks)?,
        Pooling::Mean => backbone.to_onnx(&mut g, INPUT_IDS, &mask, &mut hooks)?,
    };
    let pooled = match head.pooling {
        Pooling::Cls => match backbone.pool_first_onnx(&mut g, &hidden)? {
            Some(p) => p,
            None => {
                let idx = g.const_i64("const_i64_0", &[], &[0]);
                g.node("Gather", &[&hidden, &idx], vec![("axis", Attr::Int(1))])
            }
        },
        Pooling::Mean => {
            let axes = g.const_i64("const_axes_2", &[1], &[2]);
            let m = g.node("Unsqueeze", &[&mask, &axes], vec![]);
            let hm = g.mul(&hidden, &m);
            let axes1 = g.const_i64("const_axes_1", &[1], &[1]);
            let sum = g.node("ReduceSum", &[&hm, &axes1], vec![("keepdims", Attr::Int(0))]);
            let count = g.node("ReduceSum", &[&m, &axes1], vec![("keepdims", Attr::Int(0))]);
            g.node("Div", &[&sum, &count], vec![])
        }
    };
    let logits = g.linear("head", &pooled, head.weight.as_tensor(), Some(head.bias.as_tensor()))?;
    g.node_into("Identity", &[&logits], LOGITS, vec![]);
    Ok(ClassifierGraph { graph: g, num_labels: head.weight.dims()[0], interventions: hooks.report() })
}

/// The ONNX model around a classification graph (opset 17, dynamic batch and sequence).
pub fn model_proto(c: ClassifierGraph, doc: &str) -> ModelProto {
    use tensor_proto::DataType;
    let inputs = vec![
        value_info(INPUT_IDS, DataType::Int64, &[Err("batch"), Err("sequence")]),
        value_info(ATTENTION_MASK, DataType::Int64, &[Err("batch"), Err("sequence")]),
    ];
    let outputs = vec![value_info(LOGITS, DataType::Float, &[Err("batch"), Ok(c.num_labels as i64)])];
    model_of(c.graph, inputs, outputs, doc)
}

