//! Completion markers: `<asset folder>/.complete`, a small JSON file written when an asset is
//! fully in place. It names the package and hash it came from and lists every file (path relative
//! to the cache, size), so a changed pin, a missing or truncated file all make it stale.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::catalog::AssetSpec;
use super::AssetError;

pub const MARKER_FILE: &str = ".complete";

/// Bump when the layout or conversion of any asset changes, to rebuild old caches.
const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Marker {
    pub format: u32,
    pub asset: String,
    pub requirement: String,
    pub sha256: String,
    pub files: Vec<MarkedFile>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct MarkedFile {
    /// Relative to the cache root, `/`-separated.
    pub path: String,
    pub bytes: u64,
}

#[derive(Debug, PartialEq)]
pub(crate) enum MarkerState {
    Missing,
    /// Present but not matching (why).
    Stale(String),
    Valid,
}

pub(crate) fn marker_path(asset_dir: &Path) -> PathBuf {
    asset_dir.join(MARKER_FILE)
}

/// Builds the marker for the files under `roots` (relative to `root`).
pub(crate) fn build(
    spec: &AssetSpec,
    root: &Path,
    roots: &[PathBuf],
) -> Result<Marker, AssetError> {
    let mut files = Vec::new();
    for r in roots {
        list_files(root, &root.join(r), &mut files)?;
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Marker {
        format: FORMAT,
        asset: spec.name.into(),
        requirement: spec.requirement.into(),
        sha256: spec.sha256.into(),
        files,
    })
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<MarkedFile>) -> Result<(), AssetError> {
    for entry in fs::read_dir(dir).map_err(AssetError::io("list", dir))? {
        let path = entry.map_err(AssetError::io("list", dir))?.path();
        let kind = fs::symlink_metadata(&path).map_err(AssetError::io("inspect", &path))?;
        if kind.is_dir() {
            list_files(root, &path, out)?;
            continue;
        }
        if path.file_name().is_some_and(|n| n == MARKER_FILE) {
            continue;
        }
        // Follows symlinks: a dangling link fails here, as it should.
        let bytes = fs::metadata(&path)
            .map_err(AssetError::io("inspect", &path))?
            .len();
        let rel = path.strip_prefix(root).expect("listed under root");
        let rel: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        out.push(MarkedFile {
            path: rel.join("/"),
            bytes,
        });
    }
    Ok(())
}

/// Writes the marker into `asset_dir` (write to a temp name, then rename).
pub(crate) fn write(asset_dir: &Path, marker: &Marker) -> Result<(), AssetError> {
    let path = marker_path(asset_dir);
    let tmp = asset_dir.join(format!("{MARKER_FILE}.tmp"));
    let json = serde_json::to_string_pretty(marker).expect("marker serialises");
    fs::write(&tmp, json + "\n").map_err(AssetError::io("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(AssetError::io("write", &path))
}

/// Whether the asset under `cache` is complete and matches `spec`.
pub(crate) fn check(cache: &Path, spec: &AssetSpec) -> MarkerState {
    let path = marker_path(&(spec.dir)(cache));
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => return MarkerState::Missing,
    };
    let m: Marker = match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(e) => return MarkerState::Stale(format!("unreadable marker {}: {e}", path.display())),
    };
    if m.format != FORMAT {
        return MarkerState::Stale(format!("made by cache format {}, now {FORMAT}", m.format));
    }
    if m.requirement != spec.requirement || !m.sha256.eq_ignore_ascii_case(spec.sha256) {
        return MarkerState::Stale(format!(
            "made from {} ({}), now pinned {} ({})",
            m.requirement, m.sha256, spec.requirement, spec.sha256
        ));
    }
    if m.files.is_empty() {
        return MarkerState::Stale("marker lists no files".into());
    }
    for f in &m.files {
        let p = cache.join(&f.path);
        match fs::metadata(&p) {
            Ok(md) if md.len() == f.bytes => {}
            Ok(md) => {
                return MarkerState::Stale(format!(
                    "{} has {} bytes, expected {}",
                    p.display(),
                    md.len(),
                    f.bytes
                ))
            }
            Err(_) => return MarkerState::Stale(format!("{} is missing", p.display())),
        }
    }
    MarkerState::Valid
}
