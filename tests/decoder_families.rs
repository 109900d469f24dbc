//! The llama-family decoders against transformers: tiny random checkpoints of llama (Llama 3
//! scaled RoPE, untied head), mistral (sliding window), qwen2 (q/k/v biases, stored in bf16),
//! qwen3 (per-head q/k norms, explicit head_dim) and phi3 (fused qkv_proj and gate_up_proj),
//! each sharded as transformers saves it,
//! with transformers 5.x's config keys. Written with their reference logits, two layers'
//! block outputs and 8 greedy tokens by tests/reference/decoder_families.py (fixtures in
//! tests/fixtures/families/). reft must match them in f32, from the safetensors and from
//! llama.cpp's GGUF conversion of the same weights, and its ONNX export (prefill + decode
//! step on ONNX Runtime) must match reft's candle run.

mod common;

use common::*;
use reft_core::candle_core::{DType, Device, Tensor};
use reft_core::generate::{generate, GenerateOptions, Sampling};
use reft_core::hooks::{Component, Site};
use reft_core::model::tokenizer::batch_from_ids;
use reft_core::model::{self, Hooks, NoHooks};
use std::cell::RefCell;
use std::path::PathBuf;

const FAMILIES: [&str; 5] = ["llama", "mistral", "qwen2", "qwen3", "phi3"];
/// The families llama.cpp's converter wrote GGUF files of (tests/fixtures/families_gguf/).
const GGUF_FAMILIES: [&str; 4] = ["llama", "mistral", "qwen2", "qwen3"];

/// Bound on max |reft − transformers| for logits and hidden states, relative to the tensor's
/// largest magnitude: both compute in f32 from the same weights, and differ only in the
/// order of their sums.
const PARITY: f32 = 1e-4;

fn folder(family: &str) -> PathBuf {
    fixture("families").join(family)
}

struct Reference {
    ids: Vec<u32>,
    logits: Tensor,
    block_outputs: [Tensor; 2],
    greedy: Vec<u32>,
}

fn reference(family: &str) -> Reference {
    let t = load_fixture(&format!("families/{family}/reference.safetensors"));
    let ids = t["input_ids"].to_vec1::<f32>().unwrap().into_iter().map(|x| x as u32).collect();
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(folder(family).join("reference.json")).unwrap()).unwrap();
    let greedy = meta["greedy_tokens"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    Reference { ids, logits: t["logits"].clone(), block_outputs: [t["block_output_0"].clone(), t["block_output_1"].clone()], greedy }
}

/// Keeps each layer's `block_output`.
#[derive(Default)]
struct Record(RefCell<Vec<(usize, Tensor)>>);

impl Hooks for Record {
    fn representation(&self, site: Site, h: Tensor) -> reft_core::Result<Tensor> {
        if let (Some(layer), Component::BlockOutput) = (site.layer, site.component) {
            self.0.borrow_mut().push((layer, h.clone()));
        }
        Ok(h)
    }
    fn linear(&self, _: Site, _: &Tensor, y: Tensor) -> reft_core::Result<Tensor> {
        Ok(y)
    }
}

/// max |a − b| over max |b|.
fn relative(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    max_abs(a, b) / scale.max(1e-6)
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions { max_new_tokens: n, sampling: Sampling::Greedy, extra_stop_tokens: vec![] }
}

/// max |reft − transformers| over scale for the logits and two block outputs of `m` (loaded
/// from `family`'s checkpoint in some format), and its 8 greedy tokens, against the reference.
fn check_against_reference(family: &str, format: &str, m: &dyn model::Backbone) {
    let r = reference(family);
    let batch = batch_from_ids(&[r.ids.clone()], 0, &Device::Cpu).unwrap();
    let record = Record::default();
    let h = m.forward(&batch, &record).unwrap();
    let lm = m.as_causal_lm().unwrap();
    let logits = lm.lm_head(&h).unwrap().squeeze(0).unwrap();
    let recorded = record.0.borrow();
    let block = |l: usize| recorded.iter().find(|(layer, _)| *layer == l).unwrap().1.squeeze(0).unwrap();
    let (d_logits, d0, d1) = (relative(&logits, &r.logits), relative(&block(0), &r.block_outputs[0]), relative(&block(1), &r.block_outputs[1]));
    let tokens = generate(lm, &batch, &NoHooks, &greedy(8), &mut |_| Ok(())).unwrap().tokens;
    eprintln!(
        "{family} ({format}): logits {d_logits:.1e}, block_output[0] {d0:.1e}, block_output[1] {d1:.1e} (max |diff| over scale); greedy {tokens:?} (transformers {:?})",
        r.greedy
    );
    assert!(d_logits <= PARITY && d0 <= PARITY && d1 <= PARITY, "{family} ({format}): {d_logits:e} {d0:e} {d1:e}");
    assert_eq!(tokens, r.greedy, "{family} ({format}): greedy tokens");
}

#[test]
fn every_family_matches_transformers_in_f32() {
    for family in FAMILIES {
        let m = model::load(&folder(family), DType::F32, &Device::Cpu).unwrap();
        check_against_reference(family, "safetensors", m.as_ref());
    }
}

/// The same checkpoints converted by llama.cpp's own `convert_hf_to_gguf.py`
/// (tests/reference/gguf_families.py; fixtures in tests/fixtures/families_gguf/): llama and
/// mistral as `general.architecture: llama` with permuted query/key rows and, for llama,
/// Llama 3's scaling as `rope_freqs.weight`; qwen2 (biases) and qwen3 (`key_length` 32,
/// q/k norms) under their own architectures, rows unpermuted. They must compute what
/// transformers computes from the safetensors.
#[test]
fn every_family_converted_to_gguf_by_llama_cpp_matches_transformers() {
    for family in GGUF_FAMILIES {
        let file = fixture("families_gguf").join(format!("{family}.gguf"));
        let m = model::load(&file, DType::F32, &Device::Cpu).unwrap();
        check_against_reference(family, "gguf", m.as_ref());
    }
}

/// `reft export --model` of each family (prefill + decode-step graphs), run by ONNX Runtime:
/// the prompt's last-position logits match candle's, ONNX's checker accepts both graphs, and
/// the greedy tokens (a prefill, then 7 cached decode steps) are transformers' tokens.
#[test]
fn every_family_exports_to_onnx_and_generates_the_same_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let r = reference(family);
        let out = tmp.path().join(family);
        let (ok, stdout, err) = run_reft(&["export", "--model", folder(family).to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(ok, "{family}: reft export failed: {err}");
        assert!(stdout.contains("3 layers"), "{stdout}");
        onnx_checker(&out.join("prefill.onnx"));
        onnx_checker(&out.join("decode.onnx"));

        let m = model::load(&folder(family), DType::F32, &Device::Cpu).unwrap();
        let lm = m.as_causal_lm().unwrap();
        let batch = batch_from_ids(&[r.ids.clone()], 0, &Device::Cpu).unwrap();
        let h = m.forward(&batch, &NoHooks).unwrap();
        let want = lm.lm_head(&h.narrow(1, r.ids.len() - 1, 1).unwrap()).unwrap().flatten_all().unwrap();

        let mut dec = reft_core::runtime::OrtDecoder::load(&out, None).unwrap();
        let (got, _) = dec.lm.prefill(std::slice::from_ref(&r.ids)).unwrap();
        let got = Tensor::new(got[0].as_slice(), &Device::Cpu).unwrap();
        let d = relative(&got, &want);
        let tokens = dec.lm.generate(&r.ids, &greedy(8), &mut |_| Ok(())).unwrap().tokens;
        eprintln!("{family}: ORT prefill logits vs candle {d:.1e}; ORT greedy {tokens:?}");
        assert!(d <= PARITY, "{family}: ORT vs candle {d:e}");
        assert_eq!(tokens, r.greedy, "{family}: ORT greedy tokens against transformers'");
    }
}

/// Mistral's window (32 in the fixture) bounds the sequence: within it, sliding-window
/// attention equals full attention, so reft computes it exactly; beyond it, it refuses.
#[test]
fn a_sliding_window_caps_the_sequence_length() {
    let info = model::inspect(&folder("mistral")).unwrap();
    assert_eq!(info.config.max_positions(), 32, "mistral's window");
    assert_eq!(model::inspect(&folder("qwen2")).unwrap().config.max_positions(), 128, "qwen2 uses no window");
    assert_eq!(model::inspect(&folder("phi3")).unwrap().config.max_positions(), 48, "phi3's window");
    // A sharded folder has a fingerprint (adapters record it), and each family its own.
    let prints: std::collections::BTreeSet<String> = FAMILIES.iter().map(|f| reft_core::adapter::fingerprint(&folder(f)).unwrap()).collect();
    assert_eq!(prints.len(), FAMILIES.len());
    let m = model::load(&folder("mistral"), DType::F32, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..33).map(|i| i % 100 + 1).collect();
    let e = m.forward(&batch_from_ids(&[ids], 0, &Device::Cpu).unwrap(), &NoHooks).err().expect("33 tokens past a window of 32").to_string();
    assert!(e.contains("33 tokens") && e.contains("32"), "{e}");
}
