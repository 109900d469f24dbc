//! Several ONNX models whose large initializers live in one external data file, each
//! distinct tensor stored once.
//!
//! A causal-LM pipeline has two graphs (prefill and decode step) over the same frozen
//! weights: written inline, the folder would hold every weight twice (1.1 GB instead of
//! 540 MB for SmolLM2-135M). Here a tensor that the second graph has under the same name
//! with the same bytes points at the first one's copy; one that differs (a LoRA delta folded
//! into the prefill's weight only) gets its own. Offsets are aligned to 4 KiB pages so a
//! runtime can map tensors straight from the file.

use super::proto::{self, tensor_proto, ModelProto};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Alignment of each tensor in the data file (a page).
const ALIGN: usize = 4096;

/// Initializers smaller than this stay inside the model file (shape inference reads them).
const MIN_BYTES: usize = 1024;

pub struct SharedData {
    path: PathBuf,
    /// The file name as written in each tensor's `location` (relative to the models).
    location: String,
    data: Vec<u8>,
    /// Tensor name -> (offset, length) of each distinct copy stored under it.
    index: HashMap<String, Vec<(usize, usize)>>,
}

impl SharedData {
    /// Data that will be written to `path`; the models must be written beside it.
    pub fn new(path: &Path) -> Result<Self> {
        let location = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Other(format!("{}: not a file path", path.display())))?;
        Ok(SharedData { path: path.to_path_buf(), location, data: Vec::new(), index: HashMap::new() })
    }

    /// Bytes of tensor data so far.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Move `model`'s large initializers into the shared data (reusing an identical copy
    /// already there), then write the model to `path` atomically.
    pub fn write_model(&mut self, model: &mut ModelProto, path: &Path) -> Result<()> {
        if path.parent() != self.path.parent() {
            return Err(Error::Other(format!("{}: models must sit beside their data file {}", path.display(), self.path.display())));
        }
        let graph = model.graph.as_mut().ok_or_else(|| Error::Other("ONNX model without a graph".into()))?;
        for t in graph.initializer.iter_mut() {
            if t.raw_data.as_ref().is_none_or(|d| d.len() < MIN_BYTES) {
                continue;
            }
            let Some(raw) = t.raw_data.take() else { continue };
            let name = t.name.clone().unwrap_or_default();
            let (offset, length) = self.place(&name, raw);
            let entry = |k: &str, v: String| proto::StringStringEntryProto { key: Some(k.into()), value: Some(v) };
            t.external_data = vec![
                entry("location", self.location.clone()),
                entry("offset", offset.to_string()),
                entry("length", length.to_string()),
            ];
            t.data_location = Some(tensor_proto::DataLocation::External as i32);
        }
        crate::io::write_atomic(path, &prost::Message::encode_to_vec(&*model))
    }

    /// Where `raw` (tensor `name`) lives in the data: an identical copy stored earlier under
    /// the same name, or a new aligned one at the end.
    fn place(&mut self, name: &str, raw: Vec<u8>) -> (usize, usize) {
        let copies = self.index.entry(name.to_string()).or_default();
        if let Some(&(offset, length)) = copies.iter().find(|&&(o, l)| l == raw.len() && self.data[o..o + l] == raw[..]) {
            return (offset, length);
        }
        let offset = self.data.len().div_ceil(ALIGN) * ALIGN;
        self.data.resize(offset, 0);
        self.data.extend_from_slice(&raw);
        copies.push((offset, raw.len()));
        (offset, raw.len())
    }

    /// Write the data file atomically; returns its path.
    pub fn finish(self) -> Result<PathBuf> {
        crate::io::write_atomic(&self.path, &self.data)?;
        Ok(self.path)
    }
}
