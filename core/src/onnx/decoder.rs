//! What a decoder offers the exporter: its geometry, the names of the cache tensors, and
//! [`DecoderExport`], which writes the prefill/decode-step nodes (llama:
//! `model/llama/onnx.rs`). `crate::export::decoder` assembles the two graphs from it.

use super::graph::Graph;
use super::ExportHooks;
use crate::error::Result;

/// Graph input with each token's position (`0..` counted over the cache and the new tokens).
pub const POSITION_IDS: &str = "position_ids";

/// Per-layer cache names (`{i}`: the layer) as `pipeline.yaml` records them.
pub const PAST_KEY: &str = "past.{i}.key";
pub const PAST_VALUE: &str = "past.{i}.value";
pub const PRESENT_KEY: &str = "present.{i}.key";
pub const PRESENT_VALUE: &str = "present.{i}.value";
/// The cache inputs of a `--format genai` graph: ONNX Runtime GenAI's own default names
/// (its model builder's, and Hugging Face Optimum's), so other tools find them too.
pub const GENAI_PAST_KEY: &str = "past_key_values.{i}.key";
pub const GENAI_PAST_VALUE: &str = "past_key_values.{i}.value";

/// The name of layer `l`'s cache tensor from a pattern above.
pub fn layer_name(pattern: &str, l: usize) -> String {
    pattern.replace("{i}", &l.to_string())
}

/// The sizes a runtime needs to feed the graphs and hold the cache.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecoderGeometry {
    pub num_layers: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// The longest sequence (prompt + generated tokens) the model supports.
    pub max_positions: usize,
    pub eos_token_ids: Vec<u32>,
    /// The LM head is the embedding matrix (one initializer serves both).
    pub tied_embeddings: bool,
}

/// Value names the decoder nodes read.
pub struct DecoderInputs<'a> {
    /// int64 `[b, s]` token ids of the new tokens.
    pub ids: &'a str,
    /// float `[b, t]`: 1 on real tokens, 0 on padding, over the cached positions then the new ones.
    pub mask: &'a str,
    /// int64 `[b, s]` positions of the new tokens.
    pub positions: &'a str,
    /// Per layer, the cached keys and values `[b, kv_heads, t − s, head_dim]`; `None` in the prefill.
    pub past: Option<&'a [(String, String)]>,
}

/// Value names the decoder nodes produce.
pub struct DecoderOutputs {
    /// float `[b, vocab]`: logits of each row's last real token.
    pub logits: String,
    /// Per layer, keys (after RoPE) and values of all `t` positions.
    pub presents: Vec<(String, String)>,
}

/// A decoder that can write itself as prefill/decode-step graph nodes.
pub trait DecoderExport {
    fn geometry(&self) -> DecoderGeometry;
    /// The nodes from `io` to the logits and the present cache, calling `hooks` at each
    /// hook point (the twin of `CausalLm::forward_cached` + `lm_head` at the last token).
    fn emit_decoder(&self, g: &mut Graph, io: &DecoderInputs, hooks: &mut dyn ExportHooks) -> Result<DecoderOutputs>;
}

