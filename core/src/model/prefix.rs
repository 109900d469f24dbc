//! The frozen prefix cache: the backbone below the lowest intervened layer never changes,
//! so its output (the input of that layer) is computed once per example and reused every
//! epoch and every evaluation.

use crate::error::Result;
use super::{tokenizer::batch_from_ids, Backbone, Batch, NoHooks};
use candle_core::{DType, Device, Tensor};

pub struct PrefixCache {
    /// The layer whose input is cached.
    pub layer: usize,
    /// One `[len_i, hidden]` tensor per example.
    states: Vec<Tensor>,
}

impl PrefixCache {
    /// Run the frozen prefix over every example, `chunk` at a time. Examples are grouped
    /// by length so chunks carry almost no padding; the order of computation is fixed by
    /// the data alone, so a resumed run rebuilds the very same cache.
    pub fn build(backbone: &dyn Backbone, layer: usize, ids: &[Vec<u32>], pad_id: u32, chunk: usize, device: &Device) -> Result<Self> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| (ids[i].len(), i));
        let mut states: Vec<Option<Tensor>> = vec![None; ids.len()];
        for group in order.chunks(chunk.max(1)) {
            let rows: Vec<Vec<u32>> = group.iter().map(|&i| ids[i].clone()).collect();
            let batch = batch_from_ids(&rows, pad_id, device)?;
            let h = backbone.forward_until(&batch, layer, &NoHooks)?;
            for (k, &i) in group.iter().enumerate() {
                states[i] = Some(h.get(k)?.narrow(0, 0, ids[i].len())?.contiguous()?);
            }
        }
        Ok(PrefixCache { layer, states: states.into_iter().map(|s| s.expect("every example cached")).collect() })
    }

    /// The cached input of `self.layer` for a batch of examples, right-padded with zeros
    /// to the batch's length (padding is masked out of attention).
    pub fn gather(&self, idx: &[usize], batch: &Batch) -> Result<Tensor> {
        let (_, s) = batch.dims();
        let parts = idx
            .iter()
            .map(|&i| {
                let t = &self.states[i];
                let (len, d) = t.dims2()?;
                if len == s {
                    Ok(t.clone())
                } else {
                    Tensor::cat(&[t, &Tensor::zeros((s - len, d), t.dtype(), t.device())?], 0)
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::stack(&parts, 0)?)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.states.iter().map(|t| t.elem_count() * t.dtype().size_in_bytes()).sum()
    }

    pub fn dtype(&self) -> DType {
        self.states.first().map_or(DType::F32, |t| t.dtype())
    }
}
