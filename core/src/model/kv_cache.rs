//! Keys and values of the positions a decoder has already seen, one pair per layer, so a
//! generation step runs the new token alone instead of the whole sequence again.

use crate::error::{Error, Result};
use candle_core::Tensor;

pub struct KvCache {
    /// Per layer: keys and values `[batch, kv_heads, positions, head_dim]` (keys rotated).
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Per row: 1 on a real token, 0 on padding, for every cached position.
    key_rows: Vec<Vec<u32>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache { layers: vec![None; num_layers], key_rows: Vec::new() }
    }

    /// Positions cached so far (the position of the next token).
    pub fn len(&self) -> usize {
        self.key_rows.first().map_or(0, |r| r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The keys and values cached for layer `l`.
    pub fn layer(&self, l: usize) -> Option<&(Tensor, Tensor)> {
        self.layers.get(l).and_then(|x| x.as_ref())
    }

    /// The key mask rows of the cache followed by `new` (the rows of the tokens being added),
    /// checking that the batch size matches what is cached.
    pub fn rows_with(&self, new: &[Vec<u32>]) -> Result<Vec<Vec<u32>>> {
        if self.is_empty() {
            return Ok(new.to_vec());
        }
        if new.len() != self.key_rows.len() {
            return Err(Error::Shape {
                context: "tokens added to a KV cache".into(),
                expected: format!("a batch of {} rows, as cached", self.key_rows.len()),
                got: vec![new.len()],
            });
        }
        Ok(self.key_rows.iter().zip(new).map(|(a, b)| a.iter().chain(b).copied().collect()).collect())
    }

    /// Replace the whole cache by the result of one forward pass (so a failed pass leaves
    /// the previous cache intact).
    pub fn commit(&mut self, layers: Vec<(Tensor, Tensor)>, key_rows: Vec<Vec<u32>>) -> Result<()> {
        if layers.len() != self.layers.len() {
            return Err(Error::Other(format!("KV cache: {} layers given, {} expected", layers.len(), self.layers.len())));
        }
        self.layers = layers.into_iter().map(Some).collect();
        self.key_rows = key_rows;
        Ok(())
    }

    /// Bytes held by the cached tensors.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }
}
