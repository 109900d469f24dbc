//! AdamW as PyTorch defines it (decoupled weight decay, bias-corrected moments), with its
//! state exposed so checkpoints can save and restore it exactly.

use crate::error::Result;
use crate::intervention::NamedVar;
use candle_core::{backprop::GradStore, Tensor};

pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Updates taken so far.
    pub t: u64,
    /// First and second moments, by parameter name.
    pub moments: Vec<(String, Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(params: &[(String, NamedVar)], weight_decay: f64) -> Result<Self> {
        let moments = params
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.var.zeros_like()?, v.var.zeros_like()?)))
            .collect::<Result<_>>()?;
        Ok(AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, t: 0, moments })
    }

    /// One update of every parameter that received a gradient, scaled by `clip` first.
    pub fn step(&mut self, params: &[(String, NamedVar)], grads: &GradStore, lr: f64, clip: f64) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        for ((_, p), (_, m, v)) in params.iter().zip(self.moments.iter_mut()) {
            let Some(g) = grads.get(p.var.as_tensor()) else { continue };
            // candle leaves a variable's gradient attached to the graph it came from (it
            // detaches only the gradients of intermediate nodes): a weight used directly in a
            // matmul with activations (NoReFT's W2, an MLP's layers) gets `activationsᵀ · grad`,
            // which holds the whole step's forward graph. Kept in the moments, each step's
            // graph would stay alive through the next: memory grew by ~150 MB per update on
            // MiniLM until the OS killed the run. The moments take plain values.
            let g = (g.detach() * clip)?;
            *m = ((&*m * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            *v = ((&*v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let mut w = p.var.as_tensor().detach();
            if self.weight_decay != 0.0 {
                w = (&w * (1.0 - lr * self.weight_decay))?;
            }
            let denom = ((&*v / bc2)?.sqrt()? + self.eps)?;
            let update = ((&*m / bc1)? / denom)?;
            p.var.set(&(w - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// Factor that scales gradients to a global L2 norm of at most `max_norm` (PyTorch's
/// `clip_grad_norm_`), and the norm before clipping.
pub fn clip_factor(params: &[(String, NamedVar)], grads: &GradStore, max_norm: f64) -> Result<(f64, f64)> {
    let mut sq = 0f64;
    for (_, p) in params {
        if let Some(g) = grads.get(p.var.as_tensor()) {
            sq += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    if max_norm <= 0.0 || !norm.is_finite() {
        return Ok((1.0, norm));
    }
    Ok(((max_norm / (norm + 1e-6)).min(1.0), norm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn follows_the_pytorch_update_rule() {
        // An independent scalar implementation of torch.optim.AdamW's documented algorithm.
        let (lr, wd, b1, b2, eps) = (0.1f64, 0.01, 0.9, 0.999, 1e-8);
        let mut want = [1f64, -2.0];
        let (mut m, mut v) = ([0f64; 2], [0f64; 2]);
        for t in 1..=5 {
            for i in 0..2 {
                let g = 2.0 * want[i];
                want[i] *= 1.0 - lr * wd;
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                let mh = m[i] / (1.0 - b1.powi(t));
                let vh = v[i] / (1.0 - b2.powi(t));
                want[i] -= lr * mh / (vh.sqrt() + eps);
            }
        }
        let var = Var::new(&[1f64, -2.0], &Device::Cpu).unwrap();
        let params = vec![("p".to_string(), NamedVar::trainable("p", var.clone()))];
        let mut opt = AdamW::new(&params, wd).unwrap();
        for _ in 0..5 {
            let loss = var.as_tensor().sqr().unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            opt.step(&params, &g, lr, 1.0).unwrap();
        }
        let p = var.as_tensor().to_vec1::<f64>().unwrap();
        assert!((p[0] - want[0]).abs() < 1e-12 && (p[1] - want[1]).abs() < 1e-12, "{p:?} vs {want:?}");
    }

    /// A weight multiplied with activations gets a gradient that is still attached to the
    /// step's graph; the moments must not be, or every step's graph outlives it.
    #[test]
    fn the_moments_hold_no_graph_of_the_step() {
        let dev = Device::Cpu;
        let w = Var::new(&[[0.5f32, -1.0], [2.0, 0.25]], &dev).unwrap();
        let upstream = Var::new(&[[1.0f32, 2.0], [3.0, 4.0]], &dev).unwrap();
        let params = vec![("w".to_string(), NamedVar::trainable("w", w.clone()))];
        let mut opt = AdamW::new(&params, 0.0).unwrap();
        // `activations` stands for a hidden state computed from another trainable tensor.
        let activations = (upstream.as_tensor() * 3.0).unwrap();
        let loss = activations.matmul(w.as_tensor()).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        assert!(grads.get(w.as_tensor()).unwrap().track_op(), "candle detaches variables' gradients now: this guard may go");
        opt.step(&params, &grads, 0.1, 1.0).unwrap();
        let (_, m, v) = &opt.moments[0];
        assert!(!m.track_op() && !v.track_op(), "the moments keep the step's graph alive");
    }
}
