//! Writing files so a crash never leaves a half-written one: write beside the target,
//! flush to disk, then rename over it (atomic on POSIX file systems).

use crate::error::{Error, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

fn temp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// The most bytes a YAML file reft reads may have (recipes, manifests and pipeline files are
/// a few KiB).
pub const MAX_YAML_BYTES: usize = 4 << 20;
/// The deepest flow nesting (`[`/`{`) a YAML file may have. libyaml's scanner slows down
/// much faster than linearly with depth (100k nested `[` took 38 s), so the depth is
/// checked in one pass before parsing.
pub const MAX_YAML_FLOW_DEPTH: usize = 64;

/// Refuse YAML text that is too large or nested too deeply to parse cheaply: the message,
/// with the 1-based line and column of the first bracket past the limit.
pub fn check_yaml_shape(text: &str) -> std::result::Result<(), (String, Option<(usize, usize)>)> {
    if text.len() > MAX_YAML_BYTES {
        return Err((format!("{} bytes is more than the {MAX_YAML_BYTES} a YAML file may have", text.len()), None));
    }
    let (mut depth, mut line, mut col) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        col += 1;
        if c == '\n' {
            (line, col, comment, prev) = (line + 1, 0, false, c);
            continue;
        }
        match quote {
            _ if comment => {}
            Some('"') if c == '\\' => {
                chars.next();
                col += 1;
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                // A quote opens a scalar only where one can start; inside a plain
                // scalar (`don't`) it is an ordinary character.
                '"' | '\'' if prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':' | '-') => quote = Some(c),
                '#' if prev.is_whitespace() => comment = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_YAML_FLOW_DEPTH {
                        return Err((format!("brackets nested more than {MAX_YAML_FLOW_DEPTH} deep"), Some((line, col))));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    Ok(())
}

/// Read the YAML file `path` into `T`; a parse error names the file, the line:column and
/// `what` the file was meant to be (e.g. "adapter manifest").
pub fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    check_yaml_shape(&text).map_err(|(m, at)| {
        let loc = at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default();
        Error::Other(format!("{}{loc}: not a valid {what}: {m}", path.display()))
    })?;
    serde_yaml::from_str(&text).map_err(|e| {
        let loc = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
        Error::Other(format!("{}{loc}: not a valid {what}: {e}", path.display()))
    })
}

/// Write `bytes` to `path` atomically, creating the parent folder if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Save named tensors as safetensors, atomically.
pub fn save_safetensors_atomic(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let views: Vec<(String, Tensor)> = tensors.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let bytes = safetensors::serialize(views.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| Error::Other(format!("cannot serialise tensors for {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Lower-case hex SHA-256 of a file's bytes, read in 1 MiB pieces (adapters record their
/// weights' hash; the setup tool checks downloads against pinned ones).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
