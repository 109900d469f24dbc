//! The tokenised, padded batch every forward pass consumes: plain tensors and host rows,
//! below everything that reads it (hooks, interventions, backbones, tasks).

use candle_core::Tensor;

/// A tokenised, padded batch as a backbone consumes it.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[batch, seq]` u32 token ids.
    pub input_ids: Tensor,
    /// `[batch, seq]` 1 on real tokens, 0 on padding, as host rows (for position masks)…
    pub attention_rows: Vec<Vec<u32>>,
    /// …and as a `[batch, seq]` f32 tensor on the model's device.
    pub attention_mask: Tensor,
}

impl Batch {
    pub fn dims(&self) -> (usize, usize) {
        let d = self.input_ids.dims();
        (d[0], d[1])
    }
}
