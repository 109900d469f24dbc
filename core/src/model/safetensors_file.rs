//! Reading a safetensors weight file with errors that name the file and the tensor.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The float tensors of one safetensors file, converted to one dtype on one device.
pub struct WeightFile {
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
}

impl WeightFile {
    /// Load every floating-point tensor (integer buffers such as `position_ids` are skipped).
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes, dtype, device)
    }

    pub fn from_bytes(path: &Path, bytes: &[u8], dtype: DType, device: &Device) -> Result<Self> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| {
                let hint = match e {
                    safetensors::SafeTensorError::MetadataIncompleteBuffer
                    | safetensors::SafeTensorError::InvalidHeaderLength
                    | safetensors::SafeTensorError::HeaderTooSmall => {
                        format!(" (the file's {} bytes do not match its header: truncated or corrupt)", bytes.len())
                    }
                    _ => String::new(),
                };
                Error::model(path, format!("not a valid safetensors file: {e}{hint}"))
            })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            use safetensors::Dtype as S;
            if !matches!(view.dtype(), S::F32 | S::F16 | S::BF16 | S::F64) {
                continue;
            }
            let t = candle_core::safetensors::Load::load(&view, device)
                .and_then(|t| t.to_dtype(dtype))
                .map_err(|e| Error::model(path, format!("tensor `{name}`: {e}")))?;
            tensors.insert(name, t);
        }
        Ok(WeightFile {
            path: path.to_path_buf(),
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    /// Sum of the element counts of all loaded tensors.
    pub fn num_parameters(&self) -> usize {
        self.tensors.values().map(|t| t.elem_count()).sum()
    }

    /// Remove a leading prefix (e.g. `bert.`) from every name that has it.
    pub fn strip_prefix(&mut self, prefix: &str) {
        let old = std::mem::take(&mut self.tensors);
        self.tensors = old
            .into_iter()
            .map(|(k, v)| (k.strip_prefix(prefix).map(str::to_string).unwrap_or(k), v))
            .collect();
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name`, whatever its shape (for formats where the shape carries
    /// information, such as a PEFT adapter's rank).
    pub fn get_any(&self, name: &str) -> Result<Tensor> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| Error::model(&self.path, format!("missing tensor `{name}`")))
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| {
            Error::model(&self.path, format!("missing tensor `{name}` (expected shape {shape:?})"))
        })?;
        if t.dims() != shape {
            return Err(Error::model(
                &self.path,
                format!("tensor `{name}` has shape {:?}, expected {shape:?}", t.dims()),
            ));
        }
        Ok(t.clone())
    }
}

/// Count the floating-point scalars in a safetensors file from its header alone (fast:
/// `reft check` uses it to express trainable parameters as a share of the base model).
pub fn count_float_parameters(path: &Path) -> Result<usize> {
    use std::io::Read;
    let bad = |m: String| Error::model(path, m);
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("not a valid safetensors file: shorter than its 8-byte header length".into()))?;
    let n = u64::from_le_bytes(len);
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if n > 100 << 20 || n + 8 > file_len {
        return Err(bad(format!("not a valid safetensors file: header length {n} does not fit the file")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("not a valid safetensors header: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad("not a valid safetensors header: not a JSON object".into()))?;
    let mut total = 0usize;
    // The end of the last tensor's bytes: a file shorter than that is truncated.
    let mut data_end = 0u64;
    for (name, info) in obj {
        if name == "__metadata__" {
            continue;
        }
        if let Some(end) = info.get("data_offsets").and_then(|o| o.get(1)).and_then(|e| e.as_u64()) {
            data_end = data_end.max(end);
        }
        let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
        if !matches!(dtype, "F32" | "F16" | "BF16" | "F64") {
            continue;
        }
        let shape = info
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad(format!("tensor `{name}` has no shape")))?;
        let mut count = 1usize;
        for d in shape {
            let d = d.as_u64().ok_or_else(|| bad(format!("tensor `{name}` has a bad shape")))?;
            count = count.saturating_mul(d as usize);
        }
        total = total.saturating_add(count);
    }
    if data_end > file_len - 8 - n {
        return Err(bad(format!(
            "truncated: its header describes {} bytes but the file has only {file_len} (an interrupted download?)",
            data_end.saturating_add(8 + n)
        )));
    }
    Ok(total)
}
