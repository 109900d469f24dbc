//! The Python `onnx` package, installed into the cache (`<cache>/python`) so tests and users
//! can run ONNX's own checker on exported graphs without touching the system Python:
//! `PYTHONPATH=<cache>/python python3 -c "import onnx; onnx.checker.check_model(...)"`.

use super::pip::find_python;
use super::AssetError;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The version `reft setup` installs (the one whose `onnx.proto` is vendored in core/proto).
pub const PYTHON_ONNX_VERSION: &str = "1.23.2";

/// Where the package goes: a `--target` folder to put on `PYTHONPATH`.
pub fn python_dir(cache: &Path) -> PathBuf {
    cache.join("python")
}

/// Whether `onnx` is already installed there.
pub fn python_onnx_installed(cache: &Path) -> bool {
    python_dir(cache).join("onnx").join("checker.py").is_file()
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PythonOnnx {
    AlreadyInstalled(PathBuf),
    Installed(PathBuf),
    /// No usable python3/pip: the reason (the checker tests then say why they skip or fail).
    Skipped(String),
}

/// Install `onnx` with pip into `<cache>/python` (idempotent; staged then renamed, so a
/// failed install leaves nothing half-written).
pub fn install_python_onnx(cache: &Path, offline: bool) -> Result<PythonOnnx, AssetError> {
    let dir = python_dir(cache);
    if python_onnx_installed(cache) {
        return Ok(PythonOnnx::AlreadyInstalled(dir));
    }
    if offline {
        return Ok(PythonOnnx::Skipped("offline: pip not run".into()));
    }
    let python = match find_python(None) {
        Ok(p) => p,
        Err(e) => return Ok(PythonOnnx::Skipped(e.to_string())),
    };
    let stage = cache.join(format!(".python.{}.staging", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    let out = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check", "--target"])
        .arg(&stage)
        .arg(format!("onnx=={PYTHON_ONNX_VERSION}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| AssetError::Io { action: "run", path: python.clone(), source: e })?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&stage);
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Ok(PythonOnnx::Skipped(format!(
            "pip install onnx=={PYTHON_ONNX_VERSION} failed: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&stage, &dir).map_err(|e| AssetError::Io { action: "rename into", path: dir.clone(), source: e })?;
    Ok(PythonOnnx::Installed(dir))
}
