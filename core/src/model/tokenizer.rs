//! Loading a HF `tokenizer.json` and turning texts into padded batches.

use super::Batch;
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

pub struct TextTokenizer {
    path: PathBuf,
    inner: Tokenizer,
    pad_id: u32,
}

impl TextTokenizer {
    /// Load `tokenizer.json`. Padding and truncation stored in the file are switched off
    /// (MiniLM's pads everything to 128): reft pads each batch to its longest text and
    /// truncates at the recipe's `max_length`.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::model(path, "tokenizer file not found"));
        }
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| Error::model(path, format!("not a valid tokenizer.json: {e}")))?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .unwrap_or(0);
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::model(path, format!("cannot switch off truncation: {e}")))?;
        Ok(TextTokenizer {
            path: path.to_path_buf(),
            inner,
            pad_id,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Token ids of one text with the model's special tokens, at most `max_length` long.
    pub fn encode(&self, text: &str, max_length: Option<usize>) -> Result<Vec<u32>> {
        let mut enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::model(&self.path, format!("cannot tokenise {text:?}: {e}")))?;
        if let Some(max) = max_length {
            if enc.len() > max {
                // Truncate keeping the special tokens at the ends, as HF's `truncation=True` does.
                let mut t = self.inner.clone();
                t.with_truncation(Some(TruncationParams {
                    max_length: max,
                    ..Default::default()
                }))
                .map_err(|e| Error::model(&self.path, e.to_string()))?;
                enc = t
                    .encode(text, true)
                    .map_err(|e| Error::model(&self.path, e.to_string()))?;
            }
        }
        Ok(enc.get_ids().to_vec())
    }

    /// Right-pad token id lists to the longest and build a [`Batch`].
    pub fn batch_from_ids(&self, ids: &[Vec<u32>], device: &Device) -> Result<Batch> {
        batch_from_ids(ids, self.pad_id, device)
    }

    pub fn batch(&self, texts: &[&str], max_length: Option<usize>, device: &Device) -> Result<Batch> {
        let ids = texts
            .iter()
            .map(|t| self.encode(t, max_length))
            .collect::<Result<Vec<_>>>()?;
        self.batch_from_ids(&ids, device)
    }
}

/// Right-pad token id lists with `pad_id` to the longest and build a [`Batch`].
pub fn batch_from_ids(ids: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Batch> {
    let b = ids.len();
    let s = ids.iter().map(|r| r.len()).max().unwrap_or(0);
    if b == 0 || s == 0 {
        return Err(Error::Other("cannot build a batch from no tokens".into()));
    }
    let mut flat = Vec::with_capacity(b * s);
    let mut rows = Vec::with_capacity(b);
    for r in ids {
        flat.extend_from_slice(r);
        flat.extend(std::iter::repeat_n(pad_id, s - r.len()));
        let mut m = vec![1u32; r.len()];
        m.resize(s, 0);
        rows.push(m);
    }
    let mask: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    Ok(Batch {
        input_ids: Tensor::from_vec(flat, (b, s), device)?,
        attention_mask: Tensor::from_vec(mask, (b, s), device)?,
        attention_rows: rows,
    })
}
