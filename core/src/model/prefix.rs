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

    /// Write the cache to `path` (safetensors, atomically): every example's states end to end,
    /// and their lengths.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let mut tensors = std::collections::HashMap::new();
        if !self.states.is_empty() {
            tensors.insert("states".to_string(), Tensor::cat(&self.states, 0)?);
        }
        let lengths: Vec<u32> = self.states.iter().map(|t| t.dim(0).map(|n| n as u32)).collect::<candle_core::Result<_>>()?;
        let n = lengths.len();
        tensors.insert("lengths".to_string(), Tensor::from_vec(lengths, n, &Device::Cpu)?);
        crate::io::save_safetensors_atomic(&tensors, path)
    }

    /// A cache written by [`Self::save`] for examples of these token `lengths`; `None` when the
    /// file holds other lengths (then it is not this data's cache).
    pub fn load(path: &std::path::Path, layer: usize, lengths: &[usize], device: &Device) -> Result<Option<Self>> {
        let file = candle_core::safetensors::load(path, device).map_err(|e| crate::error::Error::model(path, format!("not a prefix cache: {e}")))?;
        let stored: Vec<u32> = match file.get("lengths") {
            Some(t) => t.to_vec1()?,
            None => return Ok(None),
        };
        if stored.len() != lengths.len() || stored.iter().zip(lengths).any(|(a, b)| *a as usize != *b) {
            return Ok(None);
        }
        let Some(all) = file.get("states") else { return Ok(if lengths.is_empty() { Some(PrefixCache { layer, states: vec![] }) } else { None }) };
        let mut states = Vec::with_capacity(lengths.len());
        let mut start = 0;
        for &len in lengths {
            states.push(all.narrow(0, start, len)?);
            start += len;
        }
        Ok(Some(PrefixCache { layer, states }))
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.states.iter().map(|t| t.elem_count() * t.dtype().size_in_bytes()).sum()
    }

    pub fn dtype(&self) -> DType {
        self.states.first().map_or(DType::F32, |t| t.dtype())
    }
}
