//! The BERT backbone against the reference implementation (transformers.BertModel, eval,
//! eager attention) on the real all-MiniLM-L6-v2: embeddings and all six layer outputs
//! within 1e-4, and the sentence-embedding known answer of docs/assets.md.

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

/// The `[CLS]`-only last layer (`forward_from_to_first_token`) gives the first token of the
/// full forward, in value and in the gradients that reach an intervention below it, and
/// falls back to the full layer when a hook sits in the last layer. f64, so the two paths
/// must agree to rounding; a padded batch, so the key mask must be applied the same way.
#[test]
fn first_token_shortcut_equals_the_full_forward() {
    use reft_core::intervention::attach::Interventions;
    use reft_core::hooks::positions::Positions;
    use reft_core::rng::SeededRng;
    use std::cell::RefCell;

    let dir = minilm_dir();
    let dev = Device::Cpu;
    let bert = model::load(&dir, DType::F64, &dev).unwrap();
    let tok = model::load_tokenizer(&dir).unwrap();
    let batch = tok.batch(&["A gripping, well acted film.", "Dull.", "Neither good nor bad, just long."], None, &dev).unwrap();
    let probe = SeededRng::new(3).normal((3, 1, 384), 1.0, DType::F64, &dev).unwrap();

    // Below the last layer; in the last layer on its input, which reaches [CLS] through
    // keys and values (full layer); on [CLS]'s own output, alone or with the last token's;
    // after attention on [CLS] and another token; LoRA on the query (fed [CLS] alone) and on
    // the value (fed every token). All but the second take the shortcut.
    let cases = [
        ("loreft", "{rank: 2}", Component::BlockOutput, 2, "f1+l1", true),
        ("loreft", "{rank: 2}", Component::BlockInput, 5, "l2", false),
        ("loreft", "{rank: 2}", Component::BlockOutput, 5, "f1", true),
        ("loreft", "{rank: 2}", Component::BlockOutput, 5, "f1+l1", true),
        ("loreft", "{rank: 2}", Component::AttentionOutput, 5, "f1+l2", true),
        ("lora", "{rank: 2, alpha: 4}", Component::Linear(reft_core::hooks::LinearModule::Query), 5, "all", true),
        ("lora", "{rank: 2, alpha: 4}", Component::Linear(reft_core::hooks::LinearModule::Value), 5, "all", true),
    ];
    for (kind, opts, component, layer, positions, shortcut) in cases {
        let site = Site::new(layer, component);
        let options: serde_yaml::Mapping = serde_yaml::from_str(opts).unwrap();
        let mut rng = SeededRng::new(7);
        let mut spec = reft_core::intervention::BuildSpec { options: &options, site, in_dim: 384, out_dim: 384, device: &dev, dtype: DType::F64, rng: &mut rng };
        let module = (reft_core::intervention::find(kind).unwrap().build)(&mut spec).unwrap();
        // LoRA starts with B = 0; move every tensor off its initial value so each carries gradient.
        for v in module.state().into_iter().filter(|v| v.trainable) {
            let t = (v.var.as_tensor() + SeededRng::new(9).normal(v.var.shape(), 0.05, DType::F64, &dev).unwrap()).unwrap();
            v.var.set(&t).unwrap();
        }
        let mut iv = Interventions::default();
        iv.push(kind, site, positions.parse::<Positions>().unwrap(), module);
        let rng = RefCell::new(SeededRng::new(0));
        let hooks = iv.hooks(&batch, false, DType::F64, &rng).unwrap();
        use reft_core::model::Hooks;
        assert_eq!(hooks.first_token_suffices(5), shortcut, "{kind} at {site} {positions}");

        let full = bert.forward(&batch, &hooks).unwrap().narrow(1, 0, 1).unwrap();
        let h0 = bert.forward_until(&batch, 0, &hooks).unwrap();
        let short = bert.forward_from_to_first_token(h0, 0, &batch, &hooks).unwrap();
        assert_eq!(short.dims(), &[3, 1, 384]);
        let diff = max_abs(&full, &short);
        assert!(diff < 1e-10, "{kind} at {site} {positions}: values differ by {diff}");

        let vars: Vec<_> = iv.items[0].module.state().into_iter().filter(|v| v.trainable).map(|v| v.var).collect();
        let (gf, gs) = (full.mul(&probe).unwrap().sum_all().unwrap().backward().unwrap(), short.mul(&probe).unwrap().sum_all().unwrap().backward().unwrap());
        for var in &vars {
            let (a, b) = (gf.get(var.as_tensor()).unwrap(), gs.get(var.as_tensor()).unwrap());
            let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            let gdiff = max_abs(a, b) as f64;
            assert!(scale > 0.0 && gdiff <= 1e-9 * scale, "{kind} at {site} {positions}: gradients differ by {gdiff} (scale {scale})");
        }
    }
}
