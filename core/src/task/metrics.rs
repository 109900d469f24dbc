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
}
