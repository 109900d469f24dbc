//! Choosing the compute device from a recipe's `device:` string.

use crate::error::{Error, Result};
use candle_core::Device;

/// `cpu`, or `cuda` / `cuda:N` (needs reft built with `--features cuda`).
pub fn parse(text: &str) -> Result<Device> {
    let t = text.trim();
    if t == "cpu" {
        return Ok(Device::Cpu);
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
    Device::new_cuda(ordinal).map_err(|e| Error::Other(format!("device `{t}`: {e}")))
}
