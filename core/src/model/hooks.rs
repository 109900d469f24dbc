//! The callback a backbone makes at each hook point during a forward pass.

use crate::hooks::Site;
use crate::Result;
use candle_core::Tensor;

pub trait Hooks {
    /// A representation hook: return the (possibly edited) hidden state at `site`.
    fn representation(&self, site: Site, h: Tensor) -> Result<Tensor>;
    /// A linear-module hook: `x` is the module's input, `y` its frozen output; return the
    /// (possibly adjusted) output.
    fn linear(&self, site: Site, x: &Tensor, y: Tensor) -> Result<Tensor>;
    /// Whether any hook point of layer `layer` may change something. A backbone may skip
    /// work in layers nothing touches (see `Backbone::forward_from_to_first_token`), so
    /// the default answers yes.
    fn touches_layer(&self, _layer: usize) -> bool {
        true
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
    fn touches_layer(&self, _: usize) -> bool {
        false
    }
}
