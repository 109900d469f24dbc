//! What a decoder offers beyond [`super::Backbone`]: next-token logits and incremental
//! decoding with a [`KvCache`]. Generation (`crate::generate`) runs on this trait alone.

use super::{Batch, Hooks, KvCache};
use crate::error::Result;
use candle_core::Tensor;

pub trait CausalLm: Send + Sync {
    fn vocab_size(&self) -> usize;
    /// The longest sequence (prompt + generated tokens) the model supports.
    fn max_positions(&self) -> usize;
    /// Token ids that end a generation (from the model's metadata).
    fn stop_tokens(&self) -> &[u32];
    /// Logits `[.., vocab]` from final hidden states `[.., hidden]` (what
    /// [`super::Backbone::forward`] returns).
    fn lm_head(&self, hidden: &Tensor) -> Result<Tensor>;
    /// An empty cache for [`CausalLm::forward_cached`].
    fn new_cache(&self) -> KvCache;
    /// Run `batch`'s tokens as the positions after those in `cache` (causally: each token
    /// sees the cached ones and those before it), add their keys and values to the cache,
    /// and return their final hidden states `[b, s, hidden]`. `hooks` apply to these tokens
    /// only; with an empty cache this is [`super::Backbone::forward`].
    fn forward_cached(&self, batch: &Batch, cache: &mut KvCache, hooks: &dyn Hooks) -> Result<Tensor>;
    /// The ONNX export of this decoder (prefill and decode-step graphs), if it has one.
    fn onnx_decoder(&self) -> Option<&dyn crate::onnx::DecoderExport> {
        None
    }
}
