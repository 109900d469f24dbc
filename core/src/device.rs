//! Choosing the compute device from a recipe's `device:` string.

use crate::error::{Error, Result};

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

// Opening the device is per rank under a launcher: dist::rank_device.
