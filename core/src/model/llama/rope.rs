//! Rotary position embeddings in the Hugging Face ("half rotation") convention: dimension
//! `i` of a head is paired with `i + head_dim/2`, at angle `pos · θ^(-2i/head_dim)`.
//!
//! GGUF files store the query/key weights with their rows permuted so that llama.cpp can
//! rotate adjacent pairs `(2i, 2i+1)` instead; `weights.rs` undoes that permutation when it
//! loads a GGUF file, so both file formats meet this one RoPE. The numpy reference
//! (tests/reference/llama_reference.py) does the opposite, interleaved RoPE on the GGUF
//! layout as stored, which checks the un-permutation independently.
//!
//! Applied by a fused op with its own backward (candle-nn's fused `rope` has none).

use super::config::RopeScaling;
use candle_core::{DType, Device, Result, Tensor};

#[derive(Clone, Debug)]
pub struct Rope {
    head_dim: usize,
    /// `θ^(-2i/head_dim)` for each pair, rescaled as the config says (Llama 3.x).
    inv_freq: Vec<f64>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Self {
        let mut inv_freq: Vec<f64> = (0..head_dim / 2).map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64)).collect();
        scaling.apply(&mut inv_freq);
        Rope { head_dim, inv_freq }
    }

    /// `cos` and `sin` `[len, head_dim]` for positions `start..start+len`, each half
    /// repeated (angles computed in f64, then cast).
    pub fn tables(&self, start: usize, len: usize, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        let inv_freq = &self.inv_freq;
        let mut cos = Vec::with_capacity(len * self.head_dim);
        let mut sin = Vec::with_capacity(len * self.head_dim);
        for p in start..start + len {
            for _ in 0..2 {
                for f in inv_freq {
                    let a = p as f64 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        let t = |v: Vec<f64>| Tensor::from_vec(v, (len, self.head_dim), device)?.to_dtype(dtype);
        Ok((t(cos)?, t(sin)?))
    }

    /// Rotate `x` `[batch, heads, len, head_dim]` with tables from [`Rope::tables`].
    /// One fused op with its own backward (`ops::rope_half_rotation`).
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        crate::ops::rope_half_rotation(x, cos, sin)
    }
}
