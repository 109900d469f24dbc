//! Atomic installs: an asset is unpacked into a private staging folder inside the cache (same
//! file system), laid out like the cache itself, then each of its folders is renamed into place.
//! The folder holding the `.complete` marker goes last, so the marker appears only when
//! everything else is there. A crash leaves at most a staging folder, removed on the next run.

use std::fs;
use std::path::{Path, PathBuf};

use super::{layout, AssetError};

pub(crate) struct Stage {
    root: PathBuf,
}

impl Stage {
    /// A fresh `<cache>/.staging/<name>.<pid>` (stale ones of dead processes are removed first).
    pub(crate) fn new(cache: &Path, name: &str) -> Result<Stage, AssetError> {
        let base = layout::staging_dir(cache);
        fs::create_dir_all(&base).map_err(AssetError::io("create folder", &base))?;
        remove_stale(&base);
        let root = base.join(format!("{name}.{}", std::process::id()));
        if root.exists() {
            fs::remove_dir_all(&root).map_err(AssetError::io("remove", &root))?;
        }
        fs::create_dir_all(&root).map_err(AssetError::io("create folder", &root))?;
        Ok(Stage { root })
    }

    /// The staging root: pass it to the `layout` functions in place of the cache.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Moves each `roots` folder (relative paths; the last one holds the marker) from the stage
    /// into `cache`, replacing what is there.
    pub(crate) fn commit(self, cache: &Path, roots: &[PathBuf]) -> Result<(), AssetError> {
        for (i, rel) in roots.iter().enumerate() {
            let from = self.root.join(rel);
            let to = cache.join(rel);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(AssetError::io("create folder", parent))?;
            }
            if fs::symlink_metadata(&to).is_ok() {
                // Move the old folder aside (into the stage, removed with it) rather than delete
                // it in place, so the swap is two renames.
                let old = self.root.join(format!(".old-{i}"));
                fs::rename(&to, &old).map_err(AssetError::io("move aside", &to))?;
            }
            fs::rename(&from, &to).map_err(AssetError::io("move into place", &to))?;
        }
        Ok(())
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
        // Leave no empty `.staging` behind (fails harmlessly while another run uses it).
        if let Some(base) = self.root.parent() {
            let _ = fs::remove_dir(base);
        }
    }
}

/// Removes `<name>.<pid>` folders whose process is gone (Linux: no `/proc/<pid>`).
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.rsplit('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = pid == std::process::id()
            || !Path::new("/proc/self").exists()
            || Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::scratch;

    #[test]
    fn commit_replaces_and_cleans_up() {
        let cache = scratch("stage");
        fs::create_dir_all(cache.join("a/old")).unwrap();
        fs::write(cache.join("a/old/stale.txt"), "old").unwrap();
        let stage = Stage::new(&cache, "t").unwrap();
        let root = stage.root().to_owned();
        fs::create_dir_all(root.join("a/old")).unwrap();
        fs::write(root.join("a/old/new.txt"), "new").unwrap();
        fs::create_dir_all(root.join("b")).unwrap();
        fs::write(root.join("b/x"), "x").unwrap();
        stage
            .commit(&cache, &[PathBuf::from("b"), PathBuf::from("a/old")])
            .unwrap();
        assert!(cache.join("a/old/new.txt").is_file());
        assert!(!cache.join("a/old/stale.txt").exists());
        assert!(cache.join("b/x").is_file());
        assert!(!root.exists(), "stage removed after commit");

        // a dropped (failed) stage leaves nothing behind
        let stage = Stage::new(&cache, "t").unwrap();
        let root = stage.root().to_owned();
        drop(stage);
        assert!(!root.exists());
        assert!(
            !layout::staging_dir(&cache).exists(),
            "empty .staging removed"
        );

        // a stage of a dead process is cleaned by the next run
        let dead = layout::staging_dir(&cache).join("t.4294967295");
        fs::create_dir_all(&dead).unwrap();
        let _s = Stage::new(&cache, "u").unwrap();
        assert!(!dead.exists());
    }
}
