//! The causal-LM task on a tiny random llama (no assets): the label mask, positions inside
//! the prompt, training and generation editing the same tokens, the loss against the full
//! logits, and its gradient against finite differences.

use super::*;
use crate::hooks::{Component, Site};
use crate::intervention::{Ctx, Intervention, NamedVar};
use crate::model::llama::tests::tiny_model;
use crate::model::NoHooks;
use crate::hooks::positions::Positions;
use candle_core::{Device, Var, D};

#[test]
fn prompt_tokens_carry_no_loss() {
    let ids = [10u32, 11, 12, 13, 14, 2];
    assert_eq!(labels(&ids, 3), vec![IGNORE, IGNORE, IGNORE, 13, 14, 2]);
    // Two right-padded rows of a [2, 6] batch: 3 prompt tokens of 6, 2 of 4.
    let rows: [&[u32]; 2] = [&ids, &[20, 21, 22, 2]];
    let (pos, tgt) = scored_positions(&rows, &[3, 2], 6);
    // Row 0: positions 2, 3, 4 predict 13, 14, 2; row 1: positions 1, 2 predict 22, 2.
    assert_eq!(pos, vec![2, 3, 4, 7, 8]);
    assert_eq!(tgt, vec![13, 14, 2, 22, 2]);
    // No scored position predicts a prompt token or reads padding.
    for (&p, &_t) in pos.iter().zip(&tgt) {
        let (b, t) = (p as usize / 6, p as usize % 6);
        let (len, prompt) = [(6, 3), (4, 2)][b];
        assert!(t + 1 >= prompt && t + 1 < len, "position {t} of row {b}");
    }
}

#[test]
fn positions_fall_inside_the_prompt() {
    let prompt_lens = [5usize, 2, 1];
    let scope = prompt_scope(&prompt_lens, 8);
    for spec in ["f1+l1", "l1", "f3", "l3", "f2+l2", "all"] {
        let masks = spec.parse::<Positions>().unwrap().mask_rows(&scope);
        for (row, &p) in masks.iter().zip(&prompt_lens) {
            assert!(row.iter().enumerate().all(|(t, &m)| m == 0.0 || t < p), "{spec}: {row:?} past a prompt of {p}");
            assert!(row.iter().any(|&m| m == 1.0), "{spec}: nothing edited in {row:?}");
        }
    }
    let l1 = "f1+l1".parse::<Positions>().unwrap().mask_rows(&scope);
    assert_eq!(l1[0], vec![1., 0., 0., 0., 1., 0., 0., 0.]);
    assert_eq!(l1[2], vec![1., 0., 0., 0., 0., 0., 0., 0.]);
}

/// Adds a trainable vector: the simplest intervention that changes the result.
struct Shift(Var);

impl Intervention for Shift {
    fn kind(&self) -> &str {
        "shift"
    }
    fn delta(&self, input: &Tensor, _: &Ctx) -> Result<Tensor> {
        Ok(self.0.as_tensor().broadcast_as(input.shape())?.contiguous()?)
    }
    fn state(&self) -> Vec<NamedVar> {
        vec![NamedVar::trainable("v", self.0.clone())]
    }
}

fn shifted(dtype: DType, positions: &str) -> Interventions {
    let v = SeededRng::new(3).normal(16, 0.5, dtype, &Device::Cpu).unwrap();
    let mut iv = Interventions::default();
    iv.push("shift", Site::new(0, Component::BlockOutput), positions.parse().unwrap(), Box::new(Shift(Var::from_tensor(&v).unwrap())));
    iv
}

fn last_logits(lm: &dyn CausalLm, hidden: &Tensor, t: usize) -> Tensor {
    lm.lm_head(&hidden.get(0).unwrap().get(t).unwrap()).unwrap()
}

#[test]
fn training_edits_the_tokens_generation_edits() {
    let m = tiny_model(DType::F32, true);
    let rng = RefCell::new(SeededRng::new(0));
    let (prompt, full) = (vec![5u32, 6, 7, 8], vec![5u32, 6, 7, 8, 9, 10, 2]);
    for positions in ["l1", "f1+l1", "all"] {
        let iv = shifted(DType::F32, positions);
        let model = CausalLmModel::new(&m, &iv, DType::F32, &Device::Cpu).unwrap();
        // Training: prompt and response in one batch, positions counted inside the prompt.
        let batch = batch_from_ids(&[full.clone()], 0, &Device::Cpu).unwrap();
        let trained = last_logits(&m, &model.hidden(&batch, &[4], None, false, &rng).unwrap(), 3);
        // Generation: the prefill of the prompt alone with the adapter's hooks.
        let pb = batch_from_ids(&[prompt.clone()], 0, &Device::Cpu).unwrap();
        let hooks = iv.hooks(&pb, false, DType::F32, &rng).unwrap();
        let mut cache = m.new_cache();
        let prefill = last_logits(&m, &m.forward_cached(&pb, &mut cache, &hooks).unwrap(), 3);
        let base = last_logits(&m, &m.forward(&pb, &NoHooks).unwrap(), 3);
        let diff = |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff(&trained, &prefill) < 1e-5, "{positions}: training and generation disagree by {}", diff(&trained, &prefill));
        assert!(diff(&trained, &base) > 1e-2, "{positions}: the intervention changed nothing");
    }
}

#[test]
fn the_loss_is_the_mean_response_cross_entropy() {
    let m = tiny_model(DType::F64, true);
    let iv = shifted(DType::F64, "f1+l1");
    let model = CausalLmModel::new(&m, &iv, DType::F64, &Device::Cpu).unwrap();
    let rng = RefCell::new(SeededRng::new(0));
    let rows: Vec<Vec<u32>> = vec![vec![5, 6, 7, 8, 9, 10, 2], vec![11, 12, 13, 2]];
    let prompt_lens = [4usize, 2];
    let batch = batch_from_ids(&rows, 0, &Device::Cpu).unwrap();
    let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
    let (sum, n) = model.response_nll(&batch, &refs, &prompt_lens, None, false, &rng).unwrap();
    assert_eq!(n, 3 + 2);
    // By hand: every position's full log-softmax, read at the response tokens only.
    let hidden = model.hidden(&batch, &prompt_lens, None, false, &rng).unwrap();
    let logp = candle_nn::ops::log_softmax(&m.lm_head(&hidden).unwrap(), D::Minus1).unwrap().to_vec3::<f64>().unwrap();
    let mut want = 0.0;
    for (b, row) in rows.iter().enumerate() {
        for t in prompt_lens[b]..row.len() {
            want -= logp[b][t - 1][row[t] as usize];
        }
    }
    let got = sum.to_scalar::<f64>().unwrap();
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
}

#[test]
fn the_loss_gradient_matches_finite_differences() {
    let m = tiny_model(DType::F64, true);
    let iv = shifted(DType::F64, "f1+l1");
    let model = CausalLmModel::new(&m, &iv, DType::F64, &Device::Cpu).unwrap();
    let set = Encoded { ids: vec![vec![5, 6, 7, 8, 9, 10, 2], vec![11, 12, 13, 2]], targets: Targets::PromptLengths(vec![4, 2]) };
    let batch = batch_from_ids(&set.ids, 0, &Device::Cpu).unwrap();
    let rng = RefCell::new(SeededRng::new(0));
    let loss = |model: &CausalLmModel| model.batch_loss(&batch, &set, &[0, 1], None, &rng).unwrap();
    let var = iv.items[0].module.state()[0].var.clone();
    let grad = loss(&model).backward().unwrap().get(var.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
    let base = var.as_tensor().to_vec1::<f64>().unwrap();
    let eps = 1e-5;
    for i in [0, 7, 15] {
        let at = |x: f64| {
            let mut v = base.clone();
            v[i] = x;
            var.set(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap();
            loss(&model).to_scalar::<f64>().unwrap()
        };
        let fd = (at(base[i] + eps) - at(base[i] - eps)) / (2.0 * eps);
        assert!((fd - grad[i]).abs() < 1e-6 * (1.0 + fd.abs()), "d loss / d v[{i}]: autograd {} vs finite difference {fd}", grad[i]);
    }
    var.set(&Tensor::new(base, &Device::Cpu).unwrap()).unwrap();
}
