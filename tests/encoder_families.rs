//! RoBERTa-family encoders against transformers: a tiny random `roberta` checkpoint written
//! with its reference hidden states by tests/reference/roberta.py (fixtures in
//! tests/fixtures/encoders/). RoBERTa is BERT with position ids that start after
//! `pad_token_id`; run as BERT it is off at every layer. reft must match transformers on a
//! padded batch and on single rows, `xlm-roberta` must compute the same (transformers'
//! `XLMRobertaModel` is RoBERTa's code, which the script asserts), and the ONNX export must
//! match candle on ONNX Runtime.

mod common;

use common::*;
use reft_core::candle_core::{DType, Device, Tensor, Var, D};
use reft_core::collect::Collector;
use reft_core::deploy::Source;
use reft_core::export::{export_pipeline, ExportInput, ExportOptions};
use reft_core::hooks::{Component, Site};
use reft_core::intervention::attach::Interventions;
use reft_core::model::{self, tokenizer::batch_from_ids, Backbone};
use reft_core::recipe::Pooling;
use reft_core::rng::SeededRng;
use reft_core::runtime::OrtPipeline;
use reft_core::task::classification::{ClassifierHead, ClassifierModel};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// Bound on max |reft − transformers| over real tokens: both compute in f32 from the same
/// weights and differ only in the order of their sums (measured: below 1e-5).
const PARITY: f32 = 1e-4;
const LAYERS: usize = 3;
const PAD: u32 = 1;

fn folder() -> PathBuf {
    fixture("encoders").join("roberta")
}

/// The fixture's id rows without their right padding, which `batch_from_ids` puts back with
/// its attention mask (`common::id_rows` strips 0, which is RoBERTa's `<s>`).
fn rows(ids: &Tensor) -> Vec<Vec<u32>> {
    let unpad = |mut r: Vec<u32>| {
        while r.last() == Some(&PAD) {
            r.pop();
        }
        r
    };
    ids.to_vec2::<f32>().unwrap().into_iter().map(|r| unpad(r.into_iter().map(|v| v as u32).collect())).collect()
}

fn sites() -> Vec<Site> {
    let mut s = vec![Site::embeddings()];
    s.extend((0..LAYERS).map(|l| Site::new(l, Component::BlockOutput)));
    s
}

fn states(m: &dyn Backbone, ids: &[Vec<u32>]) -> Vec<Tensor> {
    let batch = batch_from_ids(ids, PAD, &Device::Cpu).unwrap();
    let c = Collector::plain(sites());
    m.forward(&batch, &c).unwrap();
    let got = c.into_captured();
    sites().iter().map(|s| got[s].clone()).collect()
}

/// Worst |got − want| over the real tokens of every state.
fn worst_on_real_tokens(got: &[Tensor], want: &Tensor, mask: &Tensor) -> f32 {
    let m = mask.unsqueeze(D::Minus1).unwrap();
    got.iter()
        .enumerate()
        .map(|(k, g)| max_abs(&g.broadcast_mul(&m).unwrap(), &want.get(k).unwrap().broadcast_mul(&m).unwrap()))
        .fold(0f32, f32::max)
}

fn check_against_reference(dir: &Path) -> f32 {
    let m = model::load(dir, DType::F32, &Device::Cpu).unwrap();
    let fx = load_fixture("encoders/roberta/reference.safetensors");
    let ids = rows(&fx["input_ids"]);
    let mask = &fx["attention_mask"];
    let want = &fx["hidden_states"]; // [L + 1, 2, S, D]
    let mut worst = worst_on_real_tokens(&states(m.as_ref(), &ids), want, mask);
    // Each row alone, without its padding: the same positions, so the same states.
    for (i, row) in ids.iter().enumerate() {
        let got: Vec<Tensor> = states(m.as_ref(), std::slice::from_ref(row));
        let want_row = want.narrow(1, i, 1).unwrap().narrow(2, 0, row.len()).unwrap();
        let ones = Tensor::ones((1, row.len()), DType::F32, &Device::Cpu).unwrap();
        worst = worst.max(worst_on_real_tokens(&got, &want_row, &ones));
    }
    // The pretrained pooler on <s>.
    let h = m.forward(&batch_from_ids(&ids, PAD, &Device::Cpu).unwrap(), &model::NoHooks).unwrap();
    let pooled = m.pool_first(&h).unwrap().expect("the checkpoint has a pooler");
    worst.max(max_abs(&pooled, &fx["pooler"]))
}

#[test]
fn roberta_matches_transformers_on_padded_and_single_rows() {
    let worst = check_against_reference(&folder());
    eprintln!("roberta: max |reft - transformers| = {worst:.2e}");
    assert!(worst <= PARITY, "{worst:e}");
}

#[test]
fn xlm_roberta_is_roberta_and_bert_positions_would_be_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = |model_type: &str| -> PathBuf {
        let dir = tmp.path().join(model_type);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["model.safetensors", "tokenizer.json"] {
            std::fs::copy(folder().join(f), dir.join(f)).unwrap();
        }
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(folder().join("config.json")).unwrap()).unwrap();
        config["model_type"] = model_type.into();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        dir
    };
    let worst = check_against_reference(&copy("xlm-roberta"));
    assert!(worst <= PARITY, "xlm-roberta: {worst:e}");
    // The same weights numbered from 0, as BERT would: far off (so the check above has teeth).
    let bert = model::load(&copy("bert"), DType::F32, &Device::Cpu).unwrap();
    let fx = load_fixture("encoders/roberta/reference.safetensors");
    let off = worst_on_real_tokens(&states(bert.as_ref(), &rows(&fx["input_ids"])), &fx["hidden_states"], &fx["attention_mask"]);
    assert!(off > 0.1, "run as BERT, the states moved by only {off}");
}

#[test]
fn roberta_exports_to_onnx_and_matches_candle_on_padded_batches() {
    let dir = folder();
    let backbone = model::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let ivs: Interventions = random_interventions(backbone.as_ref(), &[("loreft", "{rank: 4}", "layers[1].block_output", "f1+l1")], 3, 0.05);
    let head = ClassifierHead::new(64, 2, Pooling::Cls, &mut SeededRng::new(5), DType::F32, &Device::Cpu).unwrap();
    let head = ClassifierHead { weight: Var::from_tensor(&SeededRng::new(6).normal((2, 64), 0.5, DType::F32, &Device::Cpu).unwrap()).unwrap(), ..head };
    let clf = ClassifierModel { backbone: backbone.as_ref(), interventions: &ivs, head: &head, dtype: DType::F32 };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pipe");
    export_pipeline(
        &ExportInput {
            backbone: backbone.as_ref(),
            interventions: &ivs,
            head: &head,
            model_dir: &dir,
            labels: Some(vec!["neg".into(), "pos".into()]),
            max_length: 38,
            source: Source { adapter: "in-memory".into(), base_model: dir.display().to_string(), base_model_fingerprint: String::new() },
        },
        &out,
        &ExportOptions::default(),
    )
    .unwrap();
    onnx_checker(&out.join("model.onnx"));
    let mut pipe = OrtPipeline::load(&out, None).unwrap();
    assert_eq!(pipe.spec.pad_id, PAD);
    let texts = ["w5 w6 w7 w8 w9 w10 w11 w12", "w40 w41", "w99 w4 w17", "w3"];
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| pipe.encode(t).unwrap()).collect();
    assert_eq!(ids[1], [0, 40, 41, 2], "the <s> … </s> template");
    let rng = RefCell::new(SeededRng::new(0));
    let batch = batch_from_ids(&ids, PAD, &Device::Cpu).unwrap();
    let want = clf.logits(&batch, None, false, &rng).unwrap().to_vec2::<f32>().unwrap();
    let got = pipe.logits(&ids).unwrap();
    let worst = want.iter().flatten().zip(got.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("roberta pipeline: max |ORT - candle| = {worst:.2e}");
    assert!(worst <= PARITY, "{worst:e}");
}
