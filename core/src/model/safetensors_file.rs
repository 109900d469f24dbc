//! Reading a safetensors weight file with errors that name the file and the tensor.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A Hugging Face folder's weights in one file.
pub const SINGLE_FILE: &str = "model.safetensors";
/// A sharded folder's index: `{"weight_map": {tensor: shard file}}`.
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// Where a Hugging Face folder keeps its weights.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightLayout {
    Single(PathBuf),
    /// Shards in file-name order, with the index's tensor → shard map.
    Sharded { index: PathBuf, shards: Vec<PathBuf>, weight_map: BTreeMap<String, String> },
}

impl WeightLayout {
    /// Every weight file, in a fixed order.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            WeightLayout::Single(p) => vec![p.as_path()],
            WeightLayout::Sharded { shards, .. } => shards.iter().map(PathBuf::as_path).collect(),
        }
    }

    /// The file errors about the whole set name.
    pub fn path(&self) -> &Path {
        match self {
            WeightLayout::Single(p) => p,
            WeightLayout::Sharded { index, .. } => index,
        }
    }
}

/// The weights of `dir`: `model.safetensors`, else the shards `model.safetensors.index.json`
/// names (every one must exist, in this folder).
pub fn weight_layout(dir: &Path) -> Result<WeightLayout> {
    let single = dir.join(SINGLE_FILE);
    if single.exists() {
        return Ok(WeightLayout::Single(single));
    }
    let index = dir.join(SHARD_INDEX);
    if !index.exists() {
        return Err(Error::model(&single, format!("weight file not found (nor a sharded checkpoint's {SHARD_INDEX})")));
    }
    let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let parsed: Index = serde_json::from_str(&text)
        .map_err(|e| Error::model(&index, format!("line {}:{}: {e}", e.line(), e.column())))?;
    if parsed.weight_map.is_empty() {
        return Err(Error::model(&index, "weight_map is empty"));
    }
    let mut names: Vec<&String> = parsed.weight_map.values().collect();
    names.sort();
    names.dedup();
    let mut shards = Vec::new();
    for name in names {
        // A shard is a file of this folder, never a path elsewhere.
        if name.is_empty() || name.contains('/') || name.contains('\\') || name == ".." {
            return Err(Error::model(&index, format!("shard `{name}` is not a file name in this folder")));
        }
        let shard = dir.join(name);
        if !shard.is_file() {
            return Err(Error::model(&index, format!("names shard `{name}`, which is not in {}", dir.display())));
        }
        shards.push(shard);
    }
    Ok(WeightLayout::Sharded { index, shards, weight_map: parsed.weight_map })
}

/// The float tensors of one safetensors file, converted to one dtype on one device.
pub struct WeightFile {
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
    /// Integer buffers the file holds (`position_ids`, …), skipped on load.
    skipped: Vec<String>,
}

impl WeightFile {
    /// Load every floating-point tensor (integer buffers such as `position_ids` are skipped).
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes, dtype, device)
    }

    /// Load every shard of `layout` into one set; the index must agree with the shards: each
    /// tensor is in the shard the index names, and no tensor is in two shards.
    pub fn load_layout(layout: &WeightLayout, dtype: DType, device: &Device) -> Result<Self> {
        let (index, weight_map) = match layout {
            WeightLayout::Single(path) => return Self::load(path, dtype, device),
            WeightLayout::Sharded { index, weight_map, .. } => (index, weight_map),
        };
        let mut tensors = BTreeMap::new();
        let mut skipped = Vec::new();
        for shard in layout.files() {
            let file_name = shard.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let part = Self::load(shard, dtype, device)?;
            skipped.extend(part.skipped);
            for (name, t) in part.tensors {
                match weight_map.get(&name) {
                    Some(listed) if *listed == file_name => {}
                    Some(listed) => {
                        return Err(Error::model(index, format!("lists tensor `{name}` in {listed}, but it is in {file_name}")))
                    }
                    None => return Err(Error::model(index, format!("does not list tensor `{name}` of {file_name}"))),
                }
                if tensors.insert(name.clone(), t).is_some() {
                    return Err(Error::model(index, format!("tensor `{name}` is in two shards")));
                }
            }
        }
        if let Some((name, shard)) = weight_map.iter().find(|(n, _)| !tensors.contains_key(*n) && !skipped.contains(n)) {
            return Err(Error::model(index, format!("lists tensor `{name}` in {shard}, which does not have it")));
        }
        Ok(WeightFile { path: index.clone(), tensors, skipped })
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
        let mut skipped = Vec::new();
        for (name, view) in st.tensors() {
            use safetensors::Dtype as S;
            if !matches!(view.dtype(), S::F32 | S::F16 | S::BF16 | S::F64) {
                skipped.push(name);
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
            skipped,
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

    /// Replace the tensor `name` by consecutive row blocks of it, `parts` in order (name and
    /// row count); the rows must add up to the tensor's first dimension.
    pub fn split_rows(&mut self, name: &str, parts: &[(&str, usize)]) -> Result<()> {
        let t = self.tensors.remove(name).ok_or_else(|| Error::model(&self.path, format!("missing tensor `{name}`")))?;
        let total: usize = parts.iter().map(|(_, rows)| rows).sum();
        if t.rank() != 2 || t.dim(0)? != total {
            return Err(Error::model(&self.path, format!("tensor `{name}` has shape {:?}, expected [{total}, _]", t.dims())));
        }
        let mut at = 0;
        for (part, rows) in parts {
            self.tensors.insert(part.to_string(), t.narrow(0, at, *rows)?);
            at += rows;
        }
        Ok(())
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

/// [`count_float_parameters`] over every file of a layout.
pub fn count_layout_parameters(layout: &WeightLayout) -> Result<usize> {
    layout.files().into_iter().try_fold(0usize, |n, f| Ok(n.saturating_add(count_float_parameters(f)?)))
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
