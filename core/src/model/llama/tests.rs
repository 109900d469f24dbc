//! Tiny random llama models (no assets needed): cached decoding against the full forward,
//! the GGUF and Hugging Face layouts against each other, padding, gradients, and a tokenizer
//! built from GGUF metadata. The real SmolLM2 checks are in tests/llama_*.rs.

use super::config::LlamaConfig;
use super::norm::RmsNorm;
use super::weights::{permute_rows, LayerWeights, LlamaWeights};
use super::*;
use crate::hooks::{Component, Site};
use crate::model::tokenizer::batch_from_ids;
use crate::model::{Backbone, CausalLm, Hooks, NoHooks};
use crate::nn::Linear;
use crate::rng::SeededRng;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;

fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 40,
        hidden_size: 16,
        intermediate_size: 24,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 4,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: super::config::RopeScaling::None,
        max_position_embeddings: 64,
        eos_token_ids: vec![2],
        family: super::config::Family::Llama,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        qk_norm: false,
        tied_embeddings: None,
    }
}

/// Random weights under their Hugging Face names.
fn hf_tensors(c: &LlamaConfig, dtype: DType, tied: bool) -> HashMap<String, Tensor> {
    let mut rng = SeededRng::new(7);
    let dev = Device::Cpu;
    let mut m = HashMap::new();
    let mut put = |name: String, shape: &[usize], std: f32| {
        let t = rng.normal(shape, std, DType::F32, &dev).unwrap().to_dtype(dtype).unwrap();
        m.insert(name, t);
    };
    let (d, i, q, kv) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
    put("model.embed_tokens.weight".into(), &[c.vocab_size, d], 1.0);
    if !tied {
        put("lm_head.weight".into(), &[c.vocab_size, d], 0.3);
    }
    put("model.norm.weight".into(), &[d], 0.2);
    for l in 0..c.num_layers {
        let p = format!("model.layers.{l}");
        put(format!("{p}.input_layernorm.weight"), &[d], 0.2);
        put(format!("{p}.post_attention_layernorm.weight"), &[d], 0.2);
        put(format!("{p}.self_attn.q_proj.weight"), &[q, d], 0.4);
        put(format!("{p}.self_attn.k_proj.weight"), &[kv, d], 0.4);
        put(format!("{p}.self_attn.v_proj.weight"), &[kv, d], 0.4);
        put(format!("{p}.self_attn.o_proj.weight"), &[d, q], 0.3);
        put(format!("{p}.mlp.gate_proj.weight"), &[i, d], 0.3);
        put(format!("{p}.mlp.up_proj.weight"), &[i, d], 0.3);
        put(format!("{p}.mlp.down_proj.weight"), &[d, i], 0.3);
    }
    // Norm weights near 1, as trained models have them.
    for (k, t) in m.iter_mut() {
        if k.ends_with("norm.weight") {
            *t = (t.clone() + 1.0).unwrap();
        }
    }
    m
}

/// A 2-layer random llama (vocabulary 40, width 16); other modules' tests use it too.
pub(crate) fn tiny_model(dtype: DType, tied: bool) -> Llama {
    let c = tiny_config();
    let t = hf_tensors(&c, dtype, tied);
    let g = |n: &str| t[n].clone();
    let lin = |n: String| Linear::new(g(&format!("{n}.weight")), None);
    let layers = (0..c.num_layers)
        .map(|l| {
            let p = format!("model.layers.{l}");
            LayerWeights {
                attn_norm: RmsNorm::new(g(&format!("{p}.input_layernorm.weight")), c.rms_norm_eps),
                q: lin(format!("{p}.self_attn.q_proj")),
                k: lin(format!("{p}.self_attn.k_proj")),
                v: lin(format!("{p}.self_attn.v_proj")),
                o: lin(format!("{p}.self_attn.o_proj")),
                mlp_norm: RmsNorm::new(g(&format!("{p}.post_attention_layernorm.weight")), c.rms_norm_eps),
                gate: lin(format!("{p}.mlp.gate_proj")),
                up: lin(format!("{p}.mlp.up_proj")),
                down: lin(format!("{p}.mlp.down_proj")),
                q_norm: None,
                k_norm: None,
            }
        })
        .collect();
    let w = LlamaWeights {
        embed: g("model.embed_tokens.weight"),
        layers,
        norm: RmsNorm::new(g("model.norm.weight"), c.rms_norm_eps),
        lm_head: t.get("lm_head.weight").cloned(),
        num_parameters: t.values().map(|t| t.elem_count()).sum(),
    };
    Llama::new(c, w, &Device::Cpu)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn logits_full(m: &Llama, ids: &[u32]) -> Tensor {
    let batch = batch_from_ids(&[ids.to_vec()], 0, &Device::Cpu).unwrap();
    m.lm_head(&m.forward(&batch, &NoHooks).unwrap()).unwrap().squeeze(0).unwrap()
}

#[test]
fn cached_decoding_matches_the_full_forward() {
    let m = tiny_model(DType::F32, true);
    let ids = [3u32, 17, 5, 9, 30, 12, 1];
    let full = logits_full(&m, &ids);
    // Prefill 4 tokens, then one at a time.
    let mut cache = m.new_cache();
    let pre = batch_from_ids(&[ids[..4].to_vec()], 0, &Device::Cpu).unwrap();
    let mut parts = vec![m.lm_head(&m.forward_cached(&pre, &mut cache, &NoHooks).unwrap()).unwrap().squeeze(0).unwrap()];
    for &t in &ids[4..] {
        let step = batch_from_ids(&[vec![t]], 0, &Device::Cpu).unwrap();
        parts.push(m.lm_head(&m.forward_cached(&step, &mut cache, &NoHooks).unwrap()).unwrap().squeeze(0).unwrap());
    }
    assert_eq!(cache.len(), ids.len());
    let cached = Tensor::cat(&parts, 0).unwrap();
    let diff = max_abs(&full, &cached);
    assert!(diff < 1e-5, "cached vs full logits differ by {diff}");
}

#[test]
fn right_padding_does_not_change_real_tokens() {
    let m = tiny_model(DType::F32, false);
    let (a, b) = (vec![3u32, 17, 5, 9, 30], vec![8u32, 2]);
    let both = batch_from_ids(&[a.clone(), b.clone()], 0, &Device::Cpu).unwrap();
    let h = m.forward(&both, &NoHooks).unwrap();
    for (k, row) in [a, b].iter().enumerate() {
        let alone = m.forward(&batch_from_ids(&[row.clone()], 0, &Device::Cpu).unwrap(), &NoHooks).unwrap();
        let got = h.get(k).unwrap().narrow(0, 0, row.len()).unwrap();
        let diff = max_abs(&got, &alone.squeeze(0).unwrap());
        assert!(diff < 1e-5, "row {k}: {diff}");
    }
}

#[test]
fn causal_mask_hides_later_tokens() {
    let m = tiny_model(DType::F32, true);
    let a = logits_full(&m, &[3, 17, 5, 9]);
    let b = logits_full(&m, &[3, 17, 5, 22]);
    assert!(max_abs(&a.narrow(0, 0, 3).unwrap(), &b.narrow(0, 0, 3).unwrap()) < 1e-6);
    assert!(max_abs(&a.narrow(0, 3, 1).unwrap(), &b.narrow(0, 3, 1).unwrap()) > 1e-3);
}

/// Write the tiny model as a GGUF file the way llama.cpp's converter does (GGUF names,
/// query/key rows permuted for interleaved RoPE), plus tokenizer metadata if given.
fn write_gguf(path: &std::path::Path, c: &LlamaConfig, t: &HashMap<String, Tensor>, extra: Vec<(&str, Value)>) {
    let rename = |n: &str| -> String {
        let n = n
            .replace("model.embed_tokens", "token_embd")
            .replace("model.norm", "output_norm")
            .replace("lm_head", "output")
            .replace("model.layers.", "blk.")
            .replace("input_layernorm", "attn_norm")
            .replace("post_attention_layernorm", "ffn_norm")
            .replace("self_attn.q_proj", "attn_q")
            .replace("self_attn.k_proj", "attn_k")
            .replace("self_attn.v_proj", "attn_v")
            .replace("self_attn.o_proj", "attn_output")
            .replace("mlp.gate_proj", "ffn_gate")
            .replace("mlp.up_proj", "ffn_up")
            .replace("mlp.down_proj", "ffn_down");
        n
    };
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, w) in t {
        let w = if name.ends_with("q_proj.weight") {
            permute_rows(w, c.num_heads).unwrap()
        } else if name.ends_with("k_proj.weight") {
            permute_rows(w, c.num_kv_heads).unwrap()
        } else {
            w.clone()
        };
        tensors.push((rename(name), QTensor::quantize(&w.to_dtype(DType::F32).unwrap(), GgmlDType::F32).unwrap()));
    }
    let mut meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(c.num_layers as u32)),
        ("llama.embedding_length", Value::U32(c.hidden_size as u32)),
        ("llama.feed_forward_length", Value::U32(c.intermediate_size as u32)),
        ("llama.attention.head_count", Value::U32(c.num_heads as u32)),
        ("llama.attention.head_count_kv", Value::U32(c.num_kv_heads as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(c.rms_norm_eps as f32)),
        ("llama.rope.freq_base", Value::F32(c.rope_theta as f32)),
        ("llama.context_length", Value::U32(c.max_position_embeddings as u32)),
        ("llama.vocab_size", Value::U32(c.vocab_size as u32)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
    ];
    meta.extend(extra);
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
}

#[test]
fn gguf_and_hugging_face_layouts_give_the_same_model() {
    let dir = std::env::temp_dir().join(format!("reft-llama-layouts-{}", std::process::id()));
    let hf = dir.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    let c = tiny_config();
    let t = hf_tensors(&c, DType::F32, true);
    candle_core::safetensors::save(&t, hf.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "model_type": "llama", "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads,
        "rms_norm_eps": c.rms_norm_eps, "rope_theta": c.rope_theta, "hidden_act": "silu",
        "max_position_embeddings": c.max_position_embeddings, "tie_word_embeddings": true,
        "eos_token_id": 2, "rope_scaling": null
    });
    std::fs::write(hf.join("config.json"), config.to_string()).unwrap();
    let gguf = dir.join("tiny.gguf");
    write_gguf(&gguf, &c, &t, vec![]);

    let from_hf = crate::model::load(&hf, DType::F32, &Device::Cpu).unwrap();
    let from_gguf = crate::model::load(&gguf, DType::F32, &Device::Cpu).unwrap();
    // A folder holding one .gguf file and no config.json loads that file.
    let gguf_dir = dir.join("g");
    std::fs::create_dir_all(&gguf_dir).unwrap();
    std::fs::copy(&gguf, gguf_dir.join("m.gguf")).unwrap();
    let from_gguf_dir = crate::model::load(&gguf_dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(crate::model::inspect(&gguf).unwrap().config.hidden_size(), 16);
    assert_eq!(crate::model::inspect(&hf).unwrap().arch, "llama");

    let batch = batch_from_ids(&[vec![3, 17, 5, 9, 30, 12]], 0, &Device::Cpu).unwrap();
    let lm = |m: &dyn Backbone| {
        let h = m.forward(&batch, &NoHooks).unwrap();
        m.as_causal_lm().unwrap().lm_head(&h).unwrap()
    };
    let (a, b, g) = (lm(from_hf.as_ref()), lm(from_gguf.as_ref()), lm(from_gguf_dir.as_ref()));
    // Equal up to f32 rounding, relative to the logits' scale (~13 here): the formats carry
    // the same weights, but gemm's summation order may differ with the buffers' alignment,
    // and GGUF stores the norm epsilon as f32.
    let tol = 2e-6 * a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    assert!(max_abs(&a, &b) < tol, "HF vs GGUF: {} (tolerance {tol})", max_abs(&a, &b));
    assert_eq!(max_abs(&b, &g), 0.0, "the same file loads the same model");
    // And both equal the model built directly from the HF tensors.
    let direct = tiny_model(DType::F32, true);
    let want = direct.lm_head(&direct.forward(&batch, &NoHooks).unwrap()).unwrap();
    assert!(max_abs(&a, &want) < tol, "HF vs direct: {}", max_abs(&a, &want));

    // Two .gguf files in one folder: ambiguous, refused with both names.
    std::fs::copy(&gguf, gguf_dir.join("n.gguf")).unwrap();
    let e = crate::model::load(&gguf_dir, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("m.gguf") && e.contains("n.gguf"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Adds a trainable `delta` at one site: the gradient must reach it through every later
/// layer's RMSNorm, RoPE, attention and SwiGLU.
struct AddAt {
    site: Site,
    delta: Var,
}

impl Hooks for AddAt {
    fn representation(&self, site: Site, h: Tensor) -> crate::Result<Tensor> {
        if site == self.site {
            return Ok(h.broadcast_add(self.delta.as_tensor())?);
        }
        Ok(h)
    }
    fn linear(&self, _: Site, _: &Tensor, y: Tensor) -> crate::Result<Tensor> {
        Ok(y)
    }
}

#[test]
fn gradients_flow_through_a_block() {
    let m = tiny_model(DType::F64, true);
    let batch = batch_from_ids(&[vec![3, 17, 5, 9], vec![8, 2]], 0, &Device::Cpu).unwrap();
    let mut rng = SeededRng::new(3);
    let probe = rng.normal((2, 4, 40), 1.0, DType::F64, &Device::Cpu).unwrap();
    for site in [Site::embeddings(), Site::new(0, Component::BlockOutput), Site::new(1, Component::AttentionOutput)] {
        let delta = Var::from_tensor(&rng.normal((1, 4, 16), 0.1, DType::F64, &Device::Cpu).unwrap()).unwrap();
        let loss = |d: &Tensor| -> f64 {
            let hooks = AddAt { site, delta: Var::from_tensor(d).unwrap() };
            let l = m.lm_head(&m.forward(&batch, &hooks).unwrap()).unwrap();
            (l * &probe).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let hooks = AddAt { site, delta: delta.clone() };
        let l = (m.lm_head(&m.forward(&batch, &hooks).unwrap()).unwrap() * &probe).unwrap().sum_all().unwrap();
        let grads = l.backward().unwrap();
        let g = grads.get(delta.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let base = delta.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let eps = 1e-5;
        for idx in [0usize, 5, 21, 40, 63] {
            let mut plus = base.clone();
            plus[idx] += eps;
            let mut minus = base.clone();
            minus[idx] -= eps;
            let t = |v: Vec<f64>| Tensor::from_vec(v, (1, 4, 16), &Device::Cpu).unwrap();
            let fd = (loss(&t(plus)) - loss(&t(minus))) / (2.0 * eps);
            assert!((fd - g[idx]).abs() <= 1e-6 * (1.0 + fd.abs()), "{site} [{idx}]: autograd {} vs finite difference {fd}", g[idx]);
        }
    }
}

#[test]
fn tokenizer_from_gguf_metadata_round_trips() {
    // A byte-level vocabulary: the 256 byte symbols, two control tokens, a few merges.
    let bytes: Vec<String> = {
        let mut v: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
        let mut n = 0;
        let mut out = vec![String::new(); 256];
        for b in 0..256u32 {
            if !v.contains(&b) {
                v.push(b);
                out[b as usize] = char::from_u32(256 + n).unwrap().to_string();
                n += 1;
            } else {
                out[b as usize] = char::from_u32(b).unwrap().to_string();
            }
        }
        out
    };
    let mut tokens = vec!["<|endoftext|>".to_string(), "<|im_start|>".to_string(), "<|im_end|>".to_string()];
    tokens.extend(bytes.iter().cloned());
    let merges = ["Ġ t", "h e", "Ġt he", "Ġ 1"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let types: Vec<Value> = tokens.iter().enumerate().map(|(i, _)| Value::I32(if i < 3 { 3 } else { 1 })).collect();
    let dir = std::env::temp_dir().join(format!("reft-gguf-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tok.gguf");
    let c = tiny_config();
    let t = hf_tensors(&c, DType::F32, true);
    write_gguf(&path, &c, &t, vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens.iter().map(|s| Value::String(s.clone())).collect())),
        ("tokenizer.ggml.merges", Value::Array(merges.iter().map(|s| Value::String(s.to_string())).collect())),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.padding_token_id", Value::U32(2)),
    ]);
    let tok = crate::model::load_tokenizer(&path).unwrap();
    assert_eq!(tok.pad_id(), 2);
    for text in ["the theme", "<|im_start|>user\nHi 123<|im_end|>\n", "naïve café 日本 🙂", "  spaces\tand\n\nlines "] {
        let ids = tok.encode(text, None).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
    let id = |s: &str| tokens.iter().position(|t| t == s).unwrap() as u32;
    // Merges applied; digits split one by one (no " 1" merge across them); control tokens whole.
    assert_eq!(tok.encode(" the", None).unwrap(), vec![id("Ġthe")]);
    assert_eq!(tok.encode(" 12", None).unwrap(), vec![id("Ġ"), id("1"), id("2")]);
    assert_eq!(tok.encode("<|im_end|>", None).unwrap(), vec![2]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_gguf_files_fail_with_the_file_named() {
    let dir = std::env::temp_dir().join(format!("reft-gguf-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.gguf");
    std::fs::write(&path, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let e = crate::model::load(&path, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("bad.gguf"), "{e}");
    // A well-formed file of another architecture.
    let c = tiny_config();
    let t = hf_tensors(&c, DType::F32, true);
    write_gguf(&path, &c, &t, vec![]);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(5).position(|w| w == b"llama").unwrap();
    bytes[at..at + 5].copy_from_slice(b"gemma");
    std::fs::write(&path, &bytes).unwrap();
    let e = crate::model::inspect(&path).err().unwrap().to_string();
    assert!(e.contains("bad.gguf") && e.contains("gemma"), "{e}");
    // Metadata that changes the arithmetic and is not computed: refused by key.
    let hd = c.head_dim as u32;
    for (key, value, needle) in [
        ("llama.rope.scaling.type", Value::String("yarn".into()), "`yarn`"),
        ("llama.attention.value_length", Value::U32(hd * 2), "value_length"),
        ("llama.rope.dimension_count", Value::U32(hd / 2), "partial rotary"),
    ] {
        write_gguf(&path, &c, &t, vec![(key, value)]);
        let e = crate::model::inspect(&path).err().unwrap_or_else(|| panic!("{key} should be refused")).to_string();
        assert!(e.contains("bad.gguf") && e.contains(needle), "{key}: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A config.json of `tiny_config()`'s shape, with `extra` keys merged over it.
fn hf_config_json(c: &LlamaConfig, extra: serde_json::Value) -> serde_json::Value {
    let mut config = serde_json::json!({
        "model_type": "llama", "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads,
        "rms_norm_eps": c.rms_norm_eps, "hidden_act": "silu",
        "max_position_embeddings": c.max_position_embeddings, "tie_word_embeddings": true,
        "eos_token_id": 2, "architectures": ["LlamaForCausalLM"], "transformers_version": "4.57.1"
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            config.as_object_mut().unwrap().remove(k);
        } else {
            config[k] = v.clone();
        }
    }
    config
}

fn load_with_config(dir: &std::path::Path, config: &serde_json::Value) -> crate::Result<Box<dyn Backbone>> {
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    crate::model::load(dir, DType::F32, &Device::Cpu)
}

#[test]
fn transformers_4_and_5_config_keys_give_the_same_model_and_every_unread_key_is_refused() {
    let dir = std::env::temp_dir().join(format!("reft-llama-config-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = tiny_config();
    let t = hf_tensors(&c, DType::F32, true);
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    let batch = batch_from_ids(&[vec![3, 17, 5, 9, 30, 12, 8, 1, 33, 21]], 0, &Device::Cpu).unwrap();
    let logits = |m: &dyn Backbone| m.as_causal_lm().unwrap().lm_head(&m.forward(&batch, &NoHooks).unwrap()).unwrap();
    let load = |extra: serde_json::Value| load_with_config(&dir, &hf_config_json(&c, extra));

    // transformers 4.x: top-level rope_theta (Llama 3's 500000), rope_scaling null, torch_dtype.
    let v4 = load(serde_json::json!({"rope_theta": 500000.0, "rope_scaling": null, "torch_dtype": "float32"})).unwrap();
    // transformers 5.x: the same in rope_parameters, and `dtype`.
    let v5 = load(serde_json::json!({"rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}, "dtype": "float32"})).unwrap();
    // The default base (10000) is another model: a reader that ignored rope_parameters would
    // give this one.
    let plain = load(serde_json::json!({})).unwrap();
    let (a, b, p) = (logits(v4.as_ref()), logits(v5.as_ref()), logits(plain.as_ref()));
    assert_eq!(max_abs(&a, &b), 0.0, "4.x and 5.x keys must give the same model");
    assert!(max_abs(&a, &p) > 1e-3, "rope_theta 500000 vs 10000 should differ: {}", max_abs(&a, &p));

    let refused = |extra: serde_json::Value, needles: &[&str]| {
        let e = load(extra.clone()).err().unwrap_or_else(|| panic!("{extra} should be refused")).to_string();
        assert!(e.contains("config.json"), "{e}");
        for n in needles {
            assert!(e.contains(n), "expected `{n}` in: {e}");
        }
    };
    // Scaled RoPE in either generation's key: llama3 and linear are computed (their values
    // are checked against transformers in tests/decoder_families.rs); other kinds and unknown
    // keys are refused by name, never run as plain RoPE.
    let llama3 = serde_json::json!({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_theta": 500000.0});
    assert!(load(serde_json::json!({"rope_parameters": llama3})).is_ok());
    refused(serde_json::json!({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}), &["rope_parameters", "`yarn`"]);
    refused(serde_json::json!({"rope_scaling": {"type": "dynamic", "factor": 2.0}}), &["rope_scaling", "`dynamic`"]);
    refused(serde_json::json!({"rope_scaling": {"type": "linear"}}), &["rope_scaling", "factor"]);
    refused(serde_json::json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192, "beta": 3}}), &["rope_scaling.beta"]);
    refused(serde_json::json!({"rope_theta": 10000.0, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}), &["disagree"]);
    refused(serde_json::json!({"rope_parameters": {"rope_type": "default", "mystery": 1}}), &["rope_parameters.mystery"]);
    // A key reft does not read, with the value it had.
    refused(serde_json::json!({"sliding_window": 4096}), &["sliding-window attention is not part of llama"]);
    refused(serde_json::json!({"model_type": "gemma2"}), &["gemma2", "llama, mistral, qwen2, qwen3, phi3"]);
    refused(serde_json::json!({"max_window_layers": 4, "moe_intermediate_size": 4}), &["`moe_intermediate_size`"]);
    refused(serde_json::json!({"quantization_config": {"quant_method": "gptq"}}), &["`quantization_config`"]);
    refused(serde_json::json!({"attention_dropout": 0.1}), &["attention_dropout"]);
    // Phi-3's keys belong to phi3 only, and its dropouts must be off.
    refused(serde_json::json!({"resid_pdrop": 0.0}), &["Phi-3 keys", "llama"]);
    refused(serde_json::json!({"model_type": "phi3", "resid_pdrop": 0.1}), &["resid_pdrop 0.1"]);
    // A phi3 config over llama's separate projections: the fused matrix is missing, by name.
    let e = load(serde_json::json!({"model_type": "phi3"})).err().expect("no fused weights").to_string();
    assert!(e.contains("qkv_proj.weight"), "{e}");
    // Biases the config promises must be in the file.
    let e = load(serde_json::json!({"attention_bias": true})).err().expect("no biases in the file").to_string();
    assert!(e.contains("model.safetensors") && e.contains("q_proj.bias"), "{e}");
    // transformers' llama default is an untied output matrix: without lm_head.weight, refused.
    refused(serde_json::json!({"tie_word_embeddings": null}), &["tie_word_embeddings: false", "lm_head.weight"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sharded_checkpoint_loads_as_the_single_file_does_and_a_bad_index_is_named() {
    let dir = std::env::temp_dir().join(format!("reft-llama-shards-{}", std::process::id()));
    let (single, sharded) = (dir.join("single"), dir.join("sharded"));
    std::fs::create_dir_all(&single).unwrap();
    std::fs::create_dir_all(&sharded).unwrap();
    let c = tiny_config();
    let t = hf_tensors(&c, DType::F32, false);
    let config = hf_config_json(&c, serde_json::json!({"tie_word_embeddings": false})).to_string();
    std::fs::write(single.join("config.json"), &config).unwrap();
    std::fs::write(sharded.join("config.json"), &config).unwrap();
    candle_core::safetensors::save(&t, single.join("model.safetensors")).unwrap();
    // Two shards as transformers names them: layer 0 and the embeddings in one, the rest in the other.
    let (first, second): (HashMap<String, Tensor>, HashMap<String, Tensor>) =
        t.iter().map(|(k, v)| (k.clone(), v.clone())).partition(|(k, _)| k.contains("layers.0.") || k.contains("embed_tokens"));
    assert!(!first.is_empty() && !second.is_empty());
    let names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    candle_core::safetensors::save(&first, sharded.join(names[0])).unwrap();
    candle_core::safetensors::save(&second, sharded.join(names[1])).unwrap();
    let weight_map: serde_json::Map<String, serde_json::Value> = first
        .keys()
        .map(|k| (k.clone(), names[0].into()))
        .chain(second.keys().map(|k| (k.clone(), names[1].into())))
        .collect();
    let index = |map: &serde_json::Map<String, serde_json::Value>| {
        serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map}).to_string()
    };
    std::fs::write(sharded.join("model.safetensors.index.json"), index(&weight_map)).unwrap();

    let batch = batch_from_ids(&[vec![3, 17, 5, 9, 30, 12]], 0, &Device::Cpu).unwrap();
    let logits = |m: &dyn Backbone| m.as_causal_lm().unwrap().lm_head(&m.forward(&batch, &NoHooks).unwrap()).unwrap();
    let a = crate::model::load(&single, DType::F32, &Device::Cpu).unwrap();
    let b = crate::model::load(&sharded, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(max_abs(&logits(a.as_ref()), &logits(b.as_ref())), 0.0, "the same weights in shards");
    let info = crate::model::inspect(&sharded).unwrap();
    assert_eq!(info.num_parameters, crate::model::inspect(&single).unwrap().num_parameters);

    let refused = |map: &serde_json::Map<String, serde_json::Value>, needles: &[&str]| {
        std::fs::write(sharded.join("model.safetensors.index.json"), index(map)).unwrap();
        let e = crate::model::load(&sharded, DType::F32, &Device::Cpu).err().expect("a bad index loads").to_string();
        assert!(e.contains("model.safetensors.index.json"), "{e}");
        for n in needles {
            assert!(e.contains(n), "expected `{n}` in: {e}");
        }
    };
    let mut missing_shard = weight_map.clone();
    missing_shard.insert("model.norm.weight".into(), "model-00003-of-00003.safetensors".into());
    refused(&missing_shard, &["model-00003-of-00003.safetensors"]);
    let mut wrong_shard = weight_map.clone();
    wrong_shard.insert("model.norm.weight".into(), names[0].into());
    refused(&wrong_shard, &["model.norm.weight", names[1]]);
    let mut escaping = weight_map.clone();
    escaping.insert("model.norm.weight".into(), "../single/model.safetensors".into());
    refused(&escaping, &["not a file name in this folder"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
