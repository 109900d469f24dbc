//! Text generation with a causal LM and a KV cache.
//!
//! The prompt runs once through the model (the *prefill*), with the caller's hooks (an
//! adapter's interventions) applied there; every later token is one cached decoding step
//! with no hooks, so an intervention on the prompt costs nothing per generated token.

mod sampling;
mod stream;

#[cfg(test)]
mod tests;

pub use sampling::{argmax, Sampler, Sampling};
pub use stream::TextStream;

use crate::error::{Error, Result};
use crate::model::tokenizer::batch_from_ids;
use crate::model::{Batch, CausalLm, Hooks, NoHooks};
use candle_core::{DType, Tensor};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Tokens that end generation besides the model's own end-of-sequence tokens.
    pub extra_stop_tokens: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The model emitted this stop token (not included in the output).
    StopToken(u32),
    MaxNewTokens,
    /// The model's context is full.
    ContextFull,
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated tokens, without the prompt and without the stop token.
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    pub prompt_tokens: usize,
    pub prefill_secs: f64,
    /// Time of the decoding steps (every token after the first).
    pub decode_secs: f64,
}

impl Generation {
    /// Decoding speed: tokens from cached steps per second.
    pub fn decode_tokens_per_sec(&self) -> f64 {
        let steps = self.tokens.len().saturating_sub(1) + usize::from(matches!(self.stop, StopReason::StopToken(_)));
        if self.decode_secs > 0.0 {
            steps as f64 / self.decode_secs
        } else {
            0.0
        }
    }
}

/// Logits of the last position of `hidden` `[1, s, d]` as a host vector.
fn last_logits(model: &dyn CausalLm, hidden: &Tensor) -> Result<Vec<f32>> {
    let s = hidden.dim(1)?;
    let logits = model.lm_head(&hidden.narrow(1, s - 1, 1)?)?;
    Ok(logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// Generate from one prompt (`prompt` has batch size 1, no padding). `hooks` apply to the
/// prompt's forward pass only. `on_token` sees each token as it is chosen (for streaming).
pub fn generate(
    model: &dyn CausalLm,
    prompt: &Batch,
    hooks: &dyn Hooks,
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    let (b, s) = prompt.dims();
    if b != 1 {
        return Err(Error::Shape { context: "generation prompt".into(), expected: "one prompt (batch size 1)".into(), got: vec![b, s] });
    }
    if prompt.attention_rows[0].contains(&0) {
        return Err(Error::Other("generation prompt: padding is not supported (give one unpadded prompt)".into()));
    }
    let mut cache = model.new_cache();
    let device = prompt.input_ids.device();
    run_generation(s, model.max_positions(), model.stop_tokens(), opts, on_token, |step| match step {
        Step::Prefill => last_logits(model, &model.forward_cached(prompt, &mut cache, hooks)?),
        Step::Next(tok) => {
            let step = batch_from_ids(&[vec![tok]], 0, device)?;
            last_logits(model, &model.forward_cached(&step, &mut cache, &NoHooks)?)
        }
    })
}

/// What [`run_generation`] asks its engine for.
pub(crate) enum Step {
    /// Run the prompt, filling the KV cache: the last position's logits.
    Prefill,
    /// Append this token to the cache: the logits after it.
    Next(u32),
}

/// The generation loop both engines share (candle here, ONNX Runtime in
/// `runtime::decoder`), so they stop and time alike: the prefill once, then sample, stop on
/// a stop token (the model's or the options'), `max_new_tokens` or a full context, else
/// one cached step. `forward` runs the engine; `on_token` sees each token as it is chosen.
pub(crate) fn run_generation(
    prompt_len: usize,
    max_positions: usize,
    model_stops: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> Result<()>,
    mut forward: impl FnMut(Step) -> Result<Vec<f32>>,
) -> Result<Generation> {
    if prompt_len == 0 {
        return Err(Error::Other("generation prompt: no tokens".into()));
    }
    if prompt_len >= max_positions {
        return Err(Error::Other(format!("the prompt has {prompt_len} tokens; the model's context holds {max_positions}")));
    }
    let stops: Vec<u32> = model_stops.iter().chain(&opts.extra_stop_tokens).copied().collect();
    let mut sampler = Sampler::new(opts.sampling.clone());
    let mut gen = Generation { tokens: Vec::new(), stop: StopReason::MaxNewTokens, prompt_tokens: prompt_len, prefill_secs: 0.0, decode_secs: 0.0 };
    if opts.max_new_tokens == 0 {
        return Ok(gen);
    }
    let start = Instant::now();
    let mut logits = forward(Step::Prefill)?;
    gen.prefill_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut cached = prompt_len;
    loop {
        let tok = sampler.sample(&logits)?;
        if stops.contains(&tok) {
            gen.stop = StopReason::StopToken(tok);
            break;
        }
        gen.tokens.push(tok);
        on_token(tok)?;
        if gen.tokens.len() >= opts.max_new_tokens {
            gen.stop = StopReason::MaxNewTokens;
            break;
        }
        if cached + 1 > max_positions {
            gen.stop = StopReason::ContextFull;
            break;
        }
        logits = forward(Step::Next(tok))?;
        cached += 1;
    }
    gen.decode_secs = start.elapsed().as_secs_f64();
    Ok(gen)
}
