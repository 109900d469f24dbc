//! The request bodies the server accepts. Unknown fields are refused by name
//! (`deny_unknown_fields`): an OpenAI option reft does not implement (`logprobs`,
//! `presence_penalty`, …) changes the result, so it is an error, never silently dropped.

use serde::Deserialize;

/// `POST /v1/predict`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    pub inputs: Vec<String>,
    /// Which classifier; may be left out when the server has only one.
    #[serde(default)]
    pub model: Option<String>,
}

/// OpenAI's `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with the token counts, as OpenAI does.
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/completions` (with `prompt`) and `POST /v1/chat/completions` (with
/// `messages`): one type for both, since they share every other field (serde cannot
/// combine `flatten` with `deny_unknown_fields`); each route refuses the other's input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// OpenAI's default is 1; 0 is greedy.
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Fixes the sampler's generator: the same seed and settings give the same text.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Only 1 is supported (one choice per request).
    #[serde(default)]
    pub n: Option<usize>,
    /// An end-user id for the operator's logs; it does not change the result.
    #[serde(default)]
    pub user: Option<String>,
}

/// A chat message's content: a string, or OpenAI's list of parts (text parts only).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: String,
    pub content: Content,
    /// A participant's name; chat templates do not print it, so it is refused rather
    /// than dropped.
    #[serde(default)]
    pub name: Option<String>,
}
