//! The Python packages that check reft's exports from outside, installed into the cache
//! (`<cache>/python`) without touching the system Python: `onnx`, for ONNX's own checker on
//! exported graphs, and `onnxruntime-genai`, which loads `reft export --format genai`
//! folders: `PYTHONPATH=<cache>/python python3 -c "import onnx, onnxruntime_genai"`.

use super::pip::find_python;
use super::AssetError;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The version `reft setup` installs (the one whose `onnx.proto` is vendored in core/proto).
pub const PYTHON_ONNX_VERSION: &str = "1.23.2";
/// The ONNX Runtime GenAI release `--format genai` folders are checked against (it brings
/// its own Python `onnxruntime` and `numpy`).
pub const PYTHON_GENAI_VERSION: &str = "0.18.0";

/// Where the package goes: a `--target` folder to put on `PYTHONPATH`.
pub fn python_dir(cache: &Path) -> PathBuf {
    cache.join("python")
}

/// Whether both packages are already installed there.
pub fn python_tools_installed(cache: &Path) -> bool {
    let dir = python_dir(cache);
    dir.join("onnx").join("checker.py").is_file() && dir.join("onnxruntime_genai").join("__init__.py").is_file()
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PythonTools {
    AlreadyInstalled(PathBuf),
    Installed(PathBuf),
    /// No usable python3/pip: the reason (the checker tests then say why they skip or fail).
    Skipped(String),
}

/// Install both with pip into `<cache>/python` (idempotent; staged then renamed, so a
/// failed install leaves nothing half-written).
pub fn install_python_tools(cache: &Path, offline: bool) -> Result<PythonTools, AssetError> {
    let dir = python_dir(cache);
    if python_tools_installed(cache) {
        return Ok(PythonTools::AlreadyInstalled(dir));
    }
    if offline {
        return Ok(PythonTools::Skipped("offline: pip not run".into()));
    }
    let python = match find_python(None) {
        Ok(p) => p,
        Err(e) => return Ok(PythonTools::Skipped(e.to_string())),
    };
    let stage = cache.join(format!(".python.{}.staging", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    let out = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check", "--target"])
        .arg(&stage)
        .arg(format!("onnx=={PYTHON_ONNX_VERSION}"))
        .arg(format!("onnxruntime-genai=={PYTHON_GENAI_VERSION}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| AssetError::Io { action: "run", path: python.clone(), source: e })?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&stage);
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Ok(PythonTools::Skipped(format!(
            "pip install onnx=={PYTHON_ONNX_VERSION} onnxruntime-genai=={PYTHON_GENAI_VERSION} failed: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&stage, &dir).map_err(|e| AssetError::Io { action: "rename into", path: dir.clone(), source: e })?;
    Ok(PythonTools::Installed(dir))
}
