//! LoReFT against pyreft: given the R, W, b of the golden fixture, our LoReFT at layer 2
//! (all positions) of the real MiniLM reproduces the reference layer-2 output and the final
//! hidden state within 1e-4.

mod common;

use common::*;
use reft_core::intervention::attach::Interventions;
use reft_core::candle_core::{DType, Device, Var};
use reft_core::collect::Collector;
use reft_core::hooks::{Component, Site};
use reft_core::model::{self, tokenizer::batch_from_ids};
use reft_core::hooks::positions::Positions;
use reft_core::rng::SeededRng;
use reft_plugins::common::{activation::Activation, rotation::Rotation};
use reft_plugins::reft::{LowRankReft, Projection, Variant};
use std::cell::RefCell;

#[test]
fn loreft_reproduces_pyreft_at_layer_2() {
    let fx = load_fixture("loreft_golden.safetensors");
    let frame = fx["R"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let loreft = LowRankReft {
        variant: Variant::LoReft,
        projection: Projection::Orthonormal(Rotation::from_frame(&frame, 384, 4, DType::F32, &Device::Cpu).unwrap()),
        source_weight: Some(Var::from_tensor(&fx["W"]).unwrap()),
        source_bias: Var::from_tensor(&fx["b"]).unwrap(),
        activation: Activation::Linear,
        dropout: 0.0,
    };
    // Our Householder parametrisation reproduces pyreft's R exactly (up to f32 rounding).
    let r_paper = fx["R"].t().unwrap();
    let r_diff = max_abs(&loreft.projection_matrix().unwrap(), &r_paper);
    println!("R reconstruction max |diff| = {r_diff:.2e}");
    assert!(r_diff < 1e-6);

    let site = Site::new(2, Component::BlockOutput);
    let mut iv = Interventions::default();
    iv.push("golden", site, Positions::All, Box::new(loreft));
    let bert = model::load(&minilm_dir(), DType::F32, &Device::Cpu).unwrap();
    let rng = RefCell::new(SeededRng::new(0));

    for i in 0..2 {
        let ids = id_rows(&fx[&format!("s{i}_input_ids")]);
        let batch = batch_from_ids(&ids, 0, &Device::Cpu).unwrap();
        let hooks = iv.hooks(&batch, false, DType::F32, &rng).unwrap();
        let c = Collector::new(vec![site], &hooks);
        let last = bert.forward(&batch, &c).unwrap();
        let after = c.into_captured()[&site].clone();
        let d_after = max_abs(&after, &fx[&format!("s{i}_layer2_after")]);
        let d_last = max_abs(&last, &fx[&format!("s{i}_last_hidden_state")]);
        let moved = max_abs(&last, &fx[&format!("s{i}_base_last_hidden_state")]);
        println!("sentence {i}: layer-2 output max |diff| {d_after:.2e}, final {d_last:.2e} (intervention moves it {moved:.2})");
        assert!(d_after <= 1e-4 && d_last <= 1e-4);
        assert!(moved > 0.1, "the intervention must matter for the test to mean anything");
    }
}
