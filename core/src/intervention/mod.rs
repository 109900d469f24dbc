//! The `Intervention` trait every plugin implements, and the registry that finds plugins.
//!
//! An intervention edits one hook point. At a representation hook it returns the change
//! `Φ(h) − h`, and the caller applies it where the position mask `m` is 1:
//! `h' = h + m ⊙ (Φ(h) − h)`. At a linear-module hook (LoRA's kind) it returns a term added
//! to the module's output as a function of the module's input.

pub mod attach;
pub mod peft_mapping;
mod registry;
mod spec;

pub use registry::{find, register_dynamic, registered, PluginFactory};
pub use spec::{parse_options, BuildSpec};

use crate::error::Result;
use crate::rng::SeededRng;
use candle_core::{Tensor, Var};
use std::cell::RefCell;

/// What an intervention may know about the batch it runs on.
pub struct Ctx<'a> {
    /// 0/1 edit mask in the hidden state's dtype, `[batch, seq, 1]` like the input. At
    /// representation hooks the input holds only the selected positions, so it is all ones.
    pub mask: &'a Tensor,
    /// Training mode: dropout is active only here.
    pub train: bool,
    /// Seeded randomness for dropout, so training runs repeat exactly.
    pub rng: &'a RefCell<SeededRng>,
}

/// A named tensor an intervention owns. Trainable ones are optimised; the rest (e.g. fixed
/// signs of a rotation) are saved and loaded with the adapter but never updated.
pub struct NamedVar {
    pub name: String,
    pub var: Var,
    pub trainable: bool,
}

impl NamedVar {
    pub fn trainable(name: &str, var: Var) -> Self {
        NamedVar {
            name: name.to_string(),
            var,
            trainable: true,
        }
    }
    pub fn fixed(name: &str, var: Var) -> Self {
        NamedVar {
            name: name.to_string(),
            var,
            trainable: false,
        }
    }
}

pub trait Intervention: Send + Sync {
    /// The registered plugin name (`loreft`, `lora`, …).
    fn kind(&self) -> &str;

    /// The change this intervention makes at its hook, for every position of `input`.
    /// Shapes: `input` is `[batch, seq, in]`; the result is `[batch, seq, out]` (equal
    /// widths at representation hooks). Each position's change must depend on that
    /// position alone: at representation hooks the caller gathers the selected positions
    /// of the whole batch into one `[1, n, d]` input and adds the result back at them (as
    /// pyvene does); at linear hooks `input` is the module's whole input.
    fn delta(&self, input: &Tensor, ctx: &Ctx) -> Result<Tensor>;

    /// Every tensor this intervention owns, with stable names (saved in adapters).
    fn state(&self) -> Vec<NamedVar>;

    /// Trainable scalars, counted exactly.
    fn num_trainable(&self) -> usize {
        self.state()
            .iter()
            .filter(|v| v.trainable)
            .map(|v| v.var.elem_count())
            .sum()
    }

    /// For linear-module interventions that can be folded into the frozen weight
    /// (LoRA: `s·B·A`): the `[out, in]` weight delta. `None` means it cannot be merged.
    fn merged_weight_delta(&self) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Emit this intervention into an ONNX graph: given the name of its input (`[batch, seq,
    /// in]`, f32), add nodes and initializers through `g` and return the name of the change
    /// `[batch, seq, out]` — the graph form of [`Intervention::delta`] in eval mode. The
    /// caller applies the position mask at representation hooks (`h + m ⊙ Δ`), exactly as
    /// in candle. Interventions at linear hooks whose [`merged_weight_delta`] is `Some` are
    /// folded into the weight instead and never reach this method.
    ///
    /// The default refuses, naming the plugin, so plugins written before export existed
    /// still compile; `reft export` then fails with this message.
    ///
    /// [`merged_weight_delta`]: Intervention::merged_weight_delta
    fn to_onnx(&self, g: &mut crate::onnx::Graph, input: &str) -> Result<String> {
        let _ = (g, input);
        Err(crate::Error::Plugin(format!(
            "plugin `{}` cannot be exported to ONNX: it does not implement `Intervention::to_onnx` \
             (and has no mergeable weight delta)",
            self.kind()
        )))
    }
}
