//! The callback a backbone makes at each hook point during a forward pass.

use crate::hooks::{Component, Site};
use crate::Result;
use candle_core::Tensor;

pub trait Hooks {
    /// A representation hook: return the (possibly edited) hidden state at `site`.
    fn representation(&self, site: Site, h: Tensor) -> Result<Tensor>;
    /// A linear-module hook: `x` is the module's input, `y` its frozen output; return the
    /// (possibly adjusted) output.
    fn linear(&self, site: Site, x: &Tensor, y: Tensor) -> Result<Tensor>;
    /// Whether layer `layer` may be computed for the first token of each row alone
    /// (`Backbone::forward_from_to_first_token`): true when no hook there edits what the
    /// other tokens contribute (their keys and values). The backbone then calls the hooks
    /// after attention, and the query's linear hook, with the first tokens' states
    /// `[batch, 1, ...]`, which must be edited as position 0 of the full states would be.
    /// The default answers no.
    fn first_token_suffices(&self, _layer: usize) -> bool {
        false
    }
    /// The components hooked inside layer `layer` (any but its `block_input` and
    /// `block_output`), so that the backbone may fuse the parts no hook looks at: an empty
    /// list lets it compute the whole layer as one op. None, the default, means unknown:
    /// every hook of the layer is called, op by op.
    fn inner_hooks(&self, _layer: usize) -> Option<Vec<Component>> {
        None
    }
}

/// The unmodified model.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn representation(&self, _: Site, h: Tensor) -> Result<Tensor> {
        Ok(h)
    }
    fn linear(&self, _: Site, _: &Tensor, y: Tensor) -> Result<Tensor> {
        Ok(y)
    }
    fn first_token_suffices(&self, _: usize) -> bool {
        true
    }
    fn inner_hooks(&self, _: usize) -> Option<Vec<Component>> {
        Some(Vec::new())
    }
}
