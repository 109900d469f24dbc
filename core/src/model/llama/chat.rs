//! The ChatML conversation format (`<|im_start|>role\ncontent<|im_end|>\n`), which
//! SmolLM2-Instruct's chat template writes, ending with `<|im_start|>assistant\n` for the
//! model to continue.
//!
//! GGUF files carry the template as Jinja (`tokenizer.chat_template`); reft does not run
//! Jinja, it recognises a ChatML template and reads its one parameter, the system message
//! it inserts when a conversation has none.

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatTemplate {
    /// Inserted as the first message when the conversation does not start with a system one.
    pub default_system: Option<String>,
}

const START: &str = "<|im_start|>";
const END: &str = "<|im_end|>";

impl ChatTemplate {
    /// From a model's Jinja chat template: it must be ChatML. `None` (no template) gives
    /// plain ChatML without a default system message.
    pub fn from_jinja(template: Option<&str>) -> Result<Self> {
        let Some(t) = template else { return Ok(ChatTemplate::default()) };
        if !t.contains(START) || !t.contains(END) {
            return Err(Error::Other(
                "the model's chat template is not ChatML (<|im_start|>…<|im_end|>); reft's chat supports ChatML only".into(),
            ));
        }
        // SmolLM2: `{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n…<|im_end|>\n' }}`
        let marker = format!("{START}system\n");
        let default_system = t.find(&marker).and_then(|i| {
            let rest = &t[i + marker.len()..];
            rest.find(END).map(|j| rest[..j].to_string())
        });
        Ok(ChatTemplate { default_system })
    }

    /// The chat template of the model at `path` (a `.gguf` file or a folder): GGUF's
    /// `tokenizer.chat_template`, or `chat_template` in a folder's tokenizer_config.json.
    pub fn for_model(path: &std::path::Path) -> Result<Self> {
        Self::from_jinja(Self::source_for_model(path)?.as_deref())
    }

    /// The Jinja text of the model's chat template, if it has one (ONNX export copies it
    /// into the pipeline so the runtime renders prompts exactly as here).
    pub fn source_for_model(path: &std::path::Path) -> Result<Option<String>> {
        use crate::model::{locate, ModelFiles};
        Ok(match locate(path)? {
            ModelFiles::Gguf(file) => super::GgufFile::open(&file)?.opt_string("tokenizer.chat_template")?,
            ModelFiles::LlamaHf(dir) | ModelFiles::Bert(dir) => {
                let p = dir.join("tokenizer_config.json");
                match std::fs::read_to_string(&p) {
                    Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                        .map_err(|e| Error::model(&p, e.to_string()))?
                        .get("chat_template")
                        .and_then(|t| t.as_str())
                        .map(str::to_string),
                    Err(_) => None,
                }
            }
        })
    }

    /// The prompt text for `messages`; with `add_generation_prompt`, it ends with the
    /// opening of an assistant turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        let mut out = String::new();
        let turn = |out: &mut String, role: &str, content: &str| {
            out.push_str(START);
            out.push_str(role);
            out.push('\n');
            out.push_str(content);
            out.push_str(END);
            out.push('\n');
        };
        if let Some(system) = &self.default_system {
            if messages.first().is_none_or(|m| m.role != "system") {
                turn(&mut out, "system", system);
            }
        }
        for m in messages {
            turn(&mut out, &m.role, &m.content);
        }
        if add_generation_prompt {
            out.push_str(START);
            out.push_str("assistant\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as its GGUF file stores it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_as_the_jinja_template_does() {
        let t = ChatTemplate::from_jinja(Some(SMOLLM2)).unwrap();
        assert_eq!(t.default_system.as_deref(), Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face"));
        let msgs = [ChatMessage::new("user", "Hi!"), ChatMessage::new("assistant", "Hello."), ChatMessage::new("user", "2+2?")];
        assert_eq!(
            t.render(&msgs, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n\
             <|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        // An explicit system message replaces the default one.
        let msgs = [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")];
        assert_eq!(t.render(&msgs, false), "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
        assert_eq!(ChatTemplate::from_jinja(None).unwrap().render(&msgs[1..], true), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        assert!(ChatTemplate::from_jinja(Some("{{ bos_token }}[INST] {{ m }} [/INST]")).is_err());
    }
}
