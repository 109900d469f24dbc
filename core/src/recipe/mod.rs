//! YAML recipes: parsing into typed structs ([`types`]), and validation against the
//! registry and the model into a [`plan::Plan`]. Every error names the file and line:column.

mod locate;
pub mod paths;
pub mod plan;
pub mod types;

pub use locate::SourceMap;
pub use plan::{Plan, PlannedIntervention};
pub use types::*;

use crate::error::{Error, Location, Result};
use std::path::{Path, PathBuf};

/// A recipe with its source text kept, so later checks can point at lines.
#[derive(Debug)]
pub struct LoadedRecipe {
    pub path: PathBuf,
    pub recipe: Recipe,
    pub source: SourceMap,
}

impl LoadedRecipe {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &text)
    }

    /// Parse `text` as if read from `path` (the path is used in messages and to resolve
    /// relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let recipe: Recipe = serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))?;
        Ok(LoadedRecipe {
            path: path.to_path_buf(),
            recipe,
            source: SourceMap::build(text),
        })
    }

    /// The folder relative paths are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Expand a path written in the recipe.
    pub fn resolve_path(&self, yaml_path: &str, text: &str) -> Result<PathBuf> {
        paths::expand(text, &self.base_dir()).map_err(|m| self.error_at(yaml_path, m))
    }

    /// An error pointing at the value at `yaml_path` (e.g. `interventions[0].hooks[1]`).
    pub fn error_at(&self, yaml_path: &str, message: impl Into<String>) -> Error {
        self.error_with(self.source.value(yaml_path), message)
    }

    /// An error pointing at the key that ends `yaml_path`.
    pub fn error_at_key(&self, yaml_path: &str, message: impl Into<String>) -> Error {
        self.error_with(self.source.key(yaml_path), message)
    }

    fn error_with(&self, pos: Option<(usize, usize)>, message: impl Into<String>) -> Error {
        Error::Recipe {
            file: self.path.clone(),
            location: pos.map(|(line, column)| Location {
                file: self.path.clone(),
                line,
                column,
            }),
            message: message.into(),
        }
    }
}

/// serde_yaml's message with its trailing "at line L column C" moved into the location.
fn yaml_error(path: &Path, e: &serde_yaml::Error) -> Error {
    let mut message = e.to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    if message.is_empty() || message == "EOF while parsing a value" {
        message = "the recipe is empty; it needs at least `model:`".into();
    }
    Error::Recipe {
        file: path.to_path_buf(),
        location: e.location().map(|l| Location {
            file: path.to_path_buf(),
            line: l.line(),
            column: l.column(),
        }),
        message,
    }
}
