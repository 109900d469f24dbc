//! Plugin registry: built-in plugins arrive through `inventory`; run-time plugins register
//! through [`register_dynamic`]. Lookups see both.

use super::{BuildSpec, Intervention};
use crate::error::{did_you_mean, Error, Result};
use crate::hooks::HookKind;
use std::sync::RwLock;

/// What a plugin registers: how to build it from a recipe entry.
pub struct PluginFactory {
    pub name: &'static str,
    pub version: &'static str,
    /// One line for `reft plugins`.
    pub description: &'static str,
    /// The kind of hook this plugin attaches to.
    pub hook_kind: HookKind,
    pub build: fn(&mut BuildSpec) -> Result<Box<dyn Intervention>>,
}

inventory::collect!(PluginFactory);

/// Plugins loaded at run time. Factories are leaked on purpose: a plugin library is never
/// unloaded, so its code stays valid for the life of the process.
static DYNAMIC: RwLock<Vec<&'static PluginFactory>> = RwLock::new(Vec::new());

/// Every registered plugin, sorted by name.
pub fn registered() -> Vec<&'static PluginFactory> {
    let mut all: Vec<&'static PluginFactory> = inventory::iter::<PluginFactory>.into_iter().collect();
    all.extend(DYNAMIC.read().expect("plugin registry poisoned").iter().copied());
    all.sort_by_key(|f| f.name);
    all
}

/// The plugin called `name`, or an error listing the known ones with the closest suggested.
pub fn find(name: &str) -> Result<&'static PluginFactory> {
    let all = registered();
    if let Some(f) = all.iter().find(|f| f.name == name) {
        return Ok(f);
    }
    let names: Vec<&str> = all.iter().map(|f| f.name).collect();
    let hint = did_you_mean(name, names.iter().copied())
        .map(|s| format!("did you mean `{s}`? "))
        .unwrap_or_default();
    Err(Error::Plugin(format!(
        "unknown intervention kind `{name}`; {hint}known kinds: {}",
        names.join(", ")
    )))
}

/// Register a plugin loaded at run time. A name already taken is refused.
pub fn register_dynamic(factory: PluginFactory) -> Result<()> {
    if let Some(existing) = registered().into_iter().find(|f| f.name == factory.name) {
        return Err(Error::Plugin(format!(
            "plugin `{}` is already registered (version {}); a plugin may not replace another",
            factory.name, existing.version
        )));
    }
    let leaked: &'static PluginFactory = Box::leak(Box::new(factory));
    DYNAMIC.write().expect("plugin registry poisoned").push(leaked);
    Ok(())
}
