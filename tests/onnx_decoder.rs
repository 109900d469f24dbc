//! ONNX export of the llama decoder on the real SmolLM2-135M-Instruct, run by ONNX Runtime
//! against candle: prefill logits (alone and as a right-padded batch, then one cached step),
//! greedy tokens on several prompts, with and without interventions in the prefill (a
//! LoReFT at `layers[15].block_output` on `f1+l1`, a LoRA folded into `layers[3]`'s query
//! weights, a NoReFT on the last two tokens' MLP output), ONNX's checker on both graphs, and
//! the CLI (`reft export --model`, `reft generate --runtime ort`: same text as candle,
//! greedy, seeded sampling and --chat; clear errors).
//!
//! Needs the assets from `reft setup`; without SmolLM2 each test returns early with a note
//! (under REFT_REQUIRE_ASSETS=1 it fails instead).

mod common;

use common::*;
use reft_core::intervention::attach::Interventions;
use reft_core::candle_core::{DType, Device};
use reft_core::deploy::Source;
use reft_core::export::{export_causal_lm, CausalExportInput, ExportOptions};
use reft_core::generate::{generate, GenerateOptions, Sampling};
use reft_core::intervention;
use reft_core::model::tokenizer::{batch_from_ids, TextTokenizer};
use reft_core::model::{self, Backbone, CausalLm, Hooks, NoHooks};
use reft_core::rng::SeededRng;
use reft_core::runtime::OrtDecoder;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Bound on max |ORT − candle| over a row of logits, relative to the row's largest |logit|.
const RELATIVE_TOLERANCE: f32 = 1e-4;

const PROMPTS: [&str; 4] = [
    "The capital of France is",
    "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n",
    "Once upon a time, in a small village by the sea, there lived",
];

/// Greedy tokens compared per prompt (short: the whole file should stay around a minute).
const NEW_TOKENS: usize = 20;

struct Fixture {
    gguf: PathBuf,
    backbone: Box<dyn Backbone>,
    tok: TextTokenizer,
    /// The base model exported by `reft export --model` (kept for the tests' lifetime).
    _tmp: tempfile::TempDir,
    base_pipeline: PathBuf,
}

/// The model, its tokenizer and its base pipeline, made once for all tests of this file.
fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let gguf = smollm2_gguf()?;
        let backbone = model::load(&gguf, DType::F32, &Device::Cpu).unwrap();
        let tok = model::load_tokenizer(&gguf).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let base_pipeline = tmp.path().join("base");
        let start = std::time::Instant::now();
        let (ok, out, err) = run_reft(&["export", "--model", gguf.to_str().unwrap(), "--out", base_pipeline.to_str().unwrap()]);
        assert!(ok, "reft export --model failed: {err}");
        eprintln!("{out}exported in {:.1} s", start.elapsed().as_secs_f64());
        Some(Fixture { gguf, backbone, tok, _tmp: tmp, base_pipeline })
    })
    .as_ref()
}

fn lm(b: &dyn Backbone) -> &dyn CausalLm {
    b.as_causal_lm().expect("llama is a causal LM")
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions { max_new_tokens: n, sampling: Sampling::Greedy, extra_stop_tokens: vec![] }
}

/// Candle's last-position logits of one unpadded prompt, with `hooks` built for it.
fn candle_logits(f: &Fixture, ids: &[u32], ivs: Option<&Interventions>) -> Vec<f32> {
    let batch = batch_from_ids(&[ids.to_vec()], 0, &Device::Cpu).unwrap();
    let rng = RefCell::new(SeededRng::new(0));
    let h = match ivs {
        Some(iv) => f.backbone.forward(&batch, &iv.hooks(&batch, false, DType::F32, &rng).unwrap()).unwrap(),
        None => f.backbone.forward(&batch, &NoHooks).unwrap(),
    };
    let last = h.narrow(1, ids.len() - 1, 1).unwrap();
    lm(f.backbone.as_ref()).lm_head(&last).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn candle_greedy(f: &Fixture, ids: &[u32], ivs: Option<&Interventions>) -> Vec<u32> {
    let batch = batch_from_ids(&[ids.to_vec()], 0, &Device::Cpu).unwrap();
    let rng = RefCell::new(SeededRng::new(0));
    let run = |hooks: &dyn Hooks| generate(lm(f.backbone.as_ref()), &batch, hooks, &greedy(NEW_TOKENS), &mut |_| Ok(())).unwrap().tokens;
    match ivs {
        Some(iv) => run(&iv.hooks(&batch, false, DType::F32, &rng).unwrap()),
        None => run(&NoHooks),
    }
}

/// (max |a − b|, that over max |a|).
fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let scale = a.iter().map(|x| x.abs()).fold(0f32, f32::max);
    (d, d / scale)
}

/// Prefill logits and greedy tokens of every prompt, ORT against candle. Returns the worst
/// relative logit difference.
fn compare_prompts(f: &Fixture, dec: &mut OrtDecoder, ivs: Option<&Interventions>, label: &str) -> f32 {
    let mut worst = 0f32;
    for prompt in PROMPTS {
        let ids = f.tok.encode(prompt, None).unwrap();
        assert_eq!(dec.tokenizer.encode(prompt, None).unwrap(), ids, "the pipeline's tokenizer gives the model's ids");
        let want = candle_logits(f, &ids, ivs);
        let (got, _) = dec.lm.prefill(std::slice::from_ref(&ids)).unwrap();
        let (abs, rel) = diff(&want, &got[0]);
        let scale = want.iter().map(|x| x.abs()).fold(0f32, f32::max);
        worst = worst.max(rel);
        let candle = candle_greedy(f, &ids, ivs);
        let ort = dec.lm.generate(&ids, &greedy(NEW_TOKENS), &mut |_| Ok(())).unwrap().tokens;
        eprintln!(
            "{label}: {prompt:?} ({} tokens): prefill max |ORT - candle| = {abs:.2e} (logit scale {scale:.1}, relative {rel:.1e}); greedy {}: {:?}",
            ids.len(),
            if ort == candle { "identical" } else { "DIFFERENT" },
            f.tok.decode(&ort, false).unwrap()
        );
        assert!(rel <= RELATIVE_TOLERANCE, "{label} {prompt:?}: relative logit difference {rel:e}");
        assert_eq!(ort, candle, "{label} {prompt:?}: greedy tokens\nORT    {:?}\ncandle {:?}", f.tok.decode(&ort, false), f.tok.decode(&candle, false));
        assert!(!ort.is_empty());
    }
    worst
}

#[test]
fn base_model_pipeline_matches_candle_and_passes_the_checker() {
    let Some(f) = fixture() else { return };
    let dir = &f.base_pipeline;
    for file in ["prefill.onnx", "decode.onnx", "weights.onnx.data", "tokenizer.json", "pipeline.yaml"] {
        assert!(dir.join(file).is_file(), "no {file}");
    }
    // One copy of the weights for both graphs (tied embeddings stored once).
    let data = dir.join("weights.onnx.data").metadata().unwrap().len();
    assert!((530_000_000..560_000_000).contains(&data), "weights.onnx.data holds {data} bytes");
    assert!(dir.join("prefill.onnx").metadata().unwrap().len() < 2_000_000);
    onnx_checker(&dir.join("prefill.onnx"));
    onnx_checker(&dir.join("decode.onnx"));

    let mut dec = OrtDecoder::load(dir, None).unwrap();
    assert_eq!(dec.spec.task, "causal_lm");
    let d = &dec.lm.decoder;
    assert_eq!((d.geometry.num_layers, d.geometry.num_heads, d.geometry.num_kv_heads, d.geometry.head_dim, d.geometry.vocab_size), (30, 9, 3, 64, 49152));
    assert_eq!(d.geometry.eos_token_ids, vec![2]);
    assert!(d.geometry.tied_embeddings && d.chat_template.as_deref().is_some_and(|t| t.contains("<|im_start|>")));
    let worst = compare_prompts(f, &mut dec, None, "base");
    eprintln!("base: worst relative prefill logit difference {worst:.1e}");

    // The prompts as one right-padded batch, then one cached step for every row: each row's
    // logits as candle gives them for the same padded batch.
    let rows: Vec<Vec<u32>> = PROMPTS.iter().map(|p| f.tok.encode(p, None).unwrap()).collect();
    let (got, mut cache) = dec.lm.prefill(&rows).unwrap();
    let cl = lm(f.backbone.as_ref());
    let batch = batch_from_ids(&rows, f.tok.pad_id(), &Device::Cpu).unwrap();
    let mut kv = cl.new_cache();
    let h = cl.forward_cached(&batch, &mut kv, &NoHooks).unwrap();
    let mut next = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let want = cl.lm_head(&h.get(i).unwrap().narrow(0, r.len() - 1, 1).unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (abs, rel) = diff(&want, &got[i]);
        eprintln!("padded batch row {i}: max |diff| {abs:.2e} (relative {rel:.1e})");
        assert!(rel <= RELATIVE_TOLERANCE, "row {i}: {rel:e}");
        next.push(reft_core::generate::argmax(&want));
    }
    let step = dec.lm.step(&mut cache, &next).unwrap();
    assert_eq!(cache.len(), rows.iter().map(Vec::len).max().unwrap() + 1);
    let h = cl.forward_cached(&batch_from_ids(&next.iter().map(|&t| vec![t]).collect::<Vec<_>>(), 0, &Device::Cpu).unwrap(), &mut kv, &NoHooks).unwrap();
    for (i, row) in step.iter().enumerate() {
        let want = cl.lm_head(&h.get(i).unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (abs, rel) = diff(&want, row);
        eprintln!("padded batch step row {i}: max |diff| {abs:.2e} (relative {rel:.1e})");
        assert!(rel <= RELATIVE_TOLERANCE, "step row {i}: {rel:e}");
    }
    // Wrong calls are errors, not panics.
    assert!(dec.lm.step(&mut cache, &[1]).unwrap_err().to_string().contains("one token for each"));
    assert!(dec.lm.prefill(&[vec![49_152]]).unwrap_err().to_string().contains("outside the vocabulary"));
    assert!(dec.lm.prefill(&[vec![]]).is_err());

    // A damaged folder: named in the error, before ONNX Runtime sees it.
    let tmp = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(dir.join("pipeline.yaml")).unwrap();
    std::fs::write(tmp.path().join("pipeline.yaml"), yaml.replace("num_layers: 30", "num_layers: 0")).unwrap();
    let err = OrtDecoder::load(tmp.path(), None).err().unwrap().to_string();
    assert!(err.contains("num_layers") && err.contains("pipeline.yaml"), "{err}");
    std::fs::write(tmp.path().join("pipeline.yaml"), &yaml).unwrap();
    let err = OrtDecoder::load(tmp.path(), None).err().unwrap().to_string();
    assert!(err.contains("prefill.onnx") && err.contains("missing"), "{err}");
}

/// Interventions of three kinds on SmolLM2, every tensor random (seeded) so none is trivially zero.
fn interventions(backbone: &dyn Backbone) -> Interventions {
    let specs: [(&str, &str, &str, &str); 3] = [
        ("loreft", "{rank: 4}", "layers[15].block_output", "f1+l1"),
        ("lora", "{rank: 4, alpha: 8}", "layers[3].attention.query", "all"),
        ("noreft", "{rank: 2}", "layers[22].mlp_output", "l2"),
    ];
    random_interventions(backbone, &specs, 17, 0.1)
}

#[test]
fn interventions_in_the_prefill_match_candle() {
    let Some(f) = fixture() else { return };
    let ivs = interventions(f.backbone.as_ref());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let input = CausalExportInput {
        lm: lm(f.backbone.as_ref()),
        interventions: &ivs,
        model_path: &f.gguf,
        source: Source { adapter: "in-memory".into(), base_model: f.gguf.display().to_string(), base_model_fingerprint: String::new() },
    };
    let report = export_causal_lm(&input, &dir, &ExportOptions::default()).unwrap();
    let how: Vec<(&str, &str)> = report.spec.interventions.iter().map(|i| (i.kind.as_str(), i.exported_as.as_str())).collect();
    assert_eq!(how, [("loreft", "nodes"), ("lora", "merged"), ("noreft", "nodes")]);
    // The LoRA-merged query weight is the one tensor stored twice (prefill merged, decode
    // step frozen), plus the interventions' own small tensors.
    let data = dir.join("weights.onnx.data").metadata().unwrap().len();
    let base = f.base_pipeline.join("weights.onnx.data").metadata().unwrap().len();
    assert!(data > base + 576 * 576 * 4 && data < base + 2_000_000, "{data} vs {base}");

    let mut dec = OrtDecoder::load(&dir, None).unwrap();
    let worst = compare_prompts(f, &mut dec, Some(&ivs), "interventions");
    eprintln!("interventions: worst relative prefill logit difference {worst:.1e}");
    // The edits matter: the prefill logits move far beyond the tolerance.
    let ids = f.tok.encode(PROMPTS[0], None).unwrap();
    let (edited, _) = dec.lm.prefill(std::slice::from_ref(&ids)).unwrap();
    let (moved, _) = diff(&candle_logits(f, &ids, None), &edited[0]);
    assert!(moved > 0.1, "the interventions moved the logits by only {moved}");
    onnx_checker(&dir.join("prefill.onnx"));

    // The same interventions saved as a head-less adapter on the GGUF base: `reft export
    // --adapter` gives a causal-LM pipeline with the same prefill.
    let adapter = tmp.path().join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    let entries = ivs
        .items
        .iter()
        .zip(["{rank: 4}", "{rank: 4, alpha: 8}", "{rank: 2}"])
        .map(|(a, opts)| reft_core::adapter::InterventionEntry {
            name: a.name.clone(),
            kind: a.module.kind().to_string(),
            version: intervention::find(a.module.kind()).unwrap().version.to_string(),
            hook: a.site.to_string(),
            positions: a.positions.to_string(),
            options: reft_core::serde_yaml::from_str(opts).unwrap(),
        })
        .collect();
    let manifest = reft_core::adapter::Manifest {
        format: reft_core::adapter::FORMAT.into(),
        format_version: reft_core::adapter::FORMAT_VERSION,
        reft_version: "test".into(),
        base_model: reft_core::adapter::ModelEntry {
            path: f.gguf.display().to_string(),
            arch: "llama".into(),
            fingerprint: reft_core::adapter::fingerprint(&f.gguf).unwrap(),
            parameters: f.backbone.num_parameters(),
            dtype: Default::default(),
        },
        interventions: entries,
        plugins: vec![],
        head: None,
        task: None,
        recipe: None,
        max_length: None,
        tensors: Default::default(),
        weights_sha256: String::new(),
        metrics: None,
    };
    reft_core::adapter::save(&adapter, &manifest, &ivs, None).unwrap();
    let from_adapter = tmp.path().join("from_adapter");
    let (ok, out, err) = run_reft(&["export", "--adapter", adapter.to_str().unwrap(), "--out", from_adapter.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("prefill") && out.contains("decode step"), "{out}");
    let mut again = OrtDecoder::load(&from_adapter, None).unwrap();
    assert_eq!(again.spec.source.adapter, adapter.display().to_string());
    assert_eq!(again.spec.interventions, report.spec.interventions);
    let (same, _) = again.lm.prefill(&[ids]).unwrap();
    assert_eq!(same, edited, "the adapter's pipeline computes what the in-memory export does");
}

#[test]
fn generate_runtime_ort_prints_what_candle_prints() {
    let Some(f) = fixture() else { return };
    let (model, pipe) = (f.gguf.to_str().unwrap(), f.base_pipeline.to_str().unwrap());
    let both = |extra: &[&str]| {
        let mut candle = vec!["generate", "--model", model, "--max-new-tokens", "12"];
        let mut ort = vec!["generate", "--runtime", "ort", "--pipeline", pipe, "--max-new-tokens", "12"];
        candle.extend(extra);
        ort.extend(extra);
        let (ok1, c, e1) = run_reft(&candle);
        let (ok2, o, e2) = run_reft(&ort);
        assert!(ok1 && ok2, "{e1}\n{e2}");
        assert!(e2.contains("tokens/s"), "{e2}");
        assert_eq!(o, c, "ORT vs candle for {extra:?}");
        o
    };
    let out = both(&["The capital of France is"]);
    assert!(out.starts_with(" Paris"), "{out:?}");
    both(&["Once upon a time", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3"]);
    let out = both(&["--chat", "What is the capital of France?"]);
    assert!(out.contains("Paris"), "{out:?}");

    let (ok, _, err) = run_reft(&["generate", "--runtime", "ort", "hi"]);
    assert!(!ok && err.contains("--pipeline"), "{err}");
    let (ok, _, err) = run_reft(&["generate", "--runtime", "ort", "--pipeline", pipe, "--model", model, "hi"]);
    assert!(!ok && err.contains("--model/--adapter"), "{err}");
    let (ok, _, err) = run_reft(&["generate", "--runtime", "ort", "--pipeline", "/nonexistent/pipe", "hi"]);
    assert!(!ok && err.contains("/nonexistent/pipe") && !err.contains("panicked"), "{err}");
    let (ok, _, err) = run_reft(&["infer", pipe, "some text"]);
    assert!(!ok && err.contains("reft generate --runtime ort"), "{err}");
    let (ok, _, err) = run_reft(&["export", "--out", "/tmp/never"]);
    assert!(!ok && err.contains("--adapter") && err.contains("--model"), "{err}");
    let (ok, _, err) = run_reft(&["export", "--model", minilm_dir().to_str().unwrap(), "--out", "/tmp/never"]);
    assert!(!ok && err.contains("decoder") && !Path::new("/tmp/never/pipeline.yaml").exists(), "{err}");
}
