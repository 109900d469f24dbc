//! What a plugin's `reft_plugin_register` receives.

use super::loader::LoadedLibrary;
use crate::error::{Error, Result};
use crate::intervention::{register_dynamic, registered, PluginFactory};
use std::path::{Path, PathBuf};

/// Collects the factories one library registers. The first refusal (a name that is
/// already taken) is kept and reported by the loader.
pub struct Registrar {
    library: PathBuf,
    /// Who registered what so far, to name the owner of a taken name.
    owners: Vec<(PathBuf, &'static str)>,
    names: Vec<&'static str>,
    error: Option<Error>,
}

impl Registrar {
    pub(super) fn new(library: &Path, loaded: &[LoadedLibrary]) -> Self {
        let owners = loaded.iter().flat_map(|l| l.plugins.iter().map(|n| (l.path.clone(), *n))).collect();
        Registrar { library: library.to_path_buf(), owners, names: Vec::new(), error: None }
    }

    /// Register one intervention plugin. A name already registered (built in, or by another
    /// library) is refused: a plugin may not replace another.
    pub fn add(&mut self, factory: PluginFactory) {
        if self.error.is_some() {
            return;
        }
        if registered().iter().any(|f| f.name == factory.name) {
            let owner = match self.owners.iter().find(|(_, n)| *n == factory.name) {
                Some((path, _)) => format!("by {}", path.display()),
                None => "as a built-in plugin".to_string(),
            };
            self.error = Some(Error::Plugin(format!(
                "plugin library {}: plugin `{}` is already registered {owner}; a plugin may not replace another",
                self.library.display(),
                factory.name
            )));
            return;
        }
        let name = factory.name;
        match register_dynamic(factory) {
            Ok(()) => self.names.push(name),
            Err(e) => self.error = Some(Error::Plugin(format!("plugin library {}: {e}", self.library.display()))),
        }
    }

    pub(super) fn finish(self) -> Result<Vec<&'static str>> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.names),
        }
    }
}
