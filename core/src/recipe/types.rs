//! The recipe's YAML shape. Every struct denies unknown keys, so a typo is an error with
//! its line:column, never a silently ignored setting.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub model: ModelSpec,
    #[serde(default)]
    pub task: TaskSpec,
    #[serde(default)]
    pub data: Option<DataSpec>,
    /// Empty is allowed: a linear probe trains only the task head.
    #[serde(default)]
    pub interventions: Vec<InterventionSpec>,
    #[serde(default)]
    pub train: TrainSpec,
    #[serde(default)]
    pub export: Option<ExportSpec>,
    /// Run-time plugin libraries to load before the interventions are resolved.
    #[serde(default)]
    pub plugins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Folder with `config.json`, weights and `tokenizer.json`. `~`, `$VAR` and `${VAR}`
    /// expand (`REFT_CACHE` defaults to reft's cache folder); relative paths are relative
    /// to the recipe file.
    pub path: String,
    #[serde(default)]
    pub dtype: DTypeSpec,
    /// `cpu` or `cuda:N` (the latter needs the `cuda` cargo feature).
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_device() -> String {
    "cpu".into()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DTypeSpec {
    #[default]
    F32,
    Bf16,
    F16,
}

impl DTypeSpec {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            DTypeSpec::F32 => candle_core::DType::F32,
            DTypeSpec::Bf16 => candle_core::DType::BF16,
            DTypeSpec::F16 => candle_core::DType::F16,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    #[default]
    Classification,
    CausalLm,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// BertForSequenceClassification: the first token through the pretrained pooler
    /// (dense + tanh) when the checkpoint has one.
    #[default]
    Cls,
    /// Mean over real tokens (sentence-transformers style).
    Mean,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    #[serde(default)]
    pub kind: TaskKind,
    #[serde(default = "default_num_labels")]
    pub num_labels: usize,
    #[serde(default)]
    pub pooling: Pooling,
    /// Names for the label ids 0..num_labels, shown by `predict`.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// causal_lm: render each prompt as a user turn of the model's chat template (ChatML),
    /// as `reft generate --chat` does (default); `false` feeds the prompt text as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<bool>,
    /// causal_lm with the chat template: the system message (default: the template's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// classification: dropout before the classifier in training (HF's `classifier_dropout`;
    /// default 0.1, BERT's `hidden_dropout_prob`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_dropout: Option<f32>,
}

impl TaskSpec {
    /// Whether a causal-LM recipe wraps prompts in the chat template.
    pub fn uses_chat_template(&self) -> bool {
        self.chat_template.unwrap_or(true)
    }
}

fn default_num_labels() -> usize {
    2
}

impl Default for TaskSpec {
    fn default() -> Self {
        TaskSpec {
            kind: TaskKind::Classification,
            num_labels: 2,
            pooling: Pooling::Cls,
            labels: None,
            chat_template: None,
            system: None,
            classifier_dropout: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Tsv,
    Csv,
    Jsonl,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub train: String,
    #[serde(default)]
    pub eval: Option<String>,
    #[serde(default)]
    pub test: Option<String>,
    /// Other domains, by name (`tweets: path`): evaluated once with the best weights, like
    /// `test`, to see how much of the gain carries over. They never select anything.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub transfer: std::collections::BTreeMap<String, String>,
    /// Inferred from the file extension when absent.
    #[serde(default)]
    pub format: Option<DataFormat>,
    #[serde(default = "default_text")]
    pub text: String,
    #[serde(default = "default_label")]
    pub label: String,
    /// causal_lm: the column / field holding the prompt (default `instruction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// causal_lm: the column / field holding the response (default `response`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default = "default_max_length")]
    pub max_length: usize,
}

impl DataSpec {
    /// causal_lm: the prompt and response columns.
    pub fn pair_columns(&self) -> (&str, &str) {
        (self.prompt.as_deref().unwrap_or("instruction"), self.response.as_deref().unwrap_or("response"))
    }
}

fn default_text() -> String {
    "text".into()
}
fn default_label() -> String {
    "label".into()
}
fn default_max_length() -> usize {
    64
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Stop after this many optimiser steps, even mid-epoch.
    #[serde(default)]
    pub max_steps: Option<usize>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default)]
    pub warmup_ratio: f64,
    #[serde(default = "default_clip")]
    pub max_grad_norm: f64,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Group texts of similar length into batches (less padding, faster epochs).
    #[serde(default)]
    pub bucket_by_length: bool,
}

fn default_epochs() -> usize {
    3
}
fn default_batch() -> usize {
    32
}
fn default_lr() -> f64 {
    2e-3
}
fn default_clip() -> f64 {
    1.0
}
fn default_seed() -> u64 {
    42
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            epochs: default_epochs(),
            max_steps: None,
            batch_size: default_batch(),
            lr: default_lr(),
            weight_decay: 0.0,
            warmup_ratio: 0.0,
            max_grad_norm: default_clip(),
            seed: default_seed(),
            bucket_by_length: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    pub dir: String,
}

/// One entry of `interventions:`. The keys other than these belong to the plugin and are
/// checked by it (`rank`, `dropout`, …).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InterventionSpec {
    pub kind: String,
    /// Hook points by name (`layers[2].block_output`, `layers[*].attention.query`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<OneOrMany>,
    /// Linear modules chosen the way PEFT's `target_modules` chooses them: a list of names
    /// (`query`, `attention.output`, or a suffix of the checkpoint's module path such as
    /// `intermediate.dense`), or one string taken as a regular expression over the full
    /// module path. The alternative to `hooks` for linear-module plugins such as LoRA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// With `target`: only these layers (PEFT's `layers_to_transform`); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<LayerList>,
    #[serde(default)]
    pub positions: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(flatten)]
    pub options: serde_yaml::Mapping,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Target {
    /// A regular expression that must match a module path in full.
    Pattern(String),
    /// Module names, each matching a module path exactly or as a dotted suffix.
    Names(Vec<String>),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum LayerList {
    One(usize),
    Many(Vec<usize>),
}

impl LayerList {
    pub fn to_vec(&self) -> Vec<usize> {
        match self {
            LayerList::One(l) => vec![*l],
            LayerList::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
    pub fn is_list(&self) -> bool {
        matches!(self, OneOrMany::Many(_))
    }
}
