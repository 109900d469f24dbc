//! One error type for the whole core, so the CLI can print any failure the same way:
//! what went wrong and where (file, line:column, hook name, tensor shape).

use std::fmt;
use std::path::PathBuf;

/// A place in a source file, 1-based like editors show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A recipe that does not parse or does not validate. `location` is absent only when
    /// the problem has no single place (e.g. a required key missing from an empty file).
    #[error("{}{message}", location_prefix(.location, .file))]
    Recipe {
        file: PathBuf,
        location: Option<Location>,
        message: String,
    },
    /// A hook name that does not parse, or names a layer/component this model lacks.
    #[error("hook `{hook}`: {message}")]
    Hook { hook: String, message: String },
    /// A plugin name nobody registered, or a plugin that refused its options.
    #[error("{0}")]
    Plugin(String),
    /// A model, tokenizer or weight file that is missing, corrupt or inconsistent.
    #[error("{}: {message}", .path.display())]
    Model { path: PathBuf, message: String },
    /// A tensor whose shape does not fit where it is used.
    #[error("{context}: expected shape {expected}, got {got:?}")]
    Shape {
        context: String,
        expected: String,
        got: Vec<usize>,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Other(String),
}

fn location_prefix(location: &Option<Location>, file: &std::path::Path) -> String {
    match location {
        Some(l) => format!("{l}: "),
        None => format!("{}: ", file.display()),
    }
}

impl Error {
    pub fn model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            message: message.into(),
        }
    }
    pub fn hook(hook: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Hook {
            hook: hook.into(),
            message: message.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Suggest the closest of `known` to `name`, if any is close enough to be a plausible typo.
pub fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}
