//! Generation on the tiny llama: interventions edit the prompt in the prefill only.

use super::{generate, GenerateOptions, Sampling};
use crate::hooks::{Hooks, Site};
use crate::model::llama::tests::tiny_model;
use crate::model::tokenizer::batch_from_ids;
use candle_core::{DType, Device, Tensor};

/// Counts hook calls and shifts the embeddings (an intervention that changes the prompt's
/// states).
struct Counting {
    calls: std::cell::Cell<usize>,
    shift: f64,
}

impl Hooks for Counting {
    fn representation(&self, site: Site, h: Tensor) -> crate::Result<Tensor> {
        self.calls.set(self.calls.get() + 1);
        if site == Site::embeddings() {
            return Ok((h + self.shift)?);
        }
        Ok(h)
    }
    fn linear(&self, _: Site, _: &Tensor, y: Tensor) -> crate::Result<Tensor> {
        self.calls.set(self.calls.get() + 1);
        Ok(y)
    }
}

#[test]
fn hooks_apply_to_the_prefill_only() {
    let m = tiny_model(DType::F32, true);
    let prompt = batch_from_ids(&[vec![3, 17, 5, 9]], 0, &Device::Cpu).unwrap();
    let opts = GenerateOptions { max_new_tokens: 6, sampling: Sampling::Greedy, extra_stop_tokens: vec![0, 1, 2] };
    let run = |shift: f64| {
        let hooks = Counting { calls: std::cell::Cell::new(0), shift };
        let mut seen = Vec::new();
        let gen = generate(&m, &prompt, &hooks, &opts, &mut |t| {
            seen.push(t);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, gen.tokens);
        (gen.tokens, hooks.calls.get())
    };
    let (plain, calls) = run(0.0);
    // One prefill: the embeddings hook, then per layer 6 representation hooks (block_input,
    // attention_value_output, attention_output, mlp_activation, mlp_output, block_output)
    // and 7 linear ones (q, k, v, o, gate, up, down).
    assert_eq!(calls, 1 + 2 * 13, "hooks must not run during cached decoding");
    let (shifted, _) = run(3.0);
    assert_ne!(plain, shifted, "an intervention on the prompt changes what follows");
}
