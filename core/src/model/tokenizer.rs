//! Loading a HF `tokenizer.json` and turning texts into padded batches.

use super::Batch;
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

pub struct TextTokenizer {
    path: PathBuf,
    inner: Tokenizer,
    pad_id: u32,
}

impl TextTokenizer {
    /// Load `tokenizer.json`. Padding and truncation stored in the file are switched off
    /// (MiniLM's pads everything to 128): reft pads each batch to its longest text and
    /// truncates at the recipe's `max_length`.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::model(path, "tokenizer file not found"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let invalid = |e: &dyn std::fmt::Display| Error::model(path, format!("not a valid tokenizer.json: {e}"));
        // Check the JSON syntax first: `tokenizers` panics on a syntax error inside some
        // sections (`decoder`) instead of returning it, and on templates that name special
        // tokens they do not define.
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| invalid(&e))?;
        check_post_processor(json.get("post_processor")).map_err(|e| invalid(&e))?;
        let mut inner: Tokenizer = guarded(|| text.parse())
            .map_err(|e| invalid(&e))?
            .map_err(|e| invalid(&e))?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .unwrap_or(0);
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::model(path, format!("cannot switch off truncation: {e}")))?;
        Ok(TextTokenizer {
            path: path.to_path_buf(),
            inner,
            pad_id,
        })
    }

    /// Wrap a tokenizer built in code (e.g. from a GGUF file's metadata at `path`).
    pub fn from_tokenizer(path: &Path, mut inner: Tokenizer, pad_id: u32) -> Self {
        inner.with_padding(None);
        // Never fails with no truncation.
        let _ = inner.with_truncation(None);
        TextTokenizer { path: path.to_path_buf(), inner, pad_id }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Text of token ids (with special tokens written out unless `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let fail = |e: &dyn std::fmt::Display| Error::model(&self.path, format!("cannot decode {} tokens: {e}", ids.len()));
        guarded(|| self.inner.decode(ids, skip_special))
            .map_err(|e| fail(&e))?
            .map_err(|e| fail(&e))
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Token ids of one text with the model's special tokens, at most `max_length` long.
    pub fn encode(&self, text: &str, max_length: Option<usize>) -> Result<Vec<u32>> {
        let fail = |e: &dyn std::fmt::Display| Error::model(&self.path, format!("cannot tokenise {text:?}: {e}"));
        let mut enc = guarded(|| self.inner.encode(text, true))
            .map_err(|e| fail(&e))?
            .map_err(|e| fail(&e))?;
        if let Some(max) = max_length {
            if enc.len() > max {
                // Truncate keeping the special tokens at the ends, as HF's `truncation=True` does.
                let added = self.inner.get_post_processor().map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
                if max < added {
                    // (`tokenizers` would subtract with overflow.)
                    return Err(Error::model(
                        &self.path,
                        format!("max_length {max} is too small: this tokenizer adds {added} special tokens to every text"),
                    ));
                }
                let mut t = self.inner.clone();
                t.with_truncation(Some(TruncationParams {
                    max_length: max,
                    ..Default::default()
                }))
                .map_err(|e| Error::model(&self.path, e.to_string()))?;
                enc = guarded(|| t.encode(text, true))
                    .map_err(|e| fail(&e))?
                    .map_err(|e| fail(&e))?;
            }
        }
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of a text that continues another (a response after its prompt): no special
    /// tokens added (a BOS, say), no truncation.
    pub fn encode_continuation(&self, text: &str) -> Result<Vec<u32>> {
        let fail = |e: &dyn std::fmt::Display| Error::model(&self.path, format!("cannot tokenise {text:?}: {e}"));
        let enc = guarded(|| self.inner.encode(text, false))
            .map_err(|e| fail(&e))?
            .map_err(|e| fail(&e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Right-pad token id lists to the longest and build a [`Batch`].
    pub fn batch_from_ids(&self, ids: &[Vec<u32>], device: &Device) -> Result<Batch> {
        batch_from_ids(ids, self.pad_id, device)
    }

    pub fn batch(&self, texts: &[&str], max_length: Option<usize>, device: &Device) -> Result<Batch> {
        let ids = texts
            .iter()
            .map(|t| self.encode(t, max_length))
            .collect::<Result<Vec<_>>>()?;
        self.batch_from_ids(&ids, device)
    }
}

/// Run a `tokenizers` call that can panic on a malformed tokenizer.json (it indexes
/// unchecked in places, e.g. BPE merges shorter than the subword prefix), turning the panic
/// into an error. The panic is not printed: a quiet hook runs on this thread meanwhile.
fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    use std::cell::Cell;
    thread_local! {
        static QUIET: Cell<bool> = const { Cell::new(false) };
    }
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.try_with(Cell::get).unwrap_or(false) {
                previous(info)
            }
        }));
    });
    let was = QUIET.replace(true);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.set(was);
    r.map_err(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("the tokenizers library failed on it ({what})")
    })
}

/// The single-text template of a `TemplateProcessing` post-processor may use only sequence
/// `A` and special tokens it defines: `tokenizers` accepts others and then panics encoding.
fn check_post_processor(p: Option<&serde_json::Value>) -> std::result::Result<(), String> {
    let Some(p) = p else { return Ok(()) };
    // By shape, not by `type`: `tokenizers` reads post-processors untagged.
    for q in p.get("processors").and_then(|q| q.as_array()).into_iter().flatten() {
        check_post_processor(Some(q))?;
    }
    let defined = |id: &str| p.get("special_tokens").and_then(|t| t.get(id)).is_some();
    for (name, template) in [("single", p.get("single")), ("pair", p.get("pair"))] {
        for piece in template.and_then(|t| t.as_array()).into_iter().flatten() {
            // A piece is `{"SpecialToken": {"id": ..}}`, `{"Sequence": {"id": ..}}`, or a
            // string: `$A`, `$B:1`, `[CLS]`, `[SEP]:1`.
            let (special, sequence) = match piece.as_str() {
                Some(s) => {
                    let id = s.split(':').next().unwrap_or(s);
                    match id.strip_prefix('$') {
                        Some(seq) => (None, Some(seq)),
                        None => (Some(id), None),
                    }
                }
                None => (
                    piece.pointer("/SpecialToken/id").and_then(|i| i.as_str()),
                    piece.pointer("/Sequence/id").and_then(|i| i.as_str()),
                ),
            };
            if let Some(id) = special.filter(|id| !defined(id)) {
                return Err(format!(
                    "post_processor: the `{name}` template uses special token `{id}`, which `special_tokens` does not define"
                ));
            }
            if let Some(seq) = sequence.filter(|s| name == "single" && !matches!(*s, "A" | "0" | "")) {
                return Err(format!("post_processor: the `single` template uses sequence `{seq}`; a single text has only `A`"));
            }
        }
    }
    Ok(())
}

/// Right-pad token id lists with `pad_id` to the longest and build a [`Batch`].
pub fn batch_from_ids(ids: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Batch> {
    let b = ids.len();
    let s = ids.iter().map(|r| r.len()).max().unwrap_or(0);
    if b == 0 || s == 0 {
        return Err(Error::Other("cannot build a batch from no tokens".into()));
    }
    let mut flat = Vec::with_capacity(b * s);
    let mut rows = Vec::with_capacity(b);
    for r in ids {
        flat.extend_from_slice(r);
        flat.extend(std::iter::repeat_n(pad_id, s - r.len()));
        let mut m = vec![1u32; r.len()];
        m.resize(s, 0);
        rows.push(m);
    }
    let mask: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    Ok(Batch {
        input_ids: Tensor::from_vec(flat, (b, s), device)?,
        attention_mask: Tensor::from_vec(mask, (b, s), device)?,
        attention_rows: rows,
    })
}
