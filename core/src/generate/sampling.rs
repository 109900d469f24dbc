//! Choosing the next token from logits: greedy (argmax), or sampling at a temperature from
//! the smallest set of tokens whose probability reaches `top_p` (nucleus sampling), with a
//! seeded generator so a run can be repeated exactly.

use crate::error::{Error, Result};
use crate::rng::SeededRng;

#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    Greedy,
    /// `temperature > 0`, `0 < top_p ≤ 1`.
    TopP { temperature: f64, top_p: f64, seed: u64 },
}

impl Sampling {
    /// From command-line style settings: a temperature of 0 means greedy.
    pub fn new(temperature: f64, top_p: f64, seed: u64) -> Result<Self> {
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(Error::Other(format!("temperature {temperature} must be a number ≥ 0 (0 = greedy)")));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(Error::Other(format!("top_p {top_p} must be in (0, 1]")));
        }
        Ok(if temperature == 0.0 { Sampling::Greedy } else { Sampling::TopP { temperature, top_p, seed } })
    }
}

pub struct Sampler {
    sampling: Sampling,
    rng: SeededRng,
}

impl Sampler {
    pub fn new(sampling: Sampling) -> Self {
        let seed = match sampling {
            Sampling::TopP { seed, .. } => seed,
            Sampling::Greedy => 0,
        };
        Sampler { sampling, rng: SeededRng::new(seed) }
    }

    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::Other("no logits to sample from".into()));
        }
        if let Some(i) = logits.iter().position(|x| x.is_nan()) {
            return Err(Error::Other(format!("the model produced a NaN logit (token {i})")));
        }
        match self.sampling {
            Sampling::Greedy => Ok(argmax(logits)),
            Sampling::TopP { temperature, top_p, .. } => {
                let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                Ok(top_p_pick(logits, temperature, top_p, u))
            }
        }
    }
}

/// The first index of the largest value.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// The token that uniform draw `u ∈ [0, 1)` lands on in the nucleus distribution.
fn top_p_pick(logits: &[f32], temperature: f64, top_p: f64, u: f64) -> u32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let mut probs: Vec<(u32, f64)> = logits.iter().enumerate().map(|(i, &x)| (i as u32, ((x as f64 - max) / temperature).exp())).collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    // Most likely first; ties by token id so the order never depends on the sort.
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0;
    let mut mass = 0.0;
    for (_, p) in &probs {
        kept += 1;
        mass += p / total;
        if mass >= top_p {
            break;
        }
    }
    let nucleus = &probs[..kept];
    let nucleus_total: f64 = nucleus.iter().map(|p| p.1).sum();
    let mut acc = 0.0;
    for (id, p) in nucleus {
        acc += p / nucleus_total;
        if u < acc {
            return *id;
        }
    }
    nucleus[kept - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(Sampling::Greedy);
        assert_eq!(s.sample(&[0.1, 2.0, -1.0, 2.0]).unwrap(), 1);
        assert!(s.sample(&[0.1, f32::NAN]).is_err());
        assert_eq!(Sampling::new(0.0, 1.0, 5).unwrap(), Sampling::Greedy);
        assert!(Sampling::new(-1.0, 1.0, 5).is_err());
        assert!(Sampling::new(0.7, 0.0, 5).is_err());
    }

    #[test]
    fn top_p_keeps_the_nucleus_and_is_reproducible() {
        // Probabilities ≈ [0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps the first two only.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        assert_eq!(top_p_pick(&logits, 1.0, 0.8, 0.0), 0);
        assert_eq!(top_p_pick(&logits, 1.0, 0.8, 0.999), 1);
        assert_eq!(top_p_pick(&logits, 1.0, 1.0, 0.999), 3);
        // A very low temperature is almost greedy.
        assert_eq!(top_p_pick(&logits, 1e-3, 1.0, 0.999), 0);
        let draw = |seed| {
            let mut s = Sampler::new(Sampling::new(1.0, 0.95, seed).unwrap());
            (0..50).map(|_| s.sample(&logits).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let d = draw(7);
        assert!(d.contains(&0) && d.contains(&1) && !d.contains(&3), "{d:?}");
    }
}
