//! Hook points: where an intervention attaches.
//!
//! Names follow pyvene's vocabulary, written against layers:
//! `embeddings`, `layers[2].block_output`, `layers[0..3,5].mlp_output`,
//! `layers[*].attention_output`, and linear modules such as `layers[*].attention.query`
//! (the kind of hook LoRA uses). [`HookPattern::parse`] reads the text;
//! [`HookPattern::resolve`] checks it against a backbone and expands it into [`Site`]s.

mod component;
mod forward;
mod pattern;
pub mod positions;

pub use component::{Component, HookKind, LinearModule};
pub use forward::{Hooks, NoHooks};
pub use pattern::{HookPattern, LayerSelector};
pub use positions::Positions;

use std::fmt;

/// One concrete place in one forward pass: a component, at a layer where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site {
    /// `None` only for components outside the layer stack (`embeddings`).
    pub layer: Option<usize>,
    pub component: Component,
}

impl Site {
    pub fn new(layer: usize, component: Component) -> Self {
        Site {
            layer: Some(layer),
            component,
        }
    }
    pub fn embeddings() -> Self {
        Site {
            layer: None,
            component: Component::Embeddings,
        }
    }
    pub fn kind(&self) -> HookKind {
        self.component.kind()
    }
}

impl fmt::Display for Site {
    /// The canonical hook name, which parses back to this site.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer {
            Some(l) => write!(f, "layers[{l}].{}", self.component.name()),
            None => write!(f, "{}", self.component.name()),
        }
    }
}

/// What a backbone offers at its hook points: how many layers, which components, and
/// the width of each (a representation's `d`, a linear module's `in -> out`).
pub trait HookSurface {
    fn num_layers(&self) -> usize;
    /// `(input width, output width)` of a component, or `None` if this model has no such
    /// component. For representation hooks the two are equal.
    fn component_dims(&self, component: Component) -> Option<(usize, usize)>;
    /// The checkpoint's module path of a linear module at `site` (e.g. BERT's
    /// `encoder.layer.0.attention.self.query`): what PEFT's `target_modules` match against and
    /// what its adapter keys and a merged model's weight names are built from. `None` where the
    /// model has no such module.
    fn module_path(&self, _site: Site) -> Option<String> {
        None
    }
    /// Every component this model has, for error messages and docs.
    fn components(&self) -> Vec<Component> {
        Component::ALL
            .iter()
            .copied()
            .filter(|c| self.component_dims(*c).is_some())
            .collect()
    }
}

#[cfg(test)]
mod tests;
