//! A llama-family decoder (llama 2-style: RMSNorm, RoPE, grouped-query attention, SwiGLU),
//! such as SmolLM2, from a GGUF file or a Hugging Face folder, with the same hook points as
//! BERT (see `block.rs` for where each sits in a pre-norm layer).
//!
//! One job per file: `config` (shape, from GGUF metadata or config.json), `gguf` (reading
//! GGUF), `weights` (both layouts into one, GGUF query/key un-permuted), `norm`, `rope`,
//! `attention`, `mlp`, `block`, `model` (the [`Llama`] backbone and causal LM),
//! `tokenizer` (from GGUF metadata), `chat` (the ChatML template).

mod attention;
mod block;
pub mod chat;
pub mod config;
pub mod gguf;
mod mlp;
mod model;
mod norm;
pub mod onnx;
mod rope;
pub mod tokenizer;
pub mod weights;

pub use chat::{ChatMessage, ChatTemplate};
pub use config::LlamaConfig;
pub use gguf::GgufFile;
pub use model::Llama;

#[cfg(test)]
pub(crate) mod tests;
