//! What the handlers share: the served models (each a queue to its worker, plus what the
//! handlers need without the worker: spec, tokenizer, chat template), the limits, the
//! metrics and whether loading has finished.

use super::classify::ClassifyJob;
use super::error::ApiError;
use super::generate::GenerateJob;
use super::metrics::Metrics;
use super::queue::{Queue, Refused};
use reft_core::deploy::{PipelineSpec, TASK_CAUSAL_LM, TASK_CLASSIFICATION};
use reft_core::model::llama::ChatTemplate;
use reft_core::model::tokenizer::TextTokenizer;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The request limits (see `reft serve --help`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_texts: usize,
    pub max_input_tokens: usize,
    pub max_body_bytes: usize,
}

pub struct Classifier {
    pub spec: PipelineSpec,
    pub tokenizer: TextTokenizer,
    pub queue: Queue<ClassifyJob>,
}

pub struct Lm {
    pub tokenizer: TextTokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// The longest sequence (prompt + generated) the graphs take.
    pub max_positions: usize,
    pub queue: Queue<GenerateJob>,
}

pub enum Served {
    Classifier(Classifier),
    Lm(Lm),
}

pub struct Model {
    pub name: String,
    /// Unix seconds the server loaded it (`/v1/models`' `created`).
    pub created: u64,
    pub served: Served,
}

impl Model {
    pub fn task(&self) -> &'static str {
        match self.served {
            Served::Classifier(_) => TASK_CLASSIFICATION,
            Served::Lm(_) => TASK_CAUSAL_LM,
        }
    }
}

pub struct AppState {
    pub models: Vec<Model>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
}

pub type Shared = Arc<AppState>;

/// What a pipeline folder holds, read before the server starts (cheap, and a wrong folder
/// is refused before anything listens); the ONNX Runtime sessions load later, in the workers.
pub struct Plan {
    pub name: String,
    pub dir: PathBuf,
    pub spec: PipelineSpec,
    pub tokenizer: TextTokenizer,
    pub chat_template: Option<ChatTemplate>,
}

impl Plan {
    /// `DIR` or `NAME=DIR`: the model's name is NAME, else the folder's name.
    pub fn read(arg: &str) -> anyhow::Result<Plan> {
        let (name, dir) = match arg.split_once('=') {
            Some((n, d)) if is_name(n) => (n.to_string(), PathBuf::from(d)),
            _ => {
                let dir = PathBuf::from(arg);
                let name = dir
                    .canonicalize()
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_else(|| arg.to_string());
                (name, dir)
            }
        };
        if !dir.is_dir() {
            anyhow::bail!("{}: no such pipeline folder (give folders written by `reft export`, as DIR or NAME=DIR)", dir.display());
        }
        let spec = PipelineSpec::read(&dir)?;
        if spec.task != TASK_CLASSIFICATION && spec.task != TASK_CAUSAL_LM {
            anyhow::bail!("{}: `reft serve` serves classification and causal_lm pipelines, not `{}`", dir.display(), spec.task);
        }
        let tokenizer = TextTokenizer::load(&dir.join(&spec.tokenizer))?;
        let chat_template = match &spec.decoder {
            Some(d) => match &d.chat_template {
                Some(t) => Some(ChatTemplate::new(t, d.bos_token.as_deref().unwrap_or(""), d.eos_token.as_deref().unwrap_or(""))?),
                None => None,
            },
            None => None,
        };
        Ok(Plan { name, dir, spec, tokenizer, chat_template })
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Refuse two models with one name: requests could not tell them apart.
pub fn check_unique(plans: &[Plan]) -> anyhow::Result<()> {
    for (i, a) in plans.iter().enumerate() {
        if let Some(b) = plans[..i].iter().find(|b| b.name == a.name) {
            anyhow::bail!(
                "two pipelines are both named `{}` ({} and {}): name them apart as NAME=DIR",
                a.name,
                b.dir.display(),
                a.dir.display()
            );
        }
    }
    Ok(())
}

impl AppState {
    pub fn new(models: Vec<Model>, limits: Limits, metrics: Arc<Metrics>) -> Self {
        AppState { models, limits, metrics, ready: AtomicBool::new(false) }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
        self.metrics.ready.set(1);
    }

    /// Requests for models wait until every session is loaded.
    pub fn require_ready(&self) -> Result<(), ApiError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(ApiError::overloaded("the models are still loading; GET /health says when they are ready"))
        }
    }

    /// The model a request names, or the only one of `task` when it names none.
    pub fn model(&self, name: Option<&str>, task: &str, route: &str) -> Result<&Model, ApiError> {
        let of_task: Vec<&Model> = self.models.iter().filter(|m| m.task() == task).collect();
        let names = |ms: &[&Model]| ms.iter().map(|m| format!("`{}`", m.name)).collect::<Vec<_>>().join(", ");
        match name {
            Some(n) => {
                let Some(m) = self.models.iter().find(|m| m.name == n) else {
                    let all: Vec<&Model> = self.models.iter().collect();
                    return Err(ApiError::not_found(format!("no model `{n}` here; this server has {}", names(&all))).with_param("model"));
                };
                if m.task() != task {
                    let other = if m.task() == TASK_CLASSIFICATION { "POST /v1/predict" } else { "POST /v1/completions or /v1/chat/completions" };
                    return Err(ApiError::bad_request(format!("`{n}` is a {} model: {route} is for {task} models; use {other}", m.task())).with_param("model"));
                }
                Ok(m)
            }
            None => match of_task.as_slice() {
                [only] => Ok(only),
                [] => Err(ApiError::not_found(format!("this server has no {task} model for {route}"))),
                many => Err(ApiError::bad_request(format!("this server has several {task} models: name one in `model` ({})", names(many))).with_param("model")),
            },
        }
    }
}

/// The 503 for a full queue, or the 503 for a worker that has stopped.
pub fn refused(model: &str, r: Refused) -> ApiError {
    match r {
        Refused::Full { capacity } => {
            ApiError::overloaded(format!("`{model}` has {capacity} requests waiting (the --max-queue limit); retry shortly"))
        }
        Refused::Closed => ApiError::overloaded(format!("`{model}` is not taking requests (the server is shutting down)")),
    }
}
