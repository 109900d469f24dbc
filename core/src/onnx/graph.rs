//! A small builder for ONNX graphs: fresh value names, weights as initializers, nodes.
//!
//! Plugins export through it ([`crate::intervention::Intervention::to_onnx`]), so each
//! plugin's export is a few lines: `g.linear(x, &w, Some(&b))`, `g.node("Tanh", &[&x], vec![])`.
//! Every name a plugin asks for is prefixed with the current scope (the intervention's name,
//! `interventions.layer_2_block_output_0.`), so initializers stay readable and unique.

use super::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto, TensorProto,
};
use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use std::collections::{HashMap, HashSet};

/// A node attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// The graph being written: nodes in topological order, initializers, names in use.
#[derive(Default)]
pub struct Graph {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<TensorProto>,
    names: HashSet<String>,
    scope: Vec<String>,
    /// Scalar constants shared across the graph, by bit pattern.
    scalars: HashMap<u32, String>,
    /// Write the backbone's frozen linear modules as dynamic int8 matmuls
    /// ([`super::quantize`]); interventions and the head stay float32.
    pub(crate) int8_frozen: bool,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserve a name (a graph input, say) so no fresh name collides with it.
    pub fn reserve(&mut self, name: &str) -> Result<()> {
        if !self.names.insert(name.to_string()) {
            return Err(Error::Other(format!("ONNX export: the name `{name}` is used twice")));
        }
        Ok(())
    }

    /// A new unique value name: `<scope>.<hint>`, with a numeric suffix when taken.
    pub fn fresh(&mut self, hint: &str) -> String {
        let base = match self.scope.last() {
            Some(s) => format!("{s}.{hint}"),
            None => hint.to_string(),
        };
        if self.names.insert(base.clone()) {
            return base;
        }
        let mut i = 1;
        loop {
            let name = format!("{base}_{i}");
            if self.names.insert(name.clone()) {
                return name;
            }
            i += 1;
        }
    }

    /// Run `f` with names prefixed by `scope` (nested scopes join with `.`).
    pub fn scoped<R>(&mut self, scope: &str, f: impl FnOnce(&mut Graph) -> Result<R>) -> Result<R> {
        let full = match self.scope.last() {
            Some(s) => format!("{s}.{scope}"),
            None => scope.to_string(),
        };
        self.scope.push(full);
        let out = f(self);
        self.scope.pop();
        out
    }

    /// Number of nodes written so far.
    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Bytes of initializer data so far.
    pub fn initializer_bytes(&self) -> usize {
        self.initializers.iter().map(|t| t.raw_data.as_ref().map_or(0, |d| d.len())).sum()
    }

    // ---- initializers ----

    /// A float initializer holding `t` (any float dtype; stored as f32).
    pub fn weight(&mut self, hint: &str, t: &Tensor) -> Result<String> {
        let dims: Vec<i64> = t.dims().iter().map(|&d| d as i64).collect();
        let data: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        Ok(self.const_f32(hint, &dims, &data))
    }

    /// `w` `[out, in]` stored transposed, `[in, out]`, ready for `MatMul(x, ·)`.
    pub fn weight_t(&mut self, hint: &str, w: &Tensor) -> Result<String> {
        let t = w.t()?.contiguous()?;
        self.weight(hint, &t)
    }

    pub fn const_f32(&mut self, hint: &str, dims: &[i64], data: &[f32]) -> String {
        let name = self.fresh(hint);
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            raw_data: Some(raw),
            ..Default::default()
        });
        name
    }

    /// An int8 initializer (quantized weights).
    pub fn const_i8(&mut self, hint: &str, dims: &[i64], data: &[i8]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Int8 as i32),
            raw_data: Some(data.iter().map(|&v| v as u8).collect()),
            ..Default::default()
        });
        name
    }

    pub fn const_i64(&mut self, hint: &str, dims: &[i64], data: &[i64]) -> String {
        let name = self.fresh(hint);
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Int64 as i32),
            raw_data: Some(raw),
            ..Default::default()
        });
        name
    }

    /// A float scalar constant (shared: asking twice for one value gives one initializer).
    pub fn scalar(&mut self, v: f32) -> String {
        if let Some(n) = self.scalars.get(&v.to_bits()) {
            return n.clone();
        }
        // Scalars live outside any scope: they are shared.
        let saved = std::mem::take(&mut self.scope);
        let name = self.const_f32(&format!("const_{}", format_scalar(v)), &[], &[v]);
        self.scope = saved;
        self.scalars.insert(v.to_bits(), name.clone());
        name
    }

    // ---- nodes ----

    /// Append a node of `op` with one output; returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.node_into(op, inputs, &out, attrs);
        out
    }

    /// Append a node with `n` outputs; returns their names.
    pub fn node_multi(&mut self, op: &str, inputs: &[&str], n: usize, attrs: Vec<(&str, Attr)>) -> Vec<String> {
        let outs: Vec<String> = (0..n).map(|i| self.fresh(&format!("{}_{i}", op.to_ascii_lowercase()))).collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.clone(),
            name: Some(format!("{}/{op}", outs[0])),
            op_type: Some(op.to_string()),
            attribute: attrs.into_iter().map(|(n, a)| attribute(n, a)).collect(),
            ..Default::default()
        });
        outs
    }

    /// Append a node whose single output has a chosen name (graph outputs).
    pub fn node_into(&mut self, op: &str, inputs: &[&str], output: &str, attrs: Vec<(&str, Attr)>) {
        let node_name = format!("{output}/{op}");
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: Some(node_name),
            op_type: Some(op.to_string()),
            attribute: attrs.into_iter().map(|(n, a)| attribute(n, a)).collect(),
            ..Default::default()
        });
    }

    /// Make the value `value` available as the graph output `output` (a reserved name): the
    /// node that computes it is renamed to write `output` directly, because an `Identity`
    /// into a graph output is a real copy in ONNX Runtime (a KV cache's worth per layer and
    /// step). A value that no node computes (an input, an initializer, or one already
    /// renamed) gets the `Identity` instead.
    pub fn output(&mut self, value: &str, output: &str) {
        let produced = self.nodes.iter().any(|n| n.output.iter().any(|o| o == value));
        if !produced || !self.names.contains(output) {
            self.node_into("Identity", &[value], output, vec![]);
            return;
        }
        for n in &mut self.nodes {
            for name in n.output.iter_mut().chain(n.input.iter_mut()) {
                if name == value {
                    *name = output.to_string();
                }
            }
        }
    }

    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], vec![])
    }
    pub fn sub(&mut self, a: &str, b: &str) -> String {
        self.node("Sub", &[a, b], vec![])
    }
    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.node("Mul", &[a, b], vec![])
    }
    pub fn matmul(&mut self, a: &str, b: &str) -> String {
        self.node("MatMul", &[a, b], vec![])
    }

    /// `x Wᵀ + b` for `x` `[..., in]` and `w` `[out, in]` (PyTorch layout), as MatMul + Add.
    pub fn linear(&mut self, hint: &str, x: &str, w: &Tensor, b: Option<&Tensor>) -> Result<String> {
        let wt = self.weight_t(&format!("{hint}.weight_t"), w)?;
        let y = self.matmul(x, &wt);
        Ok(match b {
            Some(b) => {
                let bn = self.weight(&format!("{hint}.bias"), b)?;
                self.add(&y, &bn)
            }
            None => y,
        })
    }

    /// Exact GELU, `0.5·x·(1 + erf(x/√2))` (opset 17 has no Gelu op; ONNX Runtime fuses this).
    pub fn gelu_erf(&mut self, x: &str) -> String {
        let s = self.scalar(std::f32::consts::SQRT_2);
        let scaled = self.node("Div", &[x, &s], vec![]);
        let e = self.node("Erf", &[&scaled], vec![]);
        let one = self.scalar(1.0);
        let e1 = self.add(&e, &one);
        let xe = self.mul(x, &e1);
        let half = self.scalar(0.5);
        self.mul(&xe, &half)
    }

    /// Tanh-approximated GELU (`gelu_new`), as candle's `gelu`.
    pub fn gelu_tanh(&mut self, x: &str) -> String {
        // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
        let x3 = {
            let x2 = self.mul(x, x);
            self.mul(&x2, x)
        };
        let c = self.scalar(0.044715);
        let cx3 = self.mul(&x3, &c);
        let inner = self.add(x, &cx3);
        let k = self.scalar((2.0f32 / std::f32::consts::PI).sqrt());
        let inner = self.mul(&inner, &k);
        let t = self.node("Tanh", &[&inner], vec![]);
        let one = self.scalar(1.0);
        let t1 = self.add(&t, &one);
        let xt = self.mul(x, &t1);
        let half = self.scalar(0.5);
        self.mul(&xt, &half)
    }
}

fn format_scalar(v: f32) -> String {
    format!("{v}").replace('-', "m").replace('.', "_")
}

fn attribute(name: &str, a: Attr) -> AttributeProto {
    let mut p = AttributeProto { name: Some(name.to_string()), ..Default::default() };
    match a {
        Attr::Int(i) => {
            p.r#type = Some(AttributeType::Int as i32);
            p.i = Some(i);
        }
        Attr::Ints(v) => {
            p.r#type = Some(AttributeType::Ints as i32);
            p.ints = v;
        }
        Attr::Float(f) => {
            p.r#type = Some(AttributeType::Float as i32);
            p.f = Some(f);
        }
    }
    p
}
