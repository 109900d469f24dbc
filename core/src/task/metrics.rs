//! Classification metrics.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    /// Fraction correct, 0..1.
    pub accuracy: f64,
    /// Unweighted mean of per-label F1, 0..1.
    pub macro_f1: f64,
    pub examples: usize,
    /// Mean cross-entropy.
    pub loss: f64,
}

impl ClassificationMetrics {
    pub fn compute(predictions: &[usize], labels: &[usize], num_labels: usize, loss: f64) -> Self {
        let n = labels.len();
        let correct = predictions.iter().zip(labels).filter(|(p, l)| p == l).count();
        let mut f1_sum = 0.0;
        for c in 0..num_labels {
            let tp = predictions.iter().zip(labels).filter(|(p, l)| **p == c && **l == c).count() as f64;
            let fp = predictions.iter().zip(labels).filter(|(p, l)| **p == c && **l != c).count() as f64;
            let fn_ = predictions.iter().zip(labels).filter(|(p, l)| **p != c && **l == c).count() as f64;
            let denom = 2.0 * tp + fp + fn_;
            f1_sum += if denom > 0.0 { 2.0 * tp / denom } else { 0.0 };
        }
        ClassificationMetrics {
            accuracy: if n > 0 { correct as f64 / n as f64 } else { 0.0 },
            macro_f1: f1_sum / num_labels.max(1) as f64,
            examples: n,
            loss,
        }
    }
}

/// Causal-LM metrics over the response tokens of a data file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LmMetrics {
    /// Mean next-token cross-entropy (nats) per response token (end-of-turn token included).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Response tokens scored.
    pub tokens: usize,
    pub examples: usize,
}

impl LmMetrics {
    /// From the summed negative log-likelihood of `tokens` tokens. No tokens: all zero
    /// (nothing was evaluated).
    pub fn from_sum(nll_sum: f64, tokens: usize, examples: usize) -> Self {
        if tokens == 0 {
            return LmMetrics { loss: 0.0, perplexity: 0.0, tokens: 0, examples };
        }
        let loss = nll_sum / tokens as f64;
        LmMetrics { loss, perplexity: loss.exp(), tokens, examples }
    }
}

/// A task's evaluation metrics. Serialised without a tag, so a classification run's
/// summary.json and metrics.jsonl read exactly as before; read back by their keys
/// (`accuracy`: classification, `perplexity`: causal LM), each number checked by name.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TaskMetrics {
    Classification(ClassificationMetrics),
    CausalLm(LmMetrics),
}

impl TaskMetrics {
    /// Higher is better: what the trainer keeps the best epoch by (accuracy; minus the
    /// response loss for a causal LM).
    pub fn score(&self) -> f64 {
        match self {
            TaskMetrics::Classification(m) => m.accuracy,
            TaskMetrics::CausalLm(m) => -m.loss,
        }
    }

    pub fn loss(&self) -> f64 {
        match self {
            TaskMetrics::Classification(m) => m.loss,
            TaskMetrics::CausalLm(m) => m.loss,
        }
    }

    pub fn classification(&self) -> Option<&ClassificationMetrics> {
        match self {
            TaskMetrics::Classification(m) => Some(m),
            TaskMetrics::CausalLm(_) => None,
        }
    }

    pub fn causal_lm(&self) -> Option<&LmMetrics> {
        match self {
            TaskMetrics::CausalLm(m) => Some(m),
            TaskMetrics::Classification(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_macro_f1() {
        let m = ClassificationMetrics::compute(&[1, 1, 0, 0], &[1, 0, 0, 0], 2, 0.0);
        assert_eq!(m.accuracy, 0.75);
        // label 0: tp 2, fp 0, fn 1 -> 0.8; label 1: tp 1, fp 1, fn 0 -> 2/3.
        assert!((m.macro_f1 - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn task_metrics_serialise_untagged() {
        let c = ClassificationMetrics::compute(&[1], &[1], 2, 0.5);
        assert_eq!(serde_json::to_value(TaskMetrics::Classification(c)).unwrap(), serde_json::to_value(c).unwrap());
        let l = LmMetrics::from_sum(6.0, 3, 1);
        assert_eq!(l.loss, 2.0);
        assert!((l.perplexity - 2f64.exp()).abs() < 1e-12);
        assert_eq!(TaskMetrics::CausalLm(l).score(), -2.0);
    }
}

impl<'de> Deserialize<'de> for TaskMetrics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        let (fields, classification): (&[&str], bool) = if v.get("accuracy").is_some() {
            (&["accuracy", "macro_f1", "examples", "loss"], true)
        } else if v.get("perplexity").is_some() {
            (&["loss", "perplexity", "tokens", "examples"], false)
        } else {
            return Err(D::Error::custom(format!("metrics {v} have neither \"accuracy\" (classification) nor \"perplexity\" (causal LM)")));
        };
        // Name the key at fault: serde's own messages for a wrong type do not.
        for f in fields {
            match v.get(*f) {
                Some(x) if x.is_number() => {}
                Some(x) => return Err(D::Error::custom(format!("\"{f}\" should be a number, found {x}"))),
                None => return Err(D::Error::custom(format!("metrics have no \"{f}\""))),
            }
        }
        Ok(if classification {
            TaskMetrics::Classification(serde_json::from_value(v).map_err(D::Error::custom)?)
        } else {
            TaskMetrics::CausalLm(serde_json::from_value(v).map_err(D::Error::custom)?)
        })
    }
}
