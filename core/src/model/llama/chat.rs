//! Chat templates: the model's own Jinja template (`chat_template` in a folder's
//! tokenizer_config.json, or GGUF's `tokenizer.chat_template`), rendered as transformers'
//! `apply_chat_template` renders it: Jinja with `trim_blocks` and `lstrip_blocks`, the
//! variables `messages`, `add_generation_prompt`, `bos_token` and `eos_token`, and the
//! functions `raise_exception` and `strftime_now`. minijinja runs it; its pycompat layer gives templates the
//! Python string and dict methods they call (`.strip()`, `.items()`, …). A model without a
//! template has no chat format: asking for one is an error, never a guessed ChatML.
//!
//! The rendered prompt is tokenised without the tokenizer's own special tokens (as
//! `apply_chat_template(tokenize=True)` does), since the template writes them itself.

use crate::error::{Error, Result};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    /// The Jinja source, as the model file has it.
    pub source: String,
    /// What `{{ bos_token }}` / `{{ eos_token }}` print (empty when the model has none).
    pub bos_token: String,
    pub eos_token: String,
    /// The moment `strftime_now` reads (seconds since the Unix epoch); None: the clock.
    pub now: Option<i64>,
}

impl ChatTemplate {
    /// A template from its Jinja source; refused now if it does not parse.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let t = ChatTemplate { source: source.to_string(), bos_token: bos_token.to_string(), eos_token: eos_token.to_string(), now: None };
        t.environment()?;
        Ok(t)
    }

    /// Render as at `epoch_seconds` rather than now (`strftime_now`; reproducible prompts).
    pub fn at_time(mut self, epoch_seconds: i64) -> Self {
        self.now = Some(epoch_seconds);
        self
    }

    /// The chat template of the model at `path` (a `.gguf` file or a folder). Err when it has
    /// none: chat needs the model's own format.
    pub fn for_model(path: &std::path::Path) -> Result<Self> {
        let Some(source) = Self::source_for_model(path)? else {
            return Err(Error::model(
                path,
                "has no chat template (`chat_template` in tokenizer_config.json, or GGUF `tokenizer.chat_template`): \
                 use the prompt as raw text (`task.chat_template: false`, or `reft generate` without --chat)",
            ));
        };
        let (bos, eos) = Self::special_tokens_for_model(path)?;
        Self::new(&source, &bos, &eos)
    }

    /// The Jinja text of the model's chat template, if it has one (ONNX export copies it
    /// into the pipeline so the runtime renders prompts exactly as here).
    pub fn source_for_model(path: &std::path::Path) -> Result<Option<String>> {
        use crate::model::{locate, ModelFiles};
        Ok(match locate(path)? {
            ModelFiles::Gguf(file) => super::GgufFile::open(&file)?.opt_string("tokenizer.chat_template")?,
            ModelFiles::LlamaHf(dir) | ModelFiles::Bert(dir) => {
                tokenizer_config(&dir)?.and_then(|c| c.get("chat_template").and_then(|t| t.as_str()).map(str::to_string))
            }
        })
    }

    /// The text of the BOS and EOS tokens the template may print: tokenizer_config.json's
    /// `bos_token`/`eos_token` (a string or `{"content": …}`), or for GGUF the tokens whose ids
    /// `tokenizer.ggml.bos_token_id`/`eos_token_id` name. Empty when the model has none.
    pub fn special_tokens_for_model(path: &std::path::Path) -> Result<(String, String)> {
        use crate::model::{locate, ModelFiles};
        Ok(match locate(path)? {
            ModelFiles::Gguf(file) => {
                let g = super::GgufFile::open(&file)?;
                let tokens = g.strings("tokenizer.ggml.tokens")?;
                let name = |key: &str| -> Result<String> {
                    Ok(g.opt_usize(key)?.and_then(|i| tokens.get(i).map(|t| t.to_string())).unwrap_or_default())
                };
                (name("tokenizer.ggml.bos_token_id")?, name("tokenizer.ggml.eos_token_id")?)
            }
            ModelFiles::LlamaHf(dir) | ModelFiles::Bert(dir) => {
                let config = tokenizer_config(&dir)?.unwrap_or_default();
                let token = |key: &str| match config.get(key) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v.get("content").and_then(|c| c.as_str()).unwrap_or_default().to_string(),
                    None => String::new(),
                };
                (token("bos_token"), token("eos_token"))
            }
        })
    }

    fn environment(&self) -> Result<minijinja::Environment<'static>> {
        let mut env = minijinja::Environment::new();
        // transformers' chat environment: trim_blocks, lstrip_blocks, raise_exception.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
        });
        // transformers' `strftime_now(format)`: the local time now, formatted (Llama 3.1+
        // templates write today's date into the system header with it; without it they fall
        // back to a fixed date, a prompt other than transformers').
        let now = self.now;
        env.add_function("strftime_now", move |format: String| -> std::result::Result<String, minijinja::Error> {
            let at = now.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64));
            local_strftime(&format, at).map_err(|m| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, m))
        });
        env.add_template_owned("chat_template", self.source.clone())
            .map_err(|e| Error::Other(format!("the model's chat template does not parse: {e:#}")))?;
        Ok(env)
    }

    /// The prompt text for `messages`; with `add_generation_prompt`, it ends with the
    /// opening of an assistant turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let env = self.environment()?;
        let template = env.get_template("chat_template").map_err(|e| Error::Other(e.to_string()))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| Error::Other(format!("the model's chat template failed: {e:#}")))
    }
}

/// `format` (C/Python `strftime` directives) of the local time at `epoch_seconds`.
fn local_strftime(format: &str, epoch_seconds: i64) -> std::result::Result<String, String> {
    let c_format = std::ffi::CString::new(format).map_err(|_| "strftime_now: the format holds a NUL byte".to_string())?;
    let t: libc::time_t = epoch_seconds as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills; `buf` is ours and strftime writes at
    // most its length, returning how many bytes it wrote (0 when they do not fit).
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return Err(format!("strftime_now: no local time for {epoch_seconds}"));
        }
        let mut buf = vec![0u8; 256 + 8 * format.len()];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), c_format.as_ptr(), &tm);
        if n == 0 && !format.is_empty() {
            return Err(format!("strftime_now: `{format}` formats to nothing or to too long a text"));
        }
        buf.truncate(n);
        String::from_utf8(buf).map_err(|_| "strftime_now: the formatted time is not UTF-8".to_string())
    }
}

/// A folder's tokenizer_config.json, if it has one.
fn tokenizer_config(dir: &std::path::Path) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let p = dir.join("tokenizer_config.json");
    match std::fs::read_to_string(&p) {
        Ok(text) => match serde_json::from_str::<serde_json::Value>(&text).map_err(|e| Error::model(&p, e.to_string()))? {
            serde_json::Value::Object(m) => Ok(Some(m)),
            _ => Err(Error::model(&p, "is not a JSON object")),
        },
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as its GGUF file stores it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_smollm2s_chatml_template() {
        let t = ChatTemplate::new(SMOLLM2, "", "<|im_end|>").unwrap();
        let msgs = [ChatMessage::new("user", "Hi!"), ChatMessage::new("assistant", "Hello."), ChatMessage::new("user", "2+2?")];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n\
             <|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        // An explicit system message replaces the default one.
        let msgs = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")];
        assert_eq!(t.render(&msgs, false).unwrap(), "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
        // A template that raises says so; one that does not parse is refused when loaded.
        let strict = ChatTemplate::new("{% if messages[0]['role'] != 'user' %}{{ raise_exception('users first') }}{% endif %}", "", "").unwrap();
        assert!(strict.render(&msgs, true).unwrap_err().to_string().contains("users first"));
        assert!(ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err().to_string().contains("does not parse"));
    }
}
