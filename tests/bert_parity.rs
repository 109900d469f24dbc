//! The BERT backbone against the reference implementation (transformers.BertModel, eval,
//! eager attention) on the real all-MiniLM-L6-v2: embeddings and all six layer outputs
//! within 1e-4, and the sentence-embedding known answer of ASSETS.md.

mod common;

use common::*;
use reft_core::candle_core::{DType, Device, Tensor, D};
use reft_core::collect::Collector;
use reft_core::hooks::{Component, Site};
use reft_core::model::{self, tokenizer::batch_from_ids, Backbone};

/// The 7 reference states: embeddings, then each layer's block_output.
fn all_sites() -> Vec<Site> {
    let mut s = vec![Site::embeddings()];
    s.extend((0..6).map(|l| Site::new(l, Component::BlockOutput)));
    s
}

fn states(bert: &dyn Backbone, ids: &[Vec<u32>]) -> Vec<Tensor> {
    let batch = batch_from_ids(ids, 0, &Device::Cpu).unwrap();
    let c = Collector::plain(all_sites());
    bert.forward(&batch, &c).unwrap();
    let got = c.into_captured();
    all_sites().iter().map(|s| got[s].clone()).collect()
}

#[test]
fn hidden_states_match_reference_batched_and_single() {
    let dir = minilm_dir();
    let bert = model::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let fx = load_fixture("minilm_hidden.safetensors");
    let ids = id_rows(&fx["input_ids"]);
    let mask = fx["attention_mask"].to_dtype(DType::F32).unwrap();
    let want = &fx["hidden_states"]; // [7, 4, 40, 384]

    let got = states(bert.as_ref(), &ids);
    let mut worst = 0f32;
    for (k, g) in got.iter().enumerate() {
        // Compare only real tokens: values at padding have no meaning.
        let w = want.get(k).unwrap();
        let m = mask.unsqueeze(D::Minus1).unwrap();
        let diff = max_abs(&g.broadcast_mul(&m).unwrap(), &w.broadcast_mul(&m).unwrap());
        println!("batched state {k}: max |diff| = {diff:.2e}");
        worst = worst.max(diff);
    }
    assert!(worst <= 1e-4, "batched max |diff| {worst}");

    for (i, row) in ids.iter().enumerate() {
        let got = states(bert.as_ref(), std::slice::from_ref(row));
        let want = &fx[&format!("single_{i}_hidden_states")];
        for (k, g) in got.iter().enumerate() {
            let diff = max_abs(&g.squeeze(0).unwrap(), &want.get(k).unwrap());
            assert!(diff <= 1e-4, "sentence {i} state {k}: {diff}");
        }
    }
}

#[test]
fn tokenizer_reproduces_reference_ids() {
    let tok = model::load_tokenizer(&minilm_dir()).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("minilm_hidden.json")).unwrap()).unwrap();
    let fx = load_fixture("minilm_hidden.safetensors");
    let want = id_rows(&fx["input_ids"]);
    for (i, s) in meta["sentences"].as_array().unwrap().iter().enumerate() {
        assert_eq!(tok.encode(s.as_str().unwrap(), None).unwrap(), want[i], "sentence {i}");
    }
    // The shipped tokenizer.json pads to 128; reft must not.
    assert_eq!(tok.encode("Hello world.", None).unwrap().len(), 5);
}

fn embed(bert: &dyn Backbone, tok: &model::tokenizer::TextTokenizer, texts: &[&str]) -> Tensor {
    let batch = tok.batch(texts, None, &Device::Cpu).unwrap();
    let h = bert.forward(&batch, &model::NoHooks).unwrap();
    let m = batch.attention_mask.unsqueeze(D::Minus1).unwrap();
    let sum = h.broadcast_mul(&m).unwrap().sum(1).unwrap();
    let mean = sum.broadcast_div(&m.sum(1).unwrap()).unwrap();
    mean.broadcast_div(&mean.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap()).unwrap()
}

#[test]
fn sentence_embeddings_reproduce_the_known_answer() {
    let dir = minilm_dir();
    let bert = model::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let tok = model::load_tokenizer(&dir).unwrap();
    let e = embed(
        bert.as_ref(),
        &tok,
        &["A man is playing a guitar.", "Someone is strumming a guitar.", "The stock market fell sharply today."],
    );
    let cos = e.matmul(&e.t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
    println!("cos(guitar, strumming) = {:.4}, cos(guitar, stocks) = {:.4}", cos[0][1], cos[0][2]);
    assert!((cos[0][1] - 0.719).abs() < 5e-4, "{}", cos[0][1]);
    assert!(cos[0][2].abs() < 0.15, "{}", cos[0][2]);

    // And the fixture's own sentence embeddings.
    let fx = load_fixture("minilm_hidden.safetensors");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("minilm_hidden.json")).unwrap()).unwrap();
    let sents: Vec<&str> = meta["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let got = embed(bert.as_ref(), &tok, &sents);
    let diff = max_abs(&got, &fx["sentence_embeddings"]);
    println!("sentence embeddings max |diff| = {diff:.2e}");
    assert!(diff <= 1e-5, "{diff}");
}
