//! Generation benchmarks: greedy decoding speed of SmolLM2-135M-Instruct (f32, CPU), candle
//! against the exported causal-LM pipeline on ONNX Runtime (`reft generate --runtime ort`'s
//! code path), with peak memory.
//!
//!   cargo bench --bench generate                 # every engine, each in its own process
//!   cargo bench --bench generate -- ort-nospin   # one: candle | ort | ort-nospin | ort-1thread
//!
//! Each engine generates the same 128 tokens from the same prompt (greedy; the engines must
//! agree token for token) RUNS times after one warm-up; figures are medians: decoding
//! tokens/s (the cached steps after the first token), the prefill time, and the whole
//! generation's wall time. Memory: peak RSS (VmHWM) and, at the end, PSS. ORT's sessions map
//! the weight file without copying it, once per session: those file pages count twice in
//! RSS but once in PSS, which is the memory the process really holds.

use reft_core::candle_core::{DType, Device};
use reft_core::export::{export_base_model, ExportOptions};
use reft_core::deploy::OrtOptions;
use reft_core::generate::{generate, GenerateOptions, Generation, Sampling};
use reft_core::model::{self, tokenizer::batch_from_ids, NoHooks};
use reft_core::runtime::OrtDecoder;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "shared.rs"]
mod shared;
use shared::{median, peak_rss_mb, pss_mb};

const PROMPT: &str = "Once upon a time";
const NEW_TOKENS: usize = 128;
const RUNS: usize = 5;

fn options() -> GenerateOptions {
    GenerateOptions { max_new_tokens: NEW_TOKENS, sampling: Sampling::Greedy, extra_stop_tokens: vec![] }
}

fn model_path() -> PathBuf {
    let p = reft_assets::smollm2_gguf(&reft_assets::cache_dir());
    if !p.is_file() {
        eprintln!("SmolLM2 is not in the cache ({}): run `reft setup` first", p.display());
        std::process::exit(2);
    }
    p
}

/// Run `gen` once to warm up, then RUNS times; print the medians and the tokens.
fn report(engine: &str, load_s: f64, mut gen: impl FnMut() -> Generation) {
    let first = gen();
    let (mut decode, mut prefill, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let g = gen();
        wall.push(t0.elapsed().as_secs_f64());
        assert_eq!(g.tokens, first.tokens, "{engine}: greedy decoding must repeat exactly");
        decode.push(g.decode_tokens_per_sec());
        prefill.push(g.prefill_secs * 1e3);
    }
    println!(
        "{engine:<26} load {load_s:5.2} s | {} new tokens | decoding median {:5.1} tokens/s (runs {}) | prefill {:5.1} ms | generation {:5.2} s | peak RSS {:.0} MB, PSS {:.0} MB",
        first.tokens.len(),
        median(decode.clone()),
        decode.iter().map(|d| format!("{d:.1}")).collect::<Vec<_>>().join(" "),
        median(prefill),
        median(wall),
        peak_rss_mb(),
        pss_mb()
    );
    // The token ids, for the parent to compare across engines.
    println!("tokens {:?}", first.tokens);
}

fn bench_candle() {
    let path = model_path();
    let t0 = Instant::now();
    let backbone = model::load(&path, DType::F32, &Device::Cpu).unwrap();
    let tok = model::load_tokenizer(&path).unwrap();
    let load = t0.elapsed().as_secs_f64();
    let lm = backbone.as_causal_lm().unwrap();
    let batch = batch_from_ids(&[tok.encode(PROMPT, None).unwrap()], 0, &Device::Cpu).unwrap();
    report("candle", load, || generate(lm, &batch, &NoHooks, &options(), &mut |_| Ok(())).unwrap());
}

fn bench_ort(dir: &Path, engine: &str, opts: OrtOptions) {
    let t0 = Instant::now();
    let mut dec = OrtDecoder::load(dir, Some(&opts)).unwrap();
    let load = t0.elapsed().as_secs_f64();
    let ids = dec.tokenizer.encode(PROMPT, None).unwrap();
    report(engine, load, || dec.lm.generate(&ids, &options(), &mut |_| Ok(())).unwrap());
}

fn main() {
    reft_core::alloc::tune_for_tensors();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let engines = ["candle", "ort", "ort-nospin", "ort-1thread"];
    let pipeline = |args: &[String]| PathBuf::from(args.get(1).expect("the pipeline folder"));
    match args.first().map(String::as_str) {
        Some("candle") => bench_candle(),
        Some("ort") => bench_ort(&pipeline(&args), "ORT (default threads)", OrtOptions::default()),
        Some("ort-nospin") => bench_ort(&pipeline(&args), "ORT no spinning", OrtOptions { intra_op_spinning: false, ..Default::default() }),
        Some("ort-1thread") => bench_ort(&pipeline(&args), "ORT 1 thread", OrtOptions { intra_op_threads: 1, ..Default::default() }),
        Some(other) if !engines.contains(&other) => panic!("unknown engine `{other}`: one of {engines:?}"),
        _ => {
            let only = args.first().cloned();
            let model = model_path();
            let dir = std::env::temp_dir().join(format!("reft-bench-generate-{}", std::process::id()));
            let t0 = Instant::now();
            export_base_model(&model, &dir, &ExportOptions::default()).unwrap();
            println!(
                "SmolLM2-135M-Instruct f32, CPU, greedy, prompt {PROMPT:?}, {NEW_TOKENS} new tokens, medians of {RUNS} runs after a warm-up (pipeline exported in {:.1} s)",
                t0.elapsed().as_secs_f64()
            );
            let me = std::env::current_exe().unwrap();
            let mut tokens: Vec<(String, String)> = Vec::new();
            for engine in engines.iter().filter(|e| only.as_deref().is_none_or(|o| o == **e)) {
                let out = std::process::Command::new(&me).arg(engine).arg(&dir).output().unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "{engine} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
                for line in text.lines() {
                    match line.strip_prefix("tokens ") {
                        Some(t) => tokens.push((engine.to_string(), t.to_string())),
                        None => println!("{line}"),
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
            if let Some((first, want)) = tokens.first() {
                for (engine, got) in &tokens[1..] {
                    assert_eq!(got, want, "{engine} and {first} generated different tokens");
                }
                println!("all engines generated the same {} tokens", want.split(',').count());
            }
        }
    }
}
