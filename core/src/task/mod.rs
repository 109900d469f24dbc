//! Tasks: what the trainer optimises and measures on top of a frozen backbone with its
//! interventions. Each task turns a batch of its examples into a loss and a data file into
//! metrics ([`TaskModel`]); the trainer (`crate::train`) does everything else the same way
//! for all of them: batching, the frozen-prefix cache, AdamW, schedule, checkpoints, logs.

pub mod causal_lm;
pub mod classification;
mod encode;
pub mod metrics;

pub use encode::encode_file;

use crate::error::{Error, Result};
use crate::model::{Batch, PrefixCache};
use crate::rng::SeededRng;
use candle_core::Tensor;
use metrics::TaskMetrics;
use std::cell::RefCell;

/// One data file, tokenised: what the trainer batches (by `ids`) and caches.
pub struct Encoded {
    pub ids: Vec<Vec<u32>>,
    pub targets: Targets,
}

/// What each example is scored against.
pub enum Targets {
    /// Classification: a label id per example.
    Labels(Vec<usize>),
    /// Causal LM: how many leading tokens of each example are prompt (no loss on them; the
    /// rest are the response and its end token).
    PromptLengths(Vec<usize>),
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn labels(&self) -> Result<&[usize]> {
        match &self.targets {
            Targets::Labels(l) => Ok(l),
            Targets::PromptLengths(_) => Err(Error::Other("internal: classification run on causal-LM data".into())),
        }
    }

    pub fn prompt_lengths(&self) -> Result<&[usize]> {
        match &self.targets {
            Targets::PromptLengths(p) => Ok(p),
            Targets::Labels(_) => Err(Error::Other("internal: causal-LM run on classification data".into())),
        }
    }
}

/// A task's model: the backbone with its interventions (and head, if the task has one).
pub trait TaskModel {
    /// The training loss of examples `idx` of `set`, tokenised into `batch` (in that
    /// order). With `prefix`, the frozen layers below its layer are read from the cache.
    fn batch_loss(
        &self,
        batch: &Batch,
        set: &Encoded,
        idx: &[usize],
        prefix: Option<&PrefixCache>,
        rng: &RefCell<SeededRng>,
    ) -> Result<Tensor>;

    /// What `batch_loss` of examples `idx` averages over: examples for a classifier, response
    /// tokens for a causal LM. Data parallelism weights each rank's mean by its share of it.
    fn loss_weight(&self, set: &Encoded, idx: &[usize]) -> Result<usize>;

    /// Metrics over all of `set` in evaluation mode, `batch_size` examples at a time.
    fn metrics(&self, set: &Encoded, batch_size: usize, pad_id: u32, prefix: Option<&PrefixCache>) -> Result<TaskMetrics>;

    /// Examples per evaluation batch when training uses `train_batch`.
    fn eval_batch_size(&self, train_batch: usize) -> usize {
        train_batch.max(64)
    }
}

/// The task's model over `backbone`: a classifier when there is a `head`, else a causal LM.
pub fn task_model<'a>(
    backbone: &'a dyn crate::model::Backbone,
    interventions: &'a crate::intervention::attach::Interventions,
    head: Option<&'a classification::ClassifierHead>,
    dtype: candle_core::DType,
    device: &candle_core::Device,
) -> Result<Box<dyn TaskModel + 'a>> {
    Ok(match head {
        Some(head) => Box::new(classification::ClassifierModel { backbone, interventions, head, dtype }),
        None => Box::new(causal_lm::CausalLmModel::new(backbone, interventions, dtype, device)?),
    })
}
