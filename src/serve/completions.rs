//! `POST /v1/completions` and `POST /v1/chat/completions`, OpenAI-compatible, on exported
//! causal-LM pipelines: the prompt (or the chat rendered through the model's own template)
//! is tokenised as `reft generate` tokenises it, queued for the model's worker, and the
//! text comes back whole or, with `stream: true`, as server-sent events ending in `[DONE]`.

use super::api::{Content, GenerationRequest, Message};
use super::error::ApiError;
use super::generate::{Finish, GenEvent, GenerateJob};
use super::routes::json;
use super::state::{refused, Lm, Model, Served, Shared};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use reft_core::deploy::TASK_CAUSAL_LM;
use reft_core::generate::Sampling;
use reft_core::model::llama::ChatMessage;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::UnboundedReceiver;

/// The two routes' differences in the response.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Chat,
}

impl Kind {
    fn route(self) -> &'static str {
        match self {
            Kind::Text => "POST /v1/completions",
            Kind::Chat => "POST /v1/chat/completions",
        }
    }
}

pub async fn completion(State(state): State<Shared>, raw: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    generate(state, raw, Kind::Text).await
}

pub async fn chat(State(state): State<Shared>, raw: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    generate(state, raw, Kind::Chat).await
}

async fn generate(state: Shared, raw: Result<Bytes, BytesRejection>, kind: Kind) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let req: GenerationRequest = json(&state, raw)?;
    state.require_ready()?;
    let model = state.model(req.model.as_deref(), TASK_CAUSAL_LM, kind.route())?;
    let Served::Lm(lm) = &model.served else { unreachable!("model() checked the task") };
    if let Some(user) = &req.user {
        tracing::info!(model = %model.name, user, "generation for an end user");
    }
    let prompt = prompt_ids(lm, &req, kind)?;
    if prompt.len() > state.limits.max_input_tokens {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            format!("the prompt has {} tokens: over the --max-input-tokens limit of {}", prompt.len(), state.limits.max_input_tokens),
        )
        .with_param(if kind == Kind::Chat { "messages" } else { "prompt" }));
    }
    let room = lm.max_positions.saturating_sub(prompt.len());
    if room == 0 {
        return Err(ApiError::bad_request(format!("the prompt has {} tokens; the model's context holds {}", prompt.len(), lm.max_positions)));
    }
    let max_tokens = match (req.max_tokens, kind) {
        (Some(0), _) => return Err(ApiError::bad_request("`max_tokens` must be at least 1").with_param("max_tokens")),
        (Some(n), _) if n > room => {
            return Err(ApiError::bad_request(format!(
                "the prompt ({} tokens) plus `max_tokens` ({n}) is over the model's context of {} tokens",
                prompt.len(),
                lm.max_positions
            ))
            .with_param("max_tokens"))
        }
        (Some(n), _) => n,
        // OpenAI's defaults: 16 for completions, the rest of the context for chat.
        (None, Kind::Text) => 16.min(room),
        (None, Kind::Chat) => room,
    };
    if let Some(n) = req.n.filter(|&n| n != 1) {
        return Err(ApiError::bad_request(format!("`n` = {n}: reft serve returns one choice per request (n = 1)")).with_param("n"));
    }
    let seed = req.seed.unwrap_or_else(random_seed);
    let sampling = Sampling::new(req.temperature.unwrap_or(1.0), req.top_p.unwrap_or(1.0), seed)
        .map_err(|e| ApiError::bad_request(e.to_string()).with_param(if req.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) { "top_p" } else { "temperature" }))?;
    let stops = req.stop.map(|s| s.into_vec()).unwrap_or_default();
    if stops.len() > 4 {
        return Err(ApiError::bad_request(format!("{} `stop` strings: at most 4, as in OpenAI's API", stops.len())).with_param("stop"));
    }
    let (events, rx) = tokio::sync::mpsc::unbounded_channel();
    let job = GenerateJob { prompt, max_tokens, sampling, stops, events, arrived };
    lm.queue.try_push(job).map_err(|r| refused(&model.name, r))?;
    let head = Head::new(model, kind);
    if req.stream {
        let usage = req.stream_options.is_some_and(|o| o.include_usage);
        Ok(stream(head, rx, usage).into_response())
    } else {
        whole(head, rx).await
    }
}

/// The prompt's token ids, as `reft generate` makes them: a completion prompt with the
/// tokenizer's special tokens; a chat rendered by the template, which writes its own.
fn prompt_ids(lm: &Lm, req: &GenerationRequest, kind: Kind) -> Result<Vec<u32>, ApiError> {
    let ids = match kind {
        Kind::Text => {
            if req.messages.is_some() {
                return Err(ApiError::bad_request("`messages` is for POST /v1/chat/completions; a completion takes `prompt`").with_param("messages"));
            }
            let Some(prompt) = &req.prompt else {
                return Err(ApiError::bad_request("missing field `prompt`").with_param("prompt"));
            };
            lm.tokenizer.encode(prompt, None)
        }
        Kind::Chat => {
            if req.prompt.is_some() {
                return Err(ApiError::bad_request("`prompt` is for POST /v1/completions; a chat completion takes `messages`").with_param("prompt"));
            }
            let Some(messages) = &req.messages else {
                return Err(ApiError::bad_request("missing field `messages`").with_param("messages"));
            };
            let Some(template) = &lm.chat_template else {
                return Err(ApiError::bad_request("this model had no chat template when it was exported: use POST /v1/completions"));
            };
            let messages = chat_messages(messages)?;
            let text = template.render(&messages, true).map_err(|e| ApiError::bad_request(format!("the chat template refused these messages: {e}")).with_param("messages"))?;
            lm.tokenizer.encode_continuation(&text)
        }
    };
    let ids = ids.map_err(|e| ApiError::bad_request(e.to_string()))?;
    if ids.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty").with_param(if kind == Kind::Chat { "messages" } else { "prompt" }));
    }
    Ok(ids)
}

fn chat_messages(messages: &[Message]) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("`messages` is empty").with_param("messages"));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        if m.name.is_some() {
            return Err(ApiError::bad_request(format!("messages[{i}].name: chat templates do not show names; leave it out")).with_param(format!("messages[{i}].name")));
        }
        let content = match &m.content {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        _ => {
                            return Err(ApiError::bad_request(format!("messages[{i}].content[{j}]: only text parts (`type: text` with `text`) are supported, not `{}`", p.kind))
                                .with_param(format!("messages[{i}].content[{j}]")))
                        }
                    }
                }
                text
            }
        };
        out.push(ChatMessage::new(&m.role, &content));
    }
    Ok(out)
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// The fields every response and chunk of one request share.
struct Head {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

impl Head {
    fn new(model: &Model, kind: Kind) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
        Head {
            id: format!("{prefix}-{:x}-{}", super::process_tag(), NEXT.fetch_add(1, Ordering::Relaxed)),
            created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            model: model.name.clone(),
            kind,
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Text, _) => "text_completion",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
        }
    }

    fn usage(f: &Finish) -> serde_json::Value {
        serde_json::json!({
            "prompt_tokens": f.prompt_tokens,
            "completion_tokens": f.completion_tokens,
            "total_tokens": f.prompt_tokens + f.completion_tokens,
        })
    }

    /// One choice of a whole response.
    fn choice(&self, text: String, finish: &str) -> serde_json::Value {
        match self.kind {
            Kind::Text => serde_json::json!({ "index": 0, "text": text, "finish_reason": finish, "logprobs": null }),
            Kind::Chat => serde_json::json!({ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": finish, "logprobs": null }),
        }
    }

    /// One streamed chunk: a piece of text (`None` for the opening chat chunk that only names
    /// the role) and, on the last, the finish reason.
    fn chunk(&self, text: Option<&str>, finish: Option<&str>) -> serde_json::Value {
        let choice = match self.kind {
            Kind::Text => serde_json::json!({ "index": 0, "text": text.unwrap_or(""), "finish_reason": finish, "logprobs": null }),
            Kind::Chat => {
                let delta = match text {
                    None if finish.is_none() => serde_json::json!({ "role": "assistant", "content": "" }),
                    None => serde_json::json!({}),
                    Some(t) => serde_json::json!({ "content": t }),
                };
                serde_json::json!({ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null })
            }
        };
        serde_json::json!({ "id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": [choice] })
    }
}

/// Wait for the whole text.
async fn whole(head: Head, mut rx: UnboundedReceiver<GenEvent>) -> Result<Response, ApiError> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            GenEvent::Text(t) => text.push_str(&t),
            GenEvent::Failed(e) => return Err(ApiError::internal(format!("generation failed: {e}"))),
            GenEvent::Done(f) => {
                let body = serde_json::json!({
                    "id": head.id,
                    "object": head.object(false),
                    "created": head.created,
                    "model": head.model,
                    "choices": [head.choice(text, f.reason)],
                    "usage": Head::usage(&f),
                });
                return Ok(Json(body).into_response());
            }
        }
    }
    Err(ApiError::internal("the model's worker stopped before finishing"))
}

/// Server-sent events: a chunk per text piece, a last chunk with the finish reason (and,
/// with `include_usage`, a usage chunk), then `data: [DONE]`.
fn stream(head: Head, rx: UnboundedReceiver<GenEvent>, include_usage: bool) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    enum Phase {
        Open,
        Running,
        Usage(Finish),
        Done,
        Ended,
    }
    let data = |v: serde_json::Value| Event::default().data(v.to_string());
    let start = if head.kind == Kind::Chat { Phase::Open } else { Phase::Running };
    let events = futures_util::stream::unfold((head, rx, start), move |(head, mut rx, phase)| async move {
        match phase {
            Phase::Open => {
                let e = data(head.chunk(None, None));
                Some((Ok(e), (head, rx, Phase::Running)))
            }
            Phase::Running => match rx.recv().await {
                Some(GenEvent::Text(t)) => {
                    let e = data(head.chunk(Some(&t), None));
                    Some((Ok(e), (head, rx, Phase::Running)))
                }
                Some(GenEvent::Done(f)) => {
                    let e = data(head.chunk(None, Some(f.reason)));
                    let next = if include_usage { Phase::Usage(f) } else { Phase::Done };
                    Some((Ok(e), (head, rx, next)))
                }
                Some(GenEvent::Failed(msg)) => {
                    let e = data(ApiError::internal(format!("generation failed: {msg}")).body());
                    Some((Ok(e), (head, rx, Phase::Done)))
                }
                None => {
                    let e = data(ApiError::internal("the model's worker stopped before finishing").body());
                    Some((Ok(e), (head, rx, Phase::Done)))
                }
            },
            Phase::Usage(f) => {
                let mut v = serde_json::json!({ "id": head.id, "object": head.object(true), "created": head.created, "model": head.model, "choices": [] });
                v["usage"] = Head::usage(&f);
                Some((Ok(data(v)), (head, rx, Phase::Done)))
            }
            Phase::Done => Some((Ok(Event::default().data("[DONE]")), (head, rx, Phase::Ended))),
            Phase::Ended => None,
        }
    });
    Sse::new(events)
}
