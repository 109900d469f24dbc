//! The run folder's guards: one trainer at a time ([`RunLock`]), a resume that continues
//! the same run ([`RunIdentity`]), and no temporary files left from a killed writer.

use crate::error::{Error, Result};
use crate::recipe::Plan;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = ".lock";
pub const IDENTITY_FILE: &str = "run.json";

/// An exclusive `flock` on `RUN_DIR/.lock`, held while a run trains. The kernel drops it
/// when the process ends, however it ends, so a killed run never leaves a stale lock; a
/// second `reft train` into the same folder is refused with the holder's pid.
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    pub fn acquire(run_dir: &Path) -> Result<RunLock> {
        let path = run_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a file descriptor this function owns; no memory is shared.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            return Err(Error::Other(format!(
                "{} is in use by another reft run (pid {}): wait for it to finish, or train into another --out",
                run_dir.display(),
                if holder.is_empty() { "unknown" } else { holder }
            )));
        }
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        write!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
        Ok(RunLock { _file: file })
    }
}

/// Remove `.NAME.PID.tmp` files (and `.checkpoint.tmp` folders) that a killed writer left
/// in `run_dir`. Only called with the [`RunLock`] held, so no live writer owns them.
pub fn remove_stray_temp_files(run_dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(run_dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let path = entry.path();
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// What makes a run the same run: the resolved recipe (less the keys that only say how
/// long to train) and the bytes of its data files.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunIdentity {
    pub recipe: serde_yaml::Value,
    pub data_sha256: BTreeMap<String, String>,
}

/// Keys a resume may change: they extend or shorten the run (the learning-rate schedule is
/// recomputed for the new total, which the trainer says).
pub const RESUMABLE_KEYS: [&str; 2] = ["train.epochs", "train.max_steps"];

impl RunIdentity {
    pub fn of(plan: &Plan) -> Result<RunIdentity> {
        let recipe = &plan.recipe;
        let mut value = serde_yaml::to_value(&recipe.recipe).map_err(|e| Error::Other(format!("recipe as YAML: {e}")))?;
        if let Some(train) = value.get_mut("train").and_then(|t| t.as_mapping_mut()) {
            for key in RESUMABLE_KEYS {
                train.remove(key.trim_start_matches("train."));
            }
        }
        // Transfer sets are only evaluated at the end: a resume may add or drop them.
        if let Some(data) = value.get_mut("data").and_then(|t| t.as_mapping_mut()) {
            data.remove("transfer");
        }
        let mut data_sha256 = BTreeMap::new();
        if let Some(data) = &recipe.recipe.data {
            let files = [("train", Some(&data.train)), ("eval", data.eval.as_ref()), ("test", data.test.as_ref())];
            for (key, file) in files {
                let Some(file) = file else { continue };
                let path = recipe.resolve_path(&format!("data.{key}"), file)?;
                let hash = crate::io::sha256_file(&path).map_err(|e| Error::io(&path, e))?;
                data_sha256.insert(key.to_string(), hash);
            }
        }
        Ok(RunIdentity { recipe: value, data_sha256 })
    }

    /// A digest of this identity and of the running executable: ranks of one data-parallel
    /// run must agree on it (dist::check_same_everywhere).
    pub fn fingerprint(&self) -> Result<Vec<u8>> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(self).map_err(|e| Error::Other(e.to_string()))?);
        let exe = std::env::current_exe().map_err(|e| Error::Other(format!("finding the running executable: {e}")))?;
        h.update(crate::io::sha256_file(&exe).map_err(|e| Error::io(&exe, e))?.as_bytes());
        Ok(h.finalize().to_vec())
    }

    fn path(run_dir: &Path) -> PathBuf {
        run_dir.join(IDENTITY_FILE)
    }

    pub fn save(&self, run_dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Other(e.to_string()))?;
        crate::io::write_atomic(&Self::path(run_dir), text.as_bytes())
    }

    /// The identity a run folder recorded, if any (runs made before reft recorded one have none).
    pub fn load(run_dir: &Path) -> Result<Option<RunIdentity>> {
        let path = Self::path(run_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| Error::model(&path, format!("not a run identity: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Refuse a resume whose recipe or data differ from the run's, naming each difference.
    pub fn check_resume(&self, recorded: &RunIdentity, run_dir: &Path) -> Result<()> {
        let mut diffs = Vec::new();
        let (now, then) = (flatten(&self.recipe), flatten(&recorded.recipe));
        for key in now.keys().chain(then.keys()).collect::<std::collections::BTreeSet<_>>() {
            let (a, b) = (then.get(key), now.get(key));
            if a != b {
                let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
                diffs.push(format!("`{key}`: {} then, {} now", show(a), show(b)));
            }
        }
        for key in ["train", "eval", "test"] {
            if self.data_sha256.get(key) != recorded.data_sha256.get(key) {
                diffs.push(format!("the `data.{key}` file's contents changed"));
            }
        }
        if diffs.is_empty() {
            return Ok(());
        }
        Err(Error::Other(format!(
            "cannot resume {}: the run was trained with another recipe or data ({}). Only {} may change on \
             --resume; start a new run with another --out instead",
            run_dir.display(),
            diffs.join("; "),
            RESUMABLE_KEYS.join(" and ")
        )))
    }
}

/// `a.b[2].c` paths to scalar values (as YAML text).
fn flatten(v: &serde_yaml::Value) -> BTreeMap<String, String> {
    fn walk(v: &serde_yaml::Value, at: String, out: &mut BTreeMap<String, String>) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                for (k, v) in m {
                    let k = k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}"));
                    walk(v, if at.is_empty() { k } else { format!("{at}.{k}") }, out);
                }
            }
            serde_yaml::Value::Sequence(s) => {
                for (i, v) in s.iter().enumerate() {
                    walk(v, format!("{at}[{i}]"), out);
                }
            }
            serde_yaml::Value::Tagged(t) => walk(&t.value, at, out),
            other => {
                let text = serde_yaml::to_string(other).unwrap_or_default();
                out.insert(at, text.trim().to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(v, String::new(), &mut out);
    out
}
