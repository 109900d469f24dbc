//! Load on `reft serve`, driven by oha (a well-kept HTTP load generator, `cargo install oha`)
//! against 127.0.0.1 only, every run bounded in time.
//!
//!   cargo bench --bench serve                     # load: concurrency 1, 8, 32, 128
//!   cargo bench --bench serve -- load --secs 30
//!   cargo bench --bench serve -- overload         # 10× the sustainable rate: only 503s beyond the queue
//!   cargo bench --bench serve -- soak --secs 600  # half load: resident memory over time
//!   cargo bench --bench serve -- decoder          # SmolLM2 completions: tokens/s, time to first token
//!
//! The classifier is the main job's pipeline (`out/loreft_glue/pipeline`, from
//! `reft run configs/loreft_glue.yaml`; `--pipeline DIR` for another); request bodies are the
//! dev set's reviews, one text per request, in turn. Before the server starts, the same
//! texts run in this process through ONNX Runtime in batches of 32: that is the ceiling the
//! server's throughput is compared with, measured in the same sitting.
//!
//! oha is looked up on PATH, then in `$REFT_CACHE/tools/bin` (where
//! `cargo install oha --version 1.16.0 --locked --no-default-features --root ~/.cache/reft/tools`
//! puts it).

#[path = "../common/server.rs"]
mod server;
#[path = "shared.rs"]
mod shared;

use reft_core::runtime::OrtPipeline;
use server::Server;
use shared::median;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reft_plugins as _;

struct Opts {
    mode: String,
    secs: u64,
    pipeline: PathBuf,
    decoder: Option<PathBuf>,
    rate: Option<f64>,
}

fn opts() -> Opts {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut o = Opts { mode: "load".into(), secs: 0, pipeline: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("out/loreft_glue/pipeline"), decoder: None, rate: None };
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match a.as_str() {
            "--secs" => o.secs = value("--secs").parse().expect("--secs N"),
            "--pipeline" => o.pipeline = value("--pipeline").into(),
            "--decoder" => o.decoder = Some(value("--decoder").into()),
            "--rate" => o.rate = Some(value("--rate").parse().expect("--rate REQUESTS_PER_SECOND")),
            m if !m.starts_with('-') => o.mode = m.to_string(),
            other => panic!("unknown option {other}: see the top of tests/bench/serve.rs"),
        }
    }
    o
}

fn oha_path() -> PathBuf {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).map(|d| d.join("oha"));
    let cached = std::iter::once(reft_assets::cache_dir().join("tools/bin/oha"));
    on_path.chain(cached).find(|p| p.is_file()).unwrap_or_else(|| {
        eprintln!(
            "oha is not installed. Install it (a few minutes, once):\n  cargo install oha --version 1.16.0 --locked --no-default-features --root {}",
            reft_assets::cache_dir().join("tools").display()
        );
        std::process::exit(2)
    })
}

/// The dev set's texts.
fn dev_texts() -> Vec<String> {
    let dev = reft_assets::movie_reviews_file(&reft_assets::cache_dir(), "dev");
    let text = std::fs::read_to_string(&dev).expect("run `reft setup` first");
    text.lines().skip(1).map(|l| l.splitn(3, '\t').nth(2).unwrap_or("").to_string()).filter(|t| !t.is_empty()).collect()
}

/// One request body per line, for oha's `-Z`.
fn bodies_file(lines: impl Iterator<Item = serde_json::Value>) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    let text: String = lines.map(|v| format!("{v}\n")).collect();
    std::fs::write(f.path(), text).unwrap();
    f
}

/// What one oha run measured.
struct Load {
    requests: f64,
    rps: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    statuses: String,
    errors: String,
}

/// oha for `secs` at `concurrency` connections (and at most `qps` requests/s), in-flight
/// requests awaited at the deadline (`-w`), so none counts as aborted.
fn oha(url: &str, bodies: &Path, concurrency: usize, secs: u64, qps: Option<f64>) -> Load {
    let mut cmd = Command::new(oha_path());
    cmd.args(["--no-tui", "--output-format", "json", "-w", "-m", "POST", "-H", "content-type: application/json"])
        .arg("-z")
        .arg(format!("{secs}s"))
        .arg("-c")
        .arg(concurrency.to_string())
        .arg("-Z")
        .arg(bodies);
    if let Some(q) = qps {
        cmd.arg("-q").arg(format!("{q:.1}"));
    }
    let out = cmd.arg(url).output().expect("running oha");
    assert!(out.status.success(), "oha failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("oha's JSON");
    let pct = |k: &str| v["latencyPercentiles"][k].as_f64().unwrap_or(f64::NAN) * 1e3;
    let dist = |k: &str| v[k].as_object().map(|m| m.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", ")).unwrap_or_default();
    let statuses: f64 = v["statusCodeDistribution"].as_object().map_or(0.0, |m| m.values().filter_map(|n| n.as_f64()).sum());
    let errors: f64 = v["errorDistribution"].as_object().map_or(0.0, |m| m.values().filter_map(|n| n.as_f64()).sum());
    Load {
        requests: statuses + errors,
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(f64::NAN),
        p50_ms: pct("p50"),
        p95_ms: pct("p95"),
        p99_ms: pct("p99"),
        statuses: dist("statusCodeDistribution"),
        errors: if errors == 0.0 { "none".into() } else { dist("errorDistribution") },
    }
}

/// The same texts through ONNX Runtime in this process, 32 per run: texts/s and the
/// median batch latency (ms). The server's ceiling on this machine, now.
fn ceiling(pipeline: &Path, texts: &[String]) -> (f64, f64) {
    let mut pipe = OrtPipeline::load(pipeline, None).expect("the pipeline");
    let rows: Vec<Vec<u32>> = texts.iter().map(|t| pipe.encode(t).unwrap()).collect();
    let batches: Vec<&[Vec<u32>]> = rows.chunks(32).filter(|c| c.len() == 32).collect();
    for b in batches.iter().take(3) {
        pipe.logits(b).unwrap();
    }
    let t0 = Instant::now();
    let mut times = Vec::new();
    for b in &batches {
        let t = Instant::now();
        pipe.logits(b).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ((batches.len() * 32) as f64 / t0.elapsed().as_secs_f64(), median(times))
}

fn row(concurrency: usize, l: &Load, s: &Server, rss0: f64, batch: f64) {
    println!(
        "| {concurrency} | {:.0} | {:.1} | {:.1} / {:.1} / {:.1} | {} | {} | {batch:.1} | {rss0:.0} → {:.0} |",
        l.requests,
        l.rps,
        l.p50_ms,
        l.p95_ms,
        l.p99_ms,
        l.statuses,
        l.errors,
        s.rss_mb()
    );
}

/// Mean texts per ONNX Runtime run since the counters read `(runs, texts)`.
fn mean_batch(s: &Server, before: (f64, f64)) -> ((f64, f64), f64) {
    let now = (s.metric("reft_batch_size_count"), s.metric("reft_batch_size_sum"));
    (now, (now.1 - before.1) / (now.0 - before.0).max(1.0))
}

fn require_pipeline(o: &Opts) {
    if !o.pipeline.join("pipeline.yaml").is_file() {
        eprintln!(
            "{}: no pipeline. Run the main job first (`cargo run --release -- run configs/loreft_glue.yaml`) or give --pipeline DIR",
            o.pipeline.display()
        );
        std::process::exit(2);
    }
}

fn classifier_server(o: &Opts, extra: &[&str]) -> Server {
    require_pipeline(o);
    let mut args = vec![o.pipeline.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn load(o: &Opts) {
    let secs = if o.secs == 0 { 30 } else { o.secs };
    require_pipeline(o);
    let texts = dev_texts();
    let (ceiling_tps, batch32_ms) = ceiling(&o.pipeline, &texts);
    println!("ORT in-process ceiling, batches of 32 dev texts: {ceiling_tps:.1} texts/s, median batch {batch32_ms:.1} ms");
    let bodies = bodies_file(texts.iter().map(|t| serde_json::json!({ "inputs": [t] })));
    let s = classifier_server(o, &[]);
    let url = format!("{}/v1/predict", s.base);
    let rss0 = s.rss_mb();
    println!("`reft serve {}` (defaults: --max-batch 32 --max-wait-us 2000 --max-queue 256), {secs} s per row, one dev text per request", o.pipeline.display());
    println!("| concurrency | requests | requests/s | p50 / p95 / p99 ms | statuses | errors | mean batch | server RSS MB |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut counters = (s.metric("reft_batch_size_count"), s.metric("reft_batch_size_sum"));
    let mut at32 = None;
    for c in [1, 8, 32, 128] {
        let l = oha(&url, bodies.path(), c, secs, None);
        let (now, batch) = mean_batch(&s, counters);
        counters = now;
        row(c, &l, &s, rss0, batch);
        if c == 32 {
            at32 = Some(l);
        }
    }
    let l = at32.unwrap();
    println!(
        "at concurrency 32: throughput {:.2}× the ceiling (target ≥ 0.8), p99 {:.2}× the batch-32 latency (target ≤ 4)",
        l.rps / ceiling_tps,
        l.p99_ms / batch32_ms
    );
}

fn overload(o: &Opts) {
    let secs = if o.secs == 0 { 30 } else { o.secs };
    let texts = dev_texts();
    let bodies = bodies_file(texts.iter().map(|t| serde_json::json!({ "inputs": [t] })));
    let s = classifier_server(o, &["--max-queue", "64"]);
    let url = format!("{}/v1/predict", s.base);
    let sustainable = o.rate.unwrap_or_else(|| oha(&url, bodies.path(), 32, 10, None).rps);
    let rss0 = s.rss_mb();
    let rate = 10.0 * sustainable;
    println!("`reft serve {} --max-queue 64`; sustainable {sustainable:.0} requests/s (10 s at concurrency 32); now {rate:.0} requests/s for {secs} s over 256 connections", o.pipeline.display());
    let l = oha(&url, bodies.path(), 256, secs, Some(rate));
    println!("| offered/s | requests | answered/s | p50 / p95 / p99 ms | statuses | errors | server RSS MB |");
    println!("|---|---|---|---|---|---|---|");
    println!("| {rate:.0} | {:.0} | {:.1} | {:.1} / {:.1} / {:.1} | {} | {} | {rss0:.0} → {:.0} |", l.requests, l.rps, l.p50_ms, l.p95_ms, l.p99_ms, l.statuses, l.errors, s.rss_mb());
    let (status, _) = s.get("/health");
    println!("after: /health {status}, server {}", if s.rss_mb() > 0.0 { "running" } else { "GONE" });
}

fn soak(o: &Opts) {
    let secs = if o.secs == 0 { 600 } else { o.secs };
    let texts = dev_texts();
    let bodies = bodies_file(texts.iter().map(|t| serde_json::json!({ "inputs": [t] })));
    let s = classifier_server(o, &[]);
    let url = format!("{}/v1/predict", s.base);
    let sustainable = o.rate.unwrap_or_else(|| oha(&url, bodies.path(), 32, 10, None).rps);
    let rate = sustainable / 2.0;
    // Memory after a warm-up (the sessions' arenas grow to the batch shapes first).
    oha(&url, bodies.path(), 32, 10, Some(rate));
    let rss0 = s.rss_mb();
    println!("soak: {rate:.0} requests/s (half of {sustainable:.0}) at concurrency 32 for {secs} s; RSS sampled each minute");
    let pid = s.child.id();
    let sampler = std::thread::spawn(move || {
        let mut samples = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_secs(60).min(Duration::from_secs(secs)));
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
            samples.push(kb.map_or(0.0, |k| k / 1024.0));
        }
        samples
    });
    let l = oha(&url, bodies.path(), 32, secs, Some(rate));
    let samples = sampler.join().unwrap();
    let rss1 = s.rss_mb();
    println!("requests {:.0}, {:.1}/s, p50 / p95 / p99 {:.1} / {:.1} / {:.1} ms, statuses {}, errors {}", l.requests, l.rps, l.p50_ms, l.p95_ms, l.p99_ms, l.statuses, l.errors);
    let per_minute: Vec<String> = samples.iter().map(|m| format!("{m:.0}")).collect();
    println!("RSS MB after warm-up {rss0:.0}, each minute [{}], at the end {rss1:.0}: growth {:+.1}% (target < 5%)", per_minute.join(", "), 100.0 * (rss1 - rss0) / rss0);
}

/// A quantile of a Prometheus histogram's delta between two /metrics readings, by linear
/// interpolation inside the bucket that holds it.
fn histogram_quantile(before: &str, after: &str, name: &str, q: f64) -> f64 {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket")))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((le, l.rsplit(' ').next()?.parse().ok()?))
            })
            .collect()
    };
    let (b0, b1) = (buckets(before), buckets(after));
    let counts: Vec<(f64, f64)> = b1.iter().map(|&(le, n)| (le, n - b0.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1))).collect();
    let total = counts.last().map_or(0.0, |c| c.1);
    let target = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, n) in &counts {
        if n >= target {
            if le.is_infinite() {
                return prev.0;
            }
            return prev.0 + (le - prev.0) * (target - prev.1) / (n - prev.1).max(1.0);
        }
        prev = (le, n);
    }
    f64::NAN
}

fn decoder(o: &Opts) {
    let secs = if o.secs == 0 { 30 } else { o.secs };
    let tmp = tempfile::tempdir().unwrap();
    let dir = o.decoder.clone().unwrap_or_else(|| {
        let gguf = reft_assets::smollm2_gguf(&reft_assets::cache_dir());
        let out = tmp.path().join("smol");
        let st = Command::new(env!("CARGO_BIN_EXE_reft")).args(["export", "--model"]).arg(&gguf).arg("--out").arg(&out).output().unwrap();
        assert!(st.status.success(), "export: {}", String::from_utf8_lossy(&st.stderr));
        out
    });
    let prompts = ["The capital of France is", "Write a haiku about the sea.", "def fibonacci(n):", "Once upon a time, in a small village by the sea,"];
    let bodies = bodies_file(prompts.iter().map(|p| serde_json::json!({ "prompt": p, "max_tokens": 32, "temperature": 0 })));
    let s = Server::start(&[dir.to_str().unwrap()]);
    let url = format!("{}/v1/completions", s.base);
    println!("`reft serve` SmolLM2-135M-Instruct pipeline, completions of 32 tokens (greedy), {secs} s per row");
    println!("| concurrency | requests | requests/s | tokens/s | request p50 / p99 ms | time to first token p50 / p95 ms | statuses | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    for c in [1, 8] {
        let (_, before) = s.get("/metrics");
        let tokens0 = s.metric("reft_generated_tokens_total");
        let t0 = Instant::now();
        let l = oha(&url, bodies.path(), c, secs, None);
        let elapsed = t0.elapsed().as_secs_f64();
        let (_, after) = s.get("/metrics");
        let tokens = s.metric("reft_generated_tokens_total") - tokens0;
        let ttft = |q| 1e3 * histogram_quantile(&before, &after, "reft_time_to_first_token_seconds", q);
        println!("| {c} | {:.0} | {:.2} | {:.1} | {:.0} / {:.0} | {:.0} / {:.0} | {} | {} |", l.requests, l.rps, tokens / elapsed, l.p50_ms, l.p99_ms, ttft(0.5), ttft(0.95), l.statuses, l.errors);
    }
}

fn main() {
    let o = opts();
    match o.mode.as_str() {
        "load" => load(&o),
        "overload" => overload(&o),
        "soak" => soak(&o),
        "decoder" => decoder(&o),
        other => panic!("unknown mode `{other}`: load, overload, soak or decoder"),
    }
}
