//! YAML recipes: parsing into typed structs ([`types`]), and validation against the
//! registry and the model into a [`plan::Plan`]. Every error names the file and line:column.

mod locate;
pub mod paths;
pub mod plan;
pub mod target;
mod task_check;
mod train_check;
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
        Self::parse_with_overrides(path, text, &[])
    }

    /// Load with `key.path=value` overrides (the CLI's `--set`), each value read as YAML.
    pub fn load_with_overrides(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse_with_overrides(path, &text, overrides)
    }

    pub fn parse_with_overrides(path: &Path, text: &str, overrides: &[String]) -> Result<Self> {
        // A byte-order mark (as some editors save) would count as a column in libyaml and
        // misalign the first line against the rest.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            return Err(Error::Recipe {
                file: path.to_path_buf(),
                location: None,
                message: "the recipe is empty; it needs at least `model:` with the model's `path:`".into(),
            });
        }
        crate::io::check_yaml_shape(text).map_err(|(message, at)| Error::Recipe {
            file: path.to_path_buf(),
            location: at.map(|(line, column)| crate::error::Location { file: path.to_path_buf(), line, column }),
            message,
        })?;
        let recipe: Recipe = if overrides.is_empty() {
            serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))?
        } else {
            let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))?;
            for o in overrides {
                apply_override(&mut value, o).map_err(|m| Error::Recipe {
                    file: path.to_path_buf(),
                    location: None,
                    message: format!("--set {o}: {m}"),
                })?;
            }
            serde_yaml::from_value(value).map_err(|e| Error::Recipe {
                file: path.to_path_buf(),
                location: None,
                message: format!("after --set overrides: {e}"),
            })?
        };
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
        self.error_with(self.source.nearest(yaml_path), message)
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
    // Drop the " at line L column C" that repeats the location; a second one (where the
    // enclosing flow collection began) stays, as it helps find an unclosed bracket.
    let at = e.location().map(|l| format!(" at line {} column {}", l.line(), l.column()));
    if let Some(i) = at.as_deref().and_then(|at| message.find(at)) {
        message.replace_range(i..i + at.as_deref().map_or(0, str::len), "");
    } else if let Some(i) = message.rfind(" at line ") {
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

/// Set `a.b[2].c=value` in a YAML tree, creating mappings along the way.
fn apply_override(root: &mut serde_yaml::Value, text: &str) -> std::result::Result<(), String> {
    let (key, raw) = text.split_once('=').ok_or("expected KEY=VALUE, e.g. train.lr=1e-3")?;
    let value: serde_yaml::Value = serde_yaml::from_str(raw).map_err(|e| format!("value is not YAML: {e}"))?;
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => {
                let idx = rest.strip_suffix(']').and_then(|r| r.parse::<usize>().ok()).ok_or("bad index")?;
                (n, Some(idx))
            }
            None => (*part, None),
        };
        if name.is_empty() {
            return Err(format!("empty key segment in `{key}`"));
        }
        if !node.is_mapping() {
            return Err(format!("`{}` is not a mapping", parts[..i].join(".")));
        }
        let map = node.as_mapping_mut().unwrap();
        let last = i + 1 == parts.len() && index.is_none();
        if last {
            map.insert(serde_yaml::Value::from(name), value);
            return Ok(());
        }
        node = map
            .entry(serde_yaml::Value::from(name))
            .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
        if let Some(idx) = index {
            let seq = node.as_sequence_mut().ok_or_else(|| format!("`{name}` is not a list"))?;
            let len = seq.len();
            node = seq.get_mut(idx).ok_or_else(|| format!("`{name}` has {len} items, no [{idx}]"))?;
            if i + 1 == parts.len() {
                *node = value;
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod override_tests {
    use super::*;

    #[test]
    fn overrides_set_nested_values() {
        let text = "model: {path: /m}\ninterventions:\n  - {kind: loreft, hooks: x, rank: 4}\ntrain: {lr: 0.1}\n";
        let r = LoadedRecipe::parse_with_overrides(
            Path::new("r.yaml"),
            text,
            &["train.lr=0.002".into(), "train.seed=7".into(), "interventions[0].rank=2".into()],
        )
        .unwrap();
        assert_eq!(r.recipe.train.lr, 0.002);
        assert_eq!(r.recipe.train.seed, 7);
        assert_eq!(r.recipe.interventions[0].options["rank"], serde_yaml::Value::from(2));
        let e = LoadedRecipe::parse_with_overrides(Path::new("r.yaml"), text, &["train.lr".into()]).unwrap_err();
        assert!(e.to_string().contains("KEY=VALUE"));
        let e = LoadedRecipe::parse_with_overrides(Path::new("r.yaml"), text, &["train.epocs=2".into()]).unwrap_err();
        assert!(e.to_string().contains("epocs"), "{e}");
    }
}
