//! Parsing hook names (`layers[0..3,5].mlp_output`) and resolving them against a model.

use super::{Component, HookSurface, Site};
use crate::error::{did_you_mean, Error, Result};

/// Which layers a hook names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSelector {
    /// `*`: every layer.
    All,
    /// A list of single layers and ranges. Negative numbers count from the end (`-1` is the
    /// last layer). Ranges are half-open like Rust's `a..b`; `a..=b` includes `b`.
    Items(Vec<LayerItem>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerItem {
    One(i64),
    /// `start..end` (exclusive) or `start..=end` (inclusive, stored as end+1).
    Range(i64, i64),
}

/// A parsed hook name, not yet checked against a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookPattern {
    pub text: String,
    /// `None` for components outside the layer stack (`embeddings`).
    pub layers: Option<LayerSelector>,
    pub component: Component,
}

const GRAMMAR: &str = "expected `embeddings` or `layers[SELECTION].COMPONENT`, where SELECTION is `*` or a \
comma list of layers and ranges such as `0..3,5` or `-1`";

impl HookPattern {
    pub fn parse(text: &str) -> Result<HookPattern> {
        let err = |m: String| Error::hook(text, m);
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(err(format!("empty hook name; {GRAMMAR}")));
        }
        let Some(rest) = trimmed.strip_prefix("layers") else {
            let component = parse_component(trimmed).map_err(err)?;
            if component.is_per_layer() {
                return Err(err(format!(
                    "`{}` exists in every layer: say which, e.g. `layers[*].{}`",
                    component.name(),
                    component.name()
                )));
            }
            return Ok(HookPattern {
                text: text.to_string(),
                layers: None,
                component,
            });
        };
        let rest = rest
            .strip_prefix('[')
            .ok_or_else(|| err(format!("missing `[` after `layers`; {GRAMMAR}")))?;
        let close = rest
            .find(']')
            .ok_or_else(|| err(format!("missing `]` after the layer selection; {GRAMMAR}")))?;
        let layers = parse_selector(&rest[..close]).map_err(err)?;
        let after = &rest[close + 1..];
        let comp_text = after
            .strip_prefix('.')
            .ok_or_else(|| err(format!("missing `.COMPONENT` after `]`; {GRAMMAR}")))?;
        let component = parse_component(comp_text).map_err(err)?;
        if !component.is_per_layer() {
            return Err(err(format!(
                "`{}` is not inside a layer: write it alone, without `layers[...]`",
                component.name()
            )));
        }
        Ok(HookPattern {
            text: text.to_string(),
            layers: Some(layers),
            component,
        })
    }

    /// Expand into concrete sites on `model`, checking that every layer and the component exist.
    /// Sites come out in layer order without duplicates.
    pub fn resolve(&self, model: &dyn HookSurface) -> Result<Vec<Site>> {
        let err = |m: String| Error::hook(&self.text, m);
        if model.component_dims(self.component).is_none() {
            let have: Vec<&str> = model.components().iter().map(|c| c.name()).collect();
            return Err(err(format!(
                "this model has no `{}`; its components are: {}",
                self.component.name(),
                have.join(", ")
            )));
        }
        let Some(selector) = &self.layers else {
            return Ok(vec![Site::embeddings()]);
        };
        let n = model.num_layers();
        let n_i = n as i64;
        let describe = || format!("this model has {n} layers (0..{n}, or -{n}..-1 from the end)");
        let norm = |i: i64| -> Result<usize> {
            let j = if i < 0 { n_i + i } else { i };
            if j < 0 || j >= n_i {
                return Err(err(format!("layer {i} does not exist: {}", describe())));
            }
            Ok(j as usize)
        };
        let mut layers = Vec::new();
        match selector {
            LayerSelector::All => layers.extend(0..n),
            LayerSelector::Items(items) => {
                for item in items {
                    match *item {
                        LayerItem::One(i) => layers.push(norm(i)?),
                        LayerItem::Range(a, b) => {
                            let start = if a < 0 { n_i + a } else { a };
                            let end = if b < 0 { n_i + b } else { b };
                            if start < 0 || end > n_i || start >= end {
                                return Err(err(format!(
                                    "layer range {a}..{b} is empty or out of bounds: {}",
                                    describe()
                                )));
                            }
                            layers.extend(start as usize..end as usize);
                        }
                    }
                }
            }
        }
        layers.sort_unstable();
        layers.dedup();
        Ok(layers
            .into_iter()
            .map(|l| Site::new(l, self.component))
            .collect())
    }
}

fn parse_component(text: &str) -> std::result::Result<Component, String> {
    if let Some(c) = Component::from_name(text) {
        return Ok(c);
    }
    let names: Vec<&str> = Component::ALL.iter().map(|c| c.name()).collect();
    let hint = did_you_mean(text, names.iter().copied())
        .map(|s| format!("did you mean `{s}`? "))
        .unwrap_or_default();
    Err(format!(
        "unknown component `{text}`; {hint}known components: {}",
        names.join(", ")
    ))
}

fn parse_int(s: &str) -> std::result::Result<i64, String> {
    let s = s.trim();
    s.parse::<i64>()
        .map_err(|_| format!("`{s}` is not a layer number; {GRAMMAR}"))
}

fn parse_selector(text: &str) -> std::result::Result<LayerSelector, String> {
    let text = text.trim();
    if text == "*" {
        return Ok(LayerSelector::All);
    }
    if text.is_empty() {
        return Err(format!("empty layer selection `[]`; {GRAMMAR}"));
    }
    let mut items = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let item = if let Some((a, b)) = part.split_once("..=") {
            let b = parse_int(b)?;
            LayerItem::Range(parse_int(a)?, b.checked_add(1).ok_or("layer number too large")?)
        } else if let Some((a, b)) = part.split_once("..") {
            LayerItem::Range(parse_int(a)?, parse_int(b)?)
        } else {
            LayerItem::One(parse_int(part)?)
        };
        items.push(item);
    }
    Ok(LayerSelector::Items(items))
}
