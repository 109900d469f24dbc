//! PEFT-style `target` (+ `layers`) selection of linear modules: the alternative to naming
//! `layers[*].attention.query` hooks one by one. A list of names matches PEFT's rule (a
//! module path equal to the name or ending in `.name`), extended with reft's own component
//! names (`attention.query`, `mlp.up`); one string is a regular expression that must match a
//! whole module path, as PEFT's string form does.

use super::types::Target;
use crate::hooks::{Component, HookSurface, Site};

/// Every linear-module site of the model with its checkpoint module path, in layer order.
pub fn linear_sites(surface: &dyn HookSurface) -> Vec<(Site, String)> {
    let mut out = Vec::new();
    for l in 0..surface.num_layers() {
        for c in Component::ALL {
            if let Component::Linear(_) = c {
                let site = Site::new(l, c);
                if let Some(path) = surface.module_path(site) {
                    out.push((site, path));
                }
            }
        }
    }
    out
}

/// Does one `target` name pick this module?
pub fn name_matches(name: &str, site: Site, path: &str) -> bool {
    let name = name.trim();
    !name.is_empty()
        && (path == name
            || path.ends_with(&format!(".{name}"))
            || site.component.name() == name
            || site.component.name().rsplit('.').next() == Some(name))
}

/// Why a target selection failed, with the index of the offending list entry if any.
pub struct TargetError {
    pub entry: Option<usize>,
    pub message: String,
}

/// The sites `target` picks among `layers` (all layers when `None`).
pub fn select(target: &Target, layers: Option<&[usize]>, surface: &dyn HookSurface) -> Result<Vec<Site>, TargetError> {
    let candidates: Vec<(Site, String)> = linear_sites(surface)
        .into_iter()
        .filter(|(s, _)| layers.is_none_or(|ls| s.layer.is_some_and(|l| ls.contains(&l))))
        .collect();
    let known = || {
        let mut names: Vec<&str> = candidates.iter().map(|(s, _)| s.component.name()).collect();
        names.sort();
        names.dedup();
        names.join(", ")
    };
    let picked: Vec<Site> = match target {
        Target::Pattern(p) => {
            let re = regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| TargetError {
                entry: None,
                message: format!("`target` is not a valid regular expression: {e}"),
            })?;
            let picked: Vec<Site> = candidates.iter().filter(|(_, path)| re.is_match(path)).map(|(s, _)| *s).collect();
            if picked.is_empty() {
                let example = candidates.first().map(|(_, p)| p.as_str()).unwrap_or("");
                return Err(TargetError {
                    entry: None,
                    message: format!(
                        "`target` pattern `{p}` matches no linear module; it must match a whole module path such as `{example}`"
                    ),
                });
            }
            picked
        }
        Target::Names(names) => {
            if names.is_empty() {
                return Err(TargetError { entry: None, message: "`target` is empty: name at least one module".into() });
            }
            for (j, n) in names.iter().enumerate() {
                if !candidates.iter().any(|(s, p)| name_matches(n, *s, p)) {
                    return Err(TargetError {
                        entry: Some(j),
                        message: format!("`target` name `{n}` matches no linear module of this model (known: {})", known()),
                    });
                }
            }
            candidates
                .iter()
                .filter(|(s, p)| names.iter().any(|n| name_matches(n, *s, p)))
                .map(|(s, _)| *s)
                .collect()
        }
    };
    Ok(picked)
}
