//! Sequence classification: pool the final hidden states, then a trainable linear head.
//! `cls` pooling follows BertForSequenceClassification: the first token through the
//! checkpoint's pretrained pooler (dense + tanh, frozen), dropout, then the classifier.

use crate::error::Result;
use crate::intervention::NamedVar;
use crate::model::{Backbone, Batch};
use crate::recipe::Pooling;
use crate::rng::{dropout, SeededRng};
use candle_core::{DType, Device, Tensor, Var, D};

pub struct ClassifierHead {
    /// `[num_labels, hidden]`.
    pub weight: Var,
    /// `[num_labels]`.
    pub bias: Var,
    pub pooling: Pooling,
    /// Dropout before the classifier in training (BERT's `hidden_dropout_prob`, 0.1).
    pub dropout: f32,
}

impl ClassifierHead {
    /// HF's initialisation of a new classifier: weight N(0, 0.02²), bias 0.
    pub fn new(hidden: usize, num_labels: usize, pooling: Pooling, rng: &mut SeededRng, dtype: DType, device: &Device) -> Result<Self> {
        Ok(ClassifierHead {
            weight: Var::from_tensor(&rng.normal((num_labels, hidden), 0.02, dtype, device)?)?,
            bias: Var::zeros(num_labels, dtype, device)?,
            pooling,
            dropout: 0.1,
        })
    }

    pub fn state(&self) -> Vec<NamedVar> {
        vec![
            NamedVar::trainable("weight", self.weight.clone()),
            NamedVar::trainable("bias", self.bias.clone()),
        ]
    }

    /// `[batch, hidden]` sentence vectors from `[batch, seq, hidden]` final states.
    pub fn pool(&self, backbone: &dyn Backbone, hidden: &Tensor, batch: &Batch) -> Result<Tensor> {
        Ok(match self.pooling {
            Pooling::Cls => match backbone.pool_first(hidden)? {
                Some(p) => p,
                None => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            },
            Pooling::Mean => {
                let m = batch.attention_mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
                hidden.broadcast_mul(&m)?.sum(1)?.broadcast_div(&m.sum(1)?)?
            }
        })
    }

    /// `[batch, num_labels]` logits.
    pub fn logits(&self, pooled: &Tensor, train: bool, rng: &mut SeededRng) -> Result<Tensor> {
        // Under a bf16/f16 base the head, like the interventions, computes in f32.
        let pooled = pooled.to_dtype(self.weight.dtype())?;
        let x = if train { dropout(&pooled, self.dropout, rng)? } else { pooled };
        Ok(crate::nn::linear(&x, self.weight.as_tensor(), Some(self.bias.as_tensor()))?)
    }
}

/// Mean cross-entropy of `logits` `[b, n]` against label ids.
pub fn cross_entropy(logits: &Tensor, labels: &[usize]) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let ids: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
    let ids = Tensor::from_vec(ids, (labels.len(), 1), logits.device())?;
    let picked = log_probs.gather(&ids, 1)?;
    Ok(picked.mean_all()?.neg()?)
}

/// A backbone with its interventions and head: what training, evaluation and prediction run.
pub struct ClassifierModel<'a> {
    pub backbone: &'a dyn Backbone,
    pub interventions: &'a crate::intervention::attach::Interventions,
    pub head: &'a ClassifierHead,
    pub dtype: DType,
}

impl ClassifierModel<'_> {
    /// Logits for `batch`. With `prefix`, the frozen layers below the cache's layer are
    /// skipped and their cached output (for example ids `idx`) used instead.
    pub fn logits(
        &self,
        batch: &Batch,
        prefix: Option<(&crate::model::PrefixCache, &[usize])>,
        train: bool,
        rng: &std::cell::RefCell<SeededRng>,
    ) -> Result<Tensor> {
        let hooks = self.interventions.hooks(batch, train, self.dtype, rng)?;
        let (h, layer) = match prefix {
            Some((cache, idx)) => (cache.gather(idx, batch)?, cache.layer),
            None => (self.backbone.forward_until(batch, 0, &hooks)?, 0),
        };
        // [CLS] pooling reads the first token alone, and the backbone may skip the rest.
        let hidden = match self.head.pooling {
            Pooling::Cls => self.backbone.forward_from_to_first_token(h, layer, batch, &hooks)?,
            Pooling::Mean => self.backbone.forward_from(h, layer, batch, &hooks)?,
        };
        let pooled = self.head.pool(self.backbone, &hidden, batch)?;
        self.head.logits(&pooled, train, &mut rng.borrow_mut())
    }

    /// Metrics and per-example label probabilities over `ids` (in their order). Batches
    /// are formed from length-sorted examples, so little padding is computed.
    pub fn evaluate(
        &self,
        ids: &[Vec<u32>],
        labels: &[usize],
        batch_size: usize,
        pad_id: u32,
        prefix: Option<&crate::model::PrefixCache>,
    ) -> Result<(super::metrics::ClassificationMetrics, Vec<Vec<f32>>)> {
        let device = self.head.weight.device().clone();
        let rng = std::cell::RefCell::new(SeededRng::new(0));
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut probs = vec![Vec::new(); ids.len()];
        let mut loss_sum = 0f64;
        for chunk in order.chunks(batch_size.max(1)) {
            let rows: Vec<Vec<u32>> = chunk.iter().map(|&i| ids[i].clone()).collect();
            let batch = crate::model::tokenizer::batch_from_ids(&rows, pad_id, &device)?;
            let logits = self.logits(&batch, prefix.map(|c| (c, chunk)), false, &rng)?;
            if !labels.is_empty() {
                let l: Vec<usize> = chunk.iter().map(|&i| labels[i]).collect();
                loss_sum += cross_entropy(&logits, &l)?.to_dtype(DType::F64)?.to_scalar::<f64>()? * chunk.len() as f64;
            }
            let p = candle_nn::ops::softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?.to_vec2::<f32>()?;
            for (k, &i) in chunk.iter().enumerate() {
                probs[i] = p[k].clone();
            }
        }
        let preds: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
        let n = self.head.weight.dims()[0];
        let loss = if ids.is_empty() { 0.0 } else { loss_sum / ids.len() as f64 };
        Ok((super::metrics::ClassificationMetrics::compute(&preds, labels, n, loss), probs))
    }
}

pub fn argmax(p: &[f32]) -> usize {
    p.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
}

impl super::TaskModel for ClassifierModel<'_> {
    fn batch_loss(
        &self,
        batch: &Batch,
        set: &super::Encoded,
        idx: &[usize],
        prefix: Option<&crate::model::PrefixCache>,
        rng: &std::cell::RefCell<SeededRng>,
    ) -> Result<Tensor> {
        let all = set.labels()?;
        let labels: Vec<usize> = idx.iter().map(|&i| all[i]).collect();
        let logits = self.logits(batch, prefix.map(|c| (c, idx)), true, rng)?;
        cross_entropy(&logits, &labels)
    }

    fn loss_weight(&self, _: &super::Encoded, idx: &[usize]) -> Result<usize> {
        Ok(idx.len())
    }

    fn metrics(
        &self,
        set: &super::Encoded,
        batch_size: usize,
        pad_id: u32,
        prefix: Option<&crate::model::PrefixCache>,
    ) -> Result<super::metrics::TaskMetrics> {
        let (m, _) = self.evaluate(&set.ids, set.labels()?, batch_size, pad_id, prefix)?;
        Ok(super::metrics::TaskMetrics::Classification(m))
    }
}
