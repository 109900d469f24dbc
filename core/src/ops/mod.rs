//! Fused ops with hand-written backward passes for the frozen backbone.
//!
//! Everything between an intervention and the loss must be differentiable with respect to
//! its *input*, but nothing in a frozen backbone ever needs a gradient for its *weights*.
//! candle's generic ops cannot exploit that: matmul's backward always computes both operand
//! gradients, and the differentiable LayerNorm/softmax are chains of small ops (their fused
//! versions have no backward; docs/plugins.md names them). The ops here are candle `CustomOp`s
//! whose forward is one pass per row (or one gemm) and whose backward gives the input
//! gradient only.
//!
//! Each fused path covers f32/f64 and bf16/f16 on the CPU (16-bit inputs computed in f32 and
//! rounded as torch rounds a 16-bit model); anywhere else (CUDA, or parameters that are
//! themselves trainable) the function falls back to the general differentiable path, so the
//! answer is never wrong, only sometimes slower.

mod bf16_gemm;
mod encoder_layer;
mod frozen_linear;
mod gelu;
mod kernels;
mod layer_norm;
mod pool_gemm;
mod rms_norm;
mod rope;
mod softmax;
mod target_log_probs;

pub use bf16_gemm::available as bf16_native;
pub use encoder_layer::{encoder_layer, encoder_layer_after_projections, encoder_layer_applies, EncoderLayerWeights, FrozenAffine, FrozenNorm};
pub use frozen_linear::{frozen_linear, linear};
pub use gelu::gelu_erf;
pub use layer_norm::frozen_layer_norm;
pub use rms_norm::{frozen_rms_norm, rms_norm_unfused};
pub use rope::{rope_half_rotation, rope_unfused};
pub use softmax::{scaled_masked_softmax, softmax_last};
pub use target_log_probs::target_log_probs;

#[cfg(test)]
mod tests;
