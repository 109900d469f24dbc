//! Causal language modelling on instruction/response pairs, the set-up of pyreft's
//! `make_last_position_supervised_data_module` and `ReftDataCollator` (rewritten here):
//!
//! - each example is the prompt — rendered as a user turn of the model's chat template
//!   (ChatML, ending with `<|im_start|>assistant\n`) unless the recipe asks for raw text —
//!   followed by the response and the model's end token (`<|im_end|>` for SmolLM2), so the
//!   model learns to stop;
//! - the loss is the mean next-token cross-entropy over the response tokens and that end
//!   token only: prompt tokens carry the label [`IGNORE`] (-100, as in Hugging Face);
//! - interventions edit positions counted inside the prompt (`f1+l1`: its first and last
//!   tokens), never response tokens. Generation runs them in the prefill of the same
//!   rendered prompt, so training and generation edit the very same tokens;
//! - the LM head is the model's own and frozen (tied to the embeddings in SmolLM2): no
//!   head trains, only the interventions.

use super::metrics::{LmMetrics, TaskMetrics};
use super::{Encoded, TaskModel, Targets};
use crate::intervention::attach::Interventions;
use crate::error::{Error, Result};
use crate::model::llama::{ChatMessage, ChatTemplate};
use crate::model::tokenizer::{batch_from_ids, TextTokenizer};
use crate::model::{Backbone, Batch, CausalLm, PrefixCache};
use crate::rng::SeededRng;
use candle_core::{DType, Device, Tensor};
use std::cell::RefCell;
use std::path::Path;

/// The label of a token that carries no loss.
pub const IGNORE: i64 = -100;

/// Positions scored per LM-head call: bounds the `[n, vocab]` logits (49,152 wide for
/// SmolLM2, 200 KB a row in f32) however large the batch.
const HEAD_CHUNK: usize = 256;

/// How a prompt becomes the text the model reads, in training and in generation alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptFormat {
    /// A user turn of the chat template (after `system`, or the template's default system
    /// message), then the opening of the assistant's turn.
    Chat { template: ChatTemplate, system: Option<String> },
    /// The prompt text as it is.
    Raw,
}

impl PromptFormat {
    /// The format for the model at `model_path`: its chat template when `chat`.
    pub fn new(chat: bool, system: Option<String>, model_path: &Path) -> Result<Self> {
        if !chat {
            return Ok(PromptFormat::Raw);
        }
        Ok(PromptFormat::Chat { template: ChatTemplate::for_model(model_path)?, system })
    }

    pub fn render(&self, prompt: &str) -> Result<String> {
        match self {
            PromptFormat::Raw => Ok(prompt.to_string()),
            PromptFormat::Chat { template, system } => {
                let mut messages: Vec<ChatMessage> = system.iter().map(|s| ChatMessage::new("system", s)).collect();
                messages.push(ChatMessage::new("user", prompt));
                template.render(&messages, true)
            }
        }
    }

    /// The prompt's token ids, in training and in generation alike: raw text with the
    /// tokenizer's special tokens (as a text-generation pipeline adds them), a rendered chat
    /// prompt without them (the template writes its own, as `apply_chat_template` does).
    pub fn encode(&self, tok: &TextTokenizer, prompt: &str) -> Result<Vec<u32>> {
        let text = self.render(prompt)?;
        match self {
            PromptFormat::Raw => tok.encode(&text, None),
            PromptFormat::Chat { .. } => tok.encode_continuation(&text),
        }
    }
}

/// One tokenised pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPair {
    /// Prompt, response, end token.
    pub ids: Vec<u32>,
    /// Tokens of the rendered prompt (they lead `ids`).
    pub prompt_len: usize,
    /// The response was cut to fit `max_length` (its end token then falls away too).
    pub truncated: bool,
}

/// Tokenise one pair. The prompt is tokenised alone, exactly as generation tokenises it,
/// and the response after it without special tokens, so the prompt's tokens (and hence
/// the positions interventions edit) are the same at training and generation time. At
/// most `max_length` tokens: the response is cut if need be; a prompt that leaves no room
/// for one response token is an error.
pub fn encode_pair(tok: &TextTokenizer, format: &PromptFormat, eos: u32, max_length: usize, prompt: &str, response: &str) -> Result<EncodedPair> {
    let mut ids = format.encode(tok, prompt)?;
    let prompt_len = ids.len();
    if prompt_len == 0 {
        return Err(Error::Other("the prompt has no tokens".into()));
    }
    if prompt_len >= max_length {
        return Err(Error::Other(format!(
            "the prompt takes {prompt_len} tokens{}, leaving no room for the response within `data.max_length` {max_length}; raise it",
            if matches!(format, PromptFormat::Chat { .. }) { " with the chat template" } else { "" }
        )));
    }
    ids.extend(tok.encode_continuation(response)?);
    ids.push(eos);
    let truncated = ids.len() > max_length;
    ids.truncate(max_length);
    Ok(EncodedPair { ids, prompt_len, truncated })
}

/// Tokenise every pair of a data file (`path` names it in errors); also returns how many
/// responses were cut to `max_length`.
pub fn encode_pairs(
    path: &Path,
    pairs: &[crate::data::Pair],
    tok: &TextTokenizer,
    format: &PromptFormat,
    eos: u32,
    max_length: usize,
) -> Result<(Encoded, usize)> {
    let mut ids = Vec::with_capacity(pairs.len());
    let mut prompt_lens = Vec::with_capacity(pairs.len());
    let mut truncated = 0;
    for p in pairs {
        let e = encode_pair(tok, format, eos, max_length, &p.prompt, &p.response)
            .map_err(|e| Error::Other(format!("{}:{}: {e}", path.display(), p.line)))?;
        truncated += usize::from(e.truncated);
        ids.push(e.ids);
        prompt_lens.push(e.prompt_len);
    }
    Ok((Encoded { ids, targets: Targets::PromptLengths(prompt_lens) }, truncated))
}

/// Labels in Hugging Face's convention: [`IGNORE`] on prompt tokens, the token id on each
/// response token (and the end token). The logits at position `t` are scored against
/// `labels[t + 1]`.
pub fn labels(ids: &[u32], prompt_len: usize) -> Vec<i64> {
    ids.iter().enumerate().map(|(t, &id)| if t < prompt_len { IGNORE } else { id as i64 }).collect()
}

/// Which logits the loss reads in a right-padded `[rows.len(), seq]` batch: flat indices
/// `b·seq + t` of every position whose next token has a label, and that token.
pub fn scored_positions(rows: &[&[u32]], prompt_lens: &[usize], seq: usize) -> (Vec<u32>, Vec<u32>) {
    let (mut positions, mut targets) = (Vec::new(), Vec::new());
    for (b, (ids, &p)) in rows.iter().zip(prompt_lens).enumerate() {
        let labels = labels(ids, p);
        for t in 0..ids.len().saturating_sub(1) {
            if labels[t + 1] != IGNORE {
                positions.push((b * seq + t) as u32);
                targets.push(labels[t + 1] as u32);
            }
        }
    }
    (positions, targets)
}

/// 1 on each row's prompt tokens, 0 on response and padding: the tokens intervention
/// positions (`f1`, `l1`, `all`) count over.
pub fn prompt_scope(prompt_lens: &[usize], seq: usize) -> Vec<Vec<u32>> {
    prompt_lens.iter().map(|&p| (0..seq).map(|t| u32::from(t < p)).collect()).collect()
}

/// A decoder with its interventions: the causal-LM task's model.
pub struct CausalLmModel<'a> {
    pub backbone: &'a dyn Backbone,
    lm: &'a dyn CausalLm,
    pub interventions: &'a Interventions,
    pub dtype: DType,
    pub device: Device,
}

impl<'a> CausalLmModel<'a> {
    pub fn new(backbone: &'a dyn Backbone, interventions: &'a Interventions, dtype: DType, device: &Device) -> Result<Self> {
        let lm = backbone.as_causal_lm().ok_or_else(|| {
            Error::Other(format!("causal_lm needs a decoder with an LM head; this is a `{}` model", backbone.arch()))
        })?;
        Ok(CausalLmModel { backbone, lm, interventions, dtype, device: device.clone() })
    }

    /// Final hidden states of `batch` (rows with prompts of `prompt_lens` tokens), the
    /// interventions editing prompt positions only. With `prefix`, the frozen layers below
    /// its layer are read from the cache (examples `idx`).
    pub fn hidden(
        &self,
        batch: &Batch,
        prompt_lens: &[usize],
        prefix: Option<(&PrefixCache, &[usize])>,
        train: bool,
        rng: &RefCell<SeededRng>,
    ) -> Result<Tensor> {
        let (_, s) = batch.dims();
        let scope = prompt_scope(prompt_lens, s);
        let hooks = self.interventions.hooks_within(batch, &scope, train, self.dtype, rng)?;
        match prefix {
            Some((cache, idx)) => {
                let h = cache.gather(idx, batch)?;
                self.backbone.forward_from(h, cache.layer, batch, &hooks)
            }
            None => self.backbone.forward(batch, &hooks),
        }
    }

    /// The summed next-token negative log-likelihood of the response tokens of `batch`
    /// (whose rows are `rows`), and how many tokens it sums over.
    pub fn response_nll(
        &self,
        batch: &Batch,
        rows: &[&[u32]],
        prompt_lens: &[usize],
        prefix: Option<(&PrefixCache, &[usize])>,
        train: bool,
        rng: &RefCell<SeededRng>,
    ) -> Result<(Tensor, usize)> {
        let hidden = self.hidden(batch, prompt_lens, prefix, train, rng)?;
        let (b, s, d) = hidden.dims3()?;
        let (positions, targets) = scored_positions(rows, prompt_lens, s);
        if positions.is_empty() {
            return Err(Error::Other("a causal-LM batch with no response tokens to score".into()));
        }
        let flat = hidden.reshape((b * s, d))?;
        let device = hidden.device();
        let mut total: Option<Tensor> = None;
        // Only the scored positions go through the 49k-wide head, a chunk at a time.
        for (pos, tgt) in positions.chunks(HEAD_CHUNK).zip(targets.chunks(HEAD_CHUNK)) {
            let h = flat.index_select(&Tensor::new(pos, device)?, 0)?;
            let logits = self.lm.lm_head(&h)?;
            // One fused op, scored in f32 even for 16-bit logits (a half-precision normaliser
            // over the vocabulary would keep few bits), without `[rows, vocab]` temporaries.
            let picked = crate::ops::target_log_probs(&logits, tgt)?.sum_all()?;
            total = Some(match total {
                None => picked,
                Some(t) => (t + picked)?,
            });
        }
        Ok((total.expect("at least one chunk").neg()?, positions.len()))
    }
}

impl TaskModel for CausalLmModel<'_> {
    /// Mean over the batch's response tokens (token-weighted, as Hugging Face's loss).
    fn batch_loss(&self, batch: &Batch, set: &Encoded, idx: &[usize], prefix: Option<&PrefixCache>, rng: &RefCell<SeededRng>) -> Result<Tensor> {
        let all = set.prompt_lengths()?;
        let rows: Vec<&[u32]> = idx.iter().map(|&i| set.ids[i].as_slice()).collect();
        let prompt_lens: Vec<usize> = idx.iter().map(|&i| all[i]).collect();
        let (sum, n) = self.response_nll(batch, &rows, &prompt_lens, prefix.map(|c| (c, idx)), true, rng)?;
        Ok((sum / n as f64)?)
    }

    fn loss_weight(&self, set: &Encoded, idx: &[usize]) -> Result<usize> {
        let all = set.prompt_lengths()?;
        let rows: Vec<&[u32]> = idx.iter().map(|&i| set.ids[i].as_slice()).collect();
        let prompt_lens: Vec<usize> = idx.iter().map(|&i| all[i]).collect();
        let seq = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        Ok(scored_positions(&rows, &prompt_lens, seq).0.len())
    }

    fn metrics(&self, set: &Encoded, batch_size: usize, pad_id: u32, prefix: Option<&PrefixCache>) -> Result<TaskMetrics> {
        let all = set.prompt_lengths()?;
        let device = self.device.clone();
        let rng = RefCell::new(SeededRng::new(0));
        let mut order: Vec<usize> = (0..set.len()).collect();
        order.sort_by_key(|&i| set.ids[i].len());
        let (mut sum, mut tokens) = (0f64, 0usize);
        for chunk in order.chunks(batch_size.max(1)) {
            let rows: Vec<&[u32]> = chunk.iter().map(|&i| set.ids[i].as_slice()).collect();
            let owned: Vec<Vec<u32>> = rows.iter().map(|r| r.to_vec()).collect();
            let batch = batch_from_ids(&owned, pad_id, &device)?;
            let prompt_lens: Vec<usize> = chunk.iter().map(|&i| all[i]).collect();
            let (s, n) = self.response_nll(&batch, &rows, &prompt_lens, prefix.map(|c| (c, chunk)), false, &rng)?;
            sum += s.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            tokens += n;
        }
        Ok(TaskMetrics::CausalLm(LmMetrics::from_sum(sum, tokens, set.len())))
    }

    /// The backbone's activations above the interventions stay alive for backward until a
    /// batch's loss is dropped: evaluate at the training batch size, not more.
    fn eval_batch_size(&self, train_batch: usize) -> usize {
        train_batch
    }
}

#[cfg(test)]
mod tests;
