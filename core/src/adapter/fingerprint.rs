//! A fingerprint of a base model: sha256 over its `config.json` (canonical JSON) and the
//! name, dtype and shape of every tensor in its weight file header. Cheap (no weight bytes
//! are read) and it tells apart any two architectures or checkpoint layouts. A GGUF file's
//! fingerprint is made the same way from its metadata and tensor directory.

use crate::error::{Error, Result};
use crate::model::{locate, llama::GgufFile, ModelFiles};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

pub fn fingerprint(model: &Path) -> Result<String> {
    match locate(model)? {
        ModelFiles::Gguf(file) => gguf_fingerprint(&file),
        ModelFiles::Bert(dir) | ModelFiles::LlamaHf(dir) => folder_fingerprint(&dir),
    }
}

fn hex(h: Sha256) -> String {
    let digest = h.finalize();
    format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Metadata (keys sorted, values in their debug form) and the tensor directory (name,
/// ggml type, shape): the weights' bytes are not read.
fn gguf_fingerprint(file: &Path) -> Result<String> {
    let g = GgufFile::open(file)?;
    let mut h = Sha256::new();
    for (key, value) in g.metadata() {
        h.update(format!("{key}={value:?}\n").as_bytes());
    }
    for (name, ty, shape) in g.tensor_directory() {
        h.update(format!("{name}:{ty}:{shape:?}\n").as_bytes());
    }
    Ok(hex(h))
}

/// Every tensor's name, dtype and shape from a safetensors header, into `h`.
fn hash_header(h: &mut Sha256, weights: &Path) -> Result<()> {
    let mut f = std::fs::File::open(weights).map_err(|e| Error::io(weights, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| Error::io(weights, e))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(Error::model(weights, "not a valid safetensors file (header too large)"));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(weights, e))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| Error::model(weights, format!("bad header: {e}")))?;
    if let Some(obj) = header.as_object() {
        for (name, info) in obj.iter().filter(|(k, _)| *k != "__metadata__") {
            h.update(format!("{name}:{}:{}\n", info["dtype"], info["shape"]).as_bytes());
        }
    }
    Ok(())
}

fn folder_fingerprint(model_dir: &Path) -> Result<String> {
    let config_path = model_dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::model(&config_path, e.to_string()))?;
    let mut h = Sha256::new();
    // serde_json's map is ordered by key, so this serialisation is canonical.
    h.update(config.to_string().as_bytes());

    // One file: its header, as always (recorded fingerprints stay valid). Shards: each one's
    // header in the layout's order.
    let layout = crate::model::safetensors_file::weight_layout(model_dir)?;
    for weights in layout.files() {
        hash_header(&mut h, weights)?;
    }
    Ok(hex(h))
}
