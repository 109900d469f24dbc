//! Finite-difference check of the gradients that reach an intervention through the frozen
//! layers above it, on the real MiniLM in f64. candle's fused norm/softmax ops have no
//! backward and would make these gradients silently wrong (docs/plugins.md says which candle ops have no backward); this
//! test is what catches such an op slipping into the backbone.

mod common;

use common::*;
use reft_core::intervention::attach::Interventions;
use reft_core::candle_core::{DType, Device, Tensor};
use reft_core::hooks::{Component, Site};
use reft_core::model::{self, Backbone};
use reft_core::hooks::positions::Positions;
use reft_core::rng::SeededRng;
use std::cell::RefCell;

fn loss(bert: &dyn Backbone, iv: &Interventions, batch: &reft_core::model::Batch, probe: &Tensor) -> Tensor {
    let rng = RefCell::new(SeededRng::new(0));
    let hooks = iv.hooks(batch, false, DType::F64, &rng).unwrap();
    let h = bert.forward(batch, &hooks).unwrap();
    let m = batch.attention_mask.to_dtype(DType::F64).unwrap().unsqueeze(2).unwrap();
    // A fixed random read-out of every real token of the last layer.
    h.broadcast_mul(&m).unwrap().mul(probe).unwrap().sum_all().unwrap()
}

#[test]
fn intervention_gradients_match_finite_differences() {
    let dir = minilm_dir();
    let dev = Device::Cpu;
    let bert = model::load(&dir, DType::F64, &dev).unwrap();
    let tok = model::load_tokenizer(&dir).unwrap();
    let batch = tok
        .batch(&["A gripping, well acted film.", "Dull."], None, &dev)
        .unwrap();
    let (b, s) = batch.dims();
    let probe = SeededRng::new(11).normal((b, s, 384), 1.0, DType::F64, &dev).unwrap();

    // One of each shape of plugin: LoReFT (Householder rotation) low in the stack, so the
    // gradient crosses five frozen layers of attention, LayerNorm and GELU.
    let mut iv = Interventions::default();
    let mut rng = SeededRng::new(3);
    for (kind, opts, site) in [
        ("loreft", "{rank: 2, activation: gelu}", Site::new(1, Component::BlockOutput)),
        ("mlp", "{hidden: 4, activation: gelu}", Site::new(3, Component::AttentionOutput)),
    ] {
        let options: serde_yaml::Mapping = serde_yaml::from_str(opts).unwrap();
        let mut spec = reft_core::intervention::BuildSpec {
            options: &options,
            site,
            in_dim: 384,
            out_dim: 384,
            device: &dev,
            dtype: DType::F64,
            rng: &mut rng,
        };
        let module = (reft_core::intervention::find(kind).unwrap().build)(&mut spec).unwrap();
        iv.push(kind, site, "f1+l1".parse::<Positions>().unwrap(), module);
    }
    // The mlp's last layer starts at zero; move it off zero so every path carries gradient.
    for a in &iv.items {
        for v in a.module.state() {
            if v.name == "down.weight" {
                let t = SeededRng::new(5).normal(v.var.shape(), 0.05, DType::F64, &dev).unwrap();
                v.var.set(&t).unwrap();
            }
        }
    }

    let grads = loss(bert.as_ref(), &iv, &batch, &probe).backward().unwrap();
    let eps = 1e-5;
    let mut worst = 0f64;
    let mut checked = 0;
    let mut pick = SeededRng::new(17);
    for a in &iv.items {
        for v in a.module.state().into_iter().filter(|v| v.trainable) {
            let g = grads.get(v.var.as_tensor()).expect("every trainable tensor gets a gradient");
            let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let base = v.var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for _ in 0..3 {
                let i = (pick.next_u64() % base.len() as u64) as usize;
                let at = |delta: f64| {
                    let mut w = base.clone();
                    w[i] += delta;
                    v.var.set(&Tensor::from_vec(w, v.var.shape(), &dev).unwrap()).unwrap();
                    let l = loss(bert.as_ref(), &iv, &batch, &probe).to_scalar::<f64>().unwrap();
                    v.var.set(&Tensor::from_vec(base.clone(), v.var.shape(), &dev).unwrap()).unwrap();
                    l
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                let rel = (numeric - g[i]).abs() / (numeric.abs().max(g[i].abs()).max(1e-3));
                println!("{}.{}[{i}]: autograd {:+.6e}, finite difference {numeric:+.6e}, rel {rel:.1e}", a.name, v.name, g[i]);
                worst = worst.max(rel);
                checked += 1;
            }
        }
    }
    assert!(checked >= 12);
    assert!(worst < 1e-4, "worst relative gradient error {worst:.2e}");
}
