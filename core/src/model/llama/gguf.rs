//! A GGUF file (llama.cpp's format) opened for reading: typed metadata look-ups and
//! dequantised tensors, with errors that name the file and the key or tensor.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Read the header: metadata and tensor directory (no tensor data yet).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader)
            .map_err(|e| Error::model(path, format!("not a valid GGUF file: {e}")))?;
        Ok(GgufFile { path: path.to_path_buf(), content, reader })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn missing(&self, key: &str) -> Error {
        Error::model(&self.path, format!("GGUF metadata key `{key}` is missing"))
    }

    fn wrong(&self, key: &str, want: &str, v: &Value) -> Error {
        Error::model(&self.path, format!("GGUF metadata `{key}` should be {want}, found {:?}", v.value_type()))
    }

    /// An unsigned integer of any width (writers differ: u32 here, u64 there).
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let n: Option<u64> = match v {
            Value::U8(x) => Some(*x as u64),
            Value::U16(x) => Some(*x as u64),
            Value::U32(x) => Some(*x as u64),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => return Err(self.wrong(key, "an integer", v)),
        };
        n.and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| Error::model(&self.path, format!("GGUF metadata `{key}` = {v:?} is out of range")))
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x as f64)),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(v) => Err(self.wrong(key, "a float", v)),
        }
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(key, "a bool", v)),
        }
    }

    pub fn opt_string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    pub fn string(&self, key: &str) -> Result<String> {
        self.opt_string(key)?.ok_or_else(|| self.missing(key))
    }

    /// An array of strings (the vocabulary, the merges).
    pub fn strings(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        let Value::Array(items) = v else { return Err(self.wrong(key, "an array of strings", v)) };
        items
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => Ok(s.as_str()),
                other => Err(Error::model(&self.path, format!("GGUF metadata `{key}`[{i}] should be a string, found {:?}", other.value_type()))),
            })
            .collect()
    }

    /// An array of integers (token types).
    pub fn ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let Value::Array(items) = v else { return Err(self.wrong(key, "an array of integers", v)) };
        items
            .iter()
            .map(|x| match x {
                Value::I32(n) => Ok(*n as i64),
                Value::U32(n) => Ok(*n as i64),
                Value::I64(n) => Ok(*n),
                Value::U8(n) => Ok(*n as i64),
                Value::I8(n) => Ok(*n as i64),
                other => Err(self.wrong(key, "an array of integers", other)),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// A tensor's shape in PyTorch order (`[out, in]` for a weight): GGUF stores dims
    /// innermost first and candle reverses them on reading.
    pub fn tensor_dims(&self, name: &str) -> Result<Vec<usize>> {
        self.content
            .tensor_infos
            .get(name)
            .map(|t| t.shape.dims().to_vec())
            .ok_or_else(|| Error::model(&self.path, format!("missing tensor `{name}`")))
    }

    /// Scalars in all tensors, from the directory alone.
    pub fn num_parameters(&self) -> usize {
        self.content.tensor_infos.values().map(|t| t.shape.elem_count()).sum()
    }

    /// Tensor names with their ggml type and shape, sorted (for fingerprints).
    pub fn tensor_directory(&self) -> Vec<(String, String, Vec<usize>)> {
        let mut v: Vec<_> = self
            .content
            .tensor_infos
            .iter()
            .map(|(n, t)| (n.clone(), format!("{:?}", t.ggml_dtype), t.shape.dims().to_vec()))
            .collect();
        v.sort();
        v
    }

    /// The metadata entries, sorted by key.
    pub fn metadata(&self) -> Vec<(&str, &Value)> {
        let mut v: Vec<_> = self.content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Tensor `name` dequantised (whatever its ggml type) to `dtype` on `device`; it must
    /// have exactly `shape`, checked before its bytes are read.
    pub fn tensor(&mut self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let dims = self.tensor_dims(name)?;
        if dims != shape {
            return Err(Error::model(&self.path, format!("tensor `{name}` has shape {dims:?}, expected {shape:?}")));
        }
        let fail = |e: candle_core::Error| Error::model(&self.path, format!("tensor `{name}`: {e}"));
        // Dequantise on the CPU (every ggml type has a CPU kernel), then convert and move.
        let q = self.content.tensor(&mut self.reader, name, &Device::Cpu).map_err(fail)?;
        let t = q.dequantize(&Device::Cpu).map_err(fail)?;
        // A GGUF carries no checksum, but a corrupted block usually shows: its f16 scale
        // decodes to NaN, infinity or a magnitude no trained weight has.
        let peak = t.abs().and_then(|a| a.flatten_all()?.max(0)?.to_dtype(DType::F32)?.to_scalar::<f32>()).map_err(fail)?;
        if !(peak.is_finite() && peak <= MAX_PLAUSIBLE_WEIGHT) {
            return Err(Error::model(&self.path, format!(
                "tensor `{name}` holds a value of magnitude {peak} (non-finite, or above {MAX_PLAUSIBLE_WEIGHT}): the file is corrupt"
            )));
        }
        Ok(t.to_dtype(dtype).and_then(|t| t.to_device(device)).map_err(fail)?)
    }
}

/// No weight of a trained model reaches this (their largest are norm scales of a few hundred).
const MAX_PLAUSIBLE_WEIGHT: f32 = 1e4;

/// Whether `path` looks like a GGUF file by its name.
pub fn is_gguf_name(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}
