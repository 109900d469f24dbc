//! Choosing the compute device from a recipe's `device:` string.

use crate::error::{Error, Result};
use candle_core::Device;

/// `cpu`, or `cuda` / `cuda:N` (needs reft built with `--features cuda`).
/// Check a device name without opening the device: syntax, and CUDA compiled in. `reft
/// check` runs this, so a recipe this build cannot train fails there too.
pub fn validate(text: &str) -> Result<Option<usize>> {
    let t = text.trim();
    if t == "cpu" {
        return Ok(None);
    }
    let ordinal = match t.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::Other(format!("device `{t}`: expected `cpu`, `cuda` or `cuda:N`")))?,
        None => return Err(Error::Other(format!("device `{t}`: expected `cpu`, `cuda` or `cuda:N`"))),
    };
    if !cfg!(feature = "cuda") {
        return Err(Error::Other(format!(
            "device `{t}`: this reft was built without CUDA; rebuild with `cargo build --release --features cuda`"
        )));
    }
    Ok(Some(ordinal))
}

/// Open the device a recipe names (`cpu`, `cuda`, `cuda:N`).
pub fn parse(text: &str) -> Result<Device> {
    match validate(text)? {
        None => Ok(Device::Cpu),
        Some(ordinal) => Device::new_cuda(ordinal).map_err(|e| Error::Other(format!("device `{}`: {e}", text.trim()))),
    }
}
