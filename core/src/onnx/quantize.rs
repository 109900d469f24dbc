//! Optional dynamic int8 quantization of the frozen backbone's linear modules
//! (`reft export --quantize int8`): weights int8, symmetric per output column; activations
//! quantized to uint8 per tensor at run time. Written in the standard-ops pattern ONNX
//! Runtime fuses into its `DynamicQuantizeMatMul` (u8×s8 kernels: VNNI/AMX where the CPU has
//! them):
//!
//! ```text
//! x ─ DynamicQuantizeLinear ─(xq, xs, xz)─ MatMulInteger(xq, Wq, xz) ─ Cast ─ Mul ─ Add(b)
//!                               xs ────────── Mul(xs, w_scale) ──────────────┘
//! ```
//!
//! Interventions, LayerNorms, attention and the head stay float32. Logits then differ from
//! candle's by quantization error (not ≤ 1e-4): docs/export.md gives the accuracy it costs.

use super::graph::{Attr, Graph};
use super::proto::tensor_proto::DataType;
use crate::error::Result;
use candle_core::{DType, Tensor};

/// `x Wᵀ + b` with `W` `[out, in]` quantized to int8.
pub fn linear_int8(g: &mut Graph, hint: &str, x: &str, w: &Tensor, b: Option<&Tensor>) -> Result<String> {
    let (out_dim, in_dim) = w.dims2()?;
    let wt: Vec<Vec<f32>> = w.to_dtype(DType::F32)?.t()?.contiguous()?.to_vec2()?; // [in, out]
    let mut scales = vec![0f32; out_dim];
    for row in &wt {
        for (j, v) in row.iter().enumerate() {
            scales[j] = scales[j].max(v.abs());
        }
    }
    for s in scales.iter_mut() {
        *s = if *s > 0.0 { *s / 127.0 } else { 1.0 };
    }
    let q: Vec<i8> = wt.iter().flat_map(|row| row.iter().enumerate().map(|(j, v)| (v / scales[j]).round().clamp(-127.0, 127.0) as i8).collect::<Vec<_>>()).collect();
    let wq = g.const_i8(&format!("{hint}.weight_t_int8"), &[in_dim as i64, out_dim as i64], &q);
    let ws = g.const_f32(&format!("{hint}.weight_scale"), &[out_dim as i64], &scales);
    let outs = g.node_multi("DynamicQuantizeLinear", &[x], 3, vec![]);
    let (xq, xs, xz) = (&outs[0], &outs[1], &outs[2]);
    let acc = g.node("MatMulInteger", &[xq, &wq, xz], vec![]);
    let accf = g.node("Cast", &[&acc], vec![("to", Attr::Int(DataType::Float as i64))]);
    let scale = g.mul(xs, &ws);
    let y = g.mul(&accf, &scale);
    Ok(match b {
        Some(b) => {
            let bn = g.weight(&format!("{hint}.bias"), b)?;
            g.add(&y, &bn)
        }
        None => y,
    })
}
