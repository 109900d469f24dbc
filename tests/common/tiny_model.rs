//! A tiny BERT model folder (2 layers, hidden 8, 2 heads, intermediate 16, 50-token
//! WordPiece vocabulary) written from scratch, so fuzz tests can check recipes against a
//! real model folder and load it thousands of times in seconds.
#![allow(dead_code)]

use safetensors::tensor::{Dtype, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

pub const LAYERS: usize = 2;
pub const HIDDEN: usize = 8;
pub const HEADS: usize = 2;
pub const INTERMEDIATE: usize = 16;
pub const MAX_POSITIONS: usize = 32;
pub const TYPE_VOCAB: usize = 2;

/// The vocabulary: special tokens first (`[PAD]` is 0), then words and `##` pieces.
pub const VOCAB: [&str; 50] = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "cat", "dog", "sat", "on", "mat", "is",
    "good", "bad", "film", "movie", "not", "very", "and", "it", "was", "i", "love", "hate", "hi",
    "hello", "world", "!", ".", ",", "?", "'", "-", "##s", "##ed", "##ing", "##ly", "##er", "##est",
    "x", "y", "z", "0", "1", "2", "##0", "##1", "##2", "un",
];

pub const VOCAB_SIZE: usize = VOCAB.len();

/// `config.json` of the tiny model.
pub fn config_json() -> String {
    serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "hidden_act": "gelu",
        "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": TYPE_VOCAB,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0
    })
    .to_string()
}

/// Every tensor of the tiny model with its shape, in the Hugging Face BERT layout.
pub fn tensor_shapes() -> Vec<(String, Vec<usize>)> {
    let (d, i) = (HIDDEN, INTERMEDIATE);
    let mut v: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![VOCAB_SIZE, d]),
        ("embeddings.position_embeddings.weight".into(), vec![MAX_POSITIONS, d]),
        ("embeddings.token_type_embeddings.weight".into(), vec![TYPE_VOCAB, d]),
        ("embeddings.LayerNorm.weight".into(), vec![d]),
        ("embeddings.LayerNorm.bias".into(), vec![d]),
        ("pooler.dense.weight".into(), vec![d, d]),
        ("pooler.dense.bias".into(), vec![d]),
    ];
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        for (name, shape) in [
            ("attention.self.query.weight", vec![d, d]),
            ("attention.self.query.bias", vec![d]),
            ("attention.self.key.weight", vec![d, d]),
            ("attention.self.key.bias", vec![d]),
            ("attention.self.value.weight", vec![d, d]),
            ("attention.self.value.bias", vec![d]),
            ("attention.output.dense.weight", vec![d, d]),
            ("attention.output.dense.bias", vec![d]),
            ("attention.output.LayerNorm.weight", vec![d]),
            ("attention.output.LayerNorm.bias", vec![d]),
            ("intermediate.dense.weight", vec![i, d]),
            ("intermediate.dense.bias", vec![i]),
            ("output.dense.weight", vec![d, i]),
            ("output.dense.bias", vec![d]),
            ("output.LayerNorm.weight", vec![d]),
            ("output.LayerNorm.bias", vec![d]),
        ] {
            v.push((format!("{p}.{name}"), shape));
        }
    }
    v
}

/// `model.safetensors` of the tiny model: small deterministic pseudo-random weights
/// (LayerNorm weights 1, biases 0), plus an integer `position_ids` buffer as real
/// checkpoints have.
pub fn weights_bytes() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
    };
    let mut data: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, shape) in tensor_shapes() {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.contains("LayerNorm.weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            (0..n).map(|_| next()).collect()
        };
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        data.insert(name, (Dtype::F32, shape, bytes));
    }
    let ids: Vec<u8> = (0..MAX_POSITIONS as i64).flat_map(|v| v.to_le_bytes()).collect();
    data.insert("embeddings.position_ids".into(), (Dtype::I64, vec![1, MAX_POSITIONS], ids));
    serialize(&data)
}

/// Serialise named tensors `(dtype, shape, little-endian bytes)` to safetensors bytes.
pub fn serialize(data: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(k, (dt, shape, bytes))| (k.clone(), TensorView::new(*dt, shape.clone(), bytes).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// `tokenizer.json` of the tiny model: the same pipeline as MiniLM's (BERT normaliser and
/// pre-tokeniser, WordPiece, `[CLS] … [SEP]` template), over [`VOCAB`].
pub fn tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = VOCAB
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), serde_json::json!(i)))
        .collect();
    let special = |id: usize| {
        serde_json::json!({
            "id": id, "special": true, "content": VOCAB[id], "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false
        })
    };
    serde_json::to_string_pretty(&serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0), special(1), special(2), special(3), special(4)],
        "normalizer": {
            "type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}}
            ],
            "pair": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 1}}
            ],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {
            "type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": vocab
        }
    }))
    .unwrap()
}

/// Write the tiny model (config.json, model.safetensors, tokenizer.json) into `dir`.
pub fn write(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config_json()).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights_bytes()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
}
