//! A `tokenizers::Tokenizer` built from a GGUF file's metadata (GGUF files ship no
//! tokenizer.json): byte-level BPE from `tokenizer.ggml.tokens` and `tokenizer.ggml.merges`,
//! the pre-tokenizer that `tokenizer.ggml.pre` names, the control tokens as special tokens.
//!
//! Pre-tokenizers, as Hugging Face's tokenizer.json of those models define them:
//! - `smollm`: digits split one by one, then GPT-2's byte-level regex split;
//! - `gpt2` / `default`: the byte-level regex split alone.
//! Others (llama3, qwen2, ...) split differently and are refused rather than guessed.

use super::gguf::GgufFile;
use crate::error::{Error, Result};
use crate::model::tokenizer::TextTokenizer;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// llama.cpp's token types (`llama_token_type`): 3 = control (`<|im_start|>`), 4 =
/// user-defined; both are matched whole in text before BPE runs.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// The tokenizer of the GGUF file at `path`, ready for reft (padding with the file's pad id).
pub fn load(path: &Path) -> Result<TextTokenizer> {
    let g = GgufFile::open(path)?;
    let tok = from_gguf(&g)?;
    let pad = g
        .opt_usize("tokenizer.ggml.padding_token_id")?
        .or(g.opt_usize("tokenizer.ggml.eos_token_id")?)
        .unwrap_or(0) as u32;
    Ok(TextTokenizer::from_tokenizer(path, tok, pad))
}

pub fn from_gguf(g: &GgufFile) -> Result<Tokenizer> {
    let bad = |m: String| Error::model(g.path(), m);
    let model = g.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(bad(format!("tokenizer.ggml.model `{model}` is not supported (only `gpt2`, byte-level BPE)")));
    }
    let tokens = g.strings("tokenizer.ggml.tokens")?;
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
    if vocab.len() != tokens.len() {
        return Err(bad(format!("tokenizer.ggml.tokens has duplicates ({} entries, {} distinct)", tokens.len(), vocab.len())));
    }
    let merges = g
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| bad(format!("tokenizer.ggml.merges[{i}] `{m}` is not two tokens separated by a space")))
        })
        .collect::<Result<Vec<_>>>()?;
    // `tokenizers` panics on a merge whose parts or result are not in the vocabulary.
    for (i, (a, b)) in merges.iter().enumerate() {
        for t in [a.clone(), b.clone(), format!("{a}{b}")] {
            if !vocab.contains_key(&t) {
                return Err(bad(format!("tokenizer.ggml.merges[{i}] uses `{t}`, which is not in the vocabulary")));
            }
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| bad(format!("cannot build the BPE model: {e}")))?;
    let mut tok = Tokenizer::new(bpe);

    let pre = g.opt_string("tokenizer.ggml.pre")?.unwrap_or_else(|| "default".into());
    // add_prefix_space false, trim_offsets true, use_regex true: HF's ByteLevel for these models.
    let byte_level = ByteLevel::new(false, true, true);
    let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        "gpt2" | "default" => byte_level.into(),
        other => return Err(bad(format!("tokenizer.ggml.pre `{other}` is not supported (smollm, gpt2, default)"))),
    };
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_decoder(Some(ByteLevelDecoder::default()));

    // Control and user-defined tokens are matched whole, before BPE; control tokens are
    // special (left out by `decode(.., skip_special_tokens = true)`).
    if let Some(types) = g.ints("tokenizer.ggml.token_type")? {
        if types.len() != tokens.len() {
            return Err(bad(format!("tokenizer.ggml.token_type has {} entries for {} tokens", types.len(), tokens.len())));
        }
        let pick = |ty: i64| tokens.iter().zip(&types).filter(move |(_, t)| **t == ty).map(|(s, _)| s.to_string());
        let control: Vec<AddedToken> = pick(CONTROL).map(|s| AddedToken::from(s, true)).collect();
        let user: Vec<AddedToken> = pick(USER_DEFINED).map(|s| AddedToken::from(s, false)).collect();
        tok.add_special_tokens(control).map_err(|e| bad(format!("special tokens: {e}")))?;
        tok.add_tokens(user).map_err(|e| bad(format!("user-defined tokens: {e}")))?;
    }

    if g.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false) {
        let id = g.usize("tokenizer.ggml.bos_token_id")?;
        let bos = tokens.get(id).ok_or_else(|| bad(format!("bos token id {id} is outside the vocabulary")))?.to_string();
        let template = TemplateProcessing::builder()
            .try_single(format!("{bos} $A"))
            .and_then(|b| b.try_pair(format!("{bos} $A {bos} $B")))
            .map_err(|e| bad(format!("BOS template: {e}")))?
            .special_tokens(vec![(bos, id as u32)])
            .build()
            .map_err(|e| bad(format!("BOS template: {e}")))?;
        tok.with_post_processor(Some(template));
    }
    Ok(tok)
}
