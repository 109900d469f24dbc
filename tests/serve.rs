//! `reft serve` end to end: the real binary on a random local port, real HTTP clients.
//! A classifier pipeline (MiniLM, a few LoReFT steps) and the SmolLM2 decoder pipeline are
//! exported once; then every route, every error status, batching seen in /metrics, the
//! queue limit under concurrent load, and graceful shutdown on SIGTERM.
//!
//! Needs the assets from `reft setup`; without them each test returns early with a note
//! (under REFT_REQUIRE_ASSETS=1 it fails instead).

mod common;

use common::server::Server;
use common::*;
use reft_core::generate::{GenerateOptions, Sampling, TextStream};
use reft_core::runtime::{OrtDecoder, OrtPipeline};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Pipelines {
    _tmp: tempfile::TempDir,
    classifier: PathBuf,
    /// None when SmolLM2 is not in the cache.
    decoder: Option<PathBuf>,
}

/// Both pipelines, exported once for every test of this file.
fn pipelines() -> &'static Pipelines {
    static P: OnceLock<Pipelines> = OnceLock::new();
    P.get_or_init(|| {
        let _ = minilm_dir();
        let tmp = tempfile::tempdir().unwrap();
        let adapter = tmp.path().join("adapter");
        let (train, dev) = small_data(tmp.path(), 64, 32);
        let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/loreft_glue.yaml");
        let sets = ["train.max_steps=3".to_string(), "train.lr=0.05".into(), format!("data.train={}", train.display()), format!("data.eval={}", dev.display()), format!("data.test={}", dev.display())];
        let mut args = vec!["train".to_string(), recipe.display().to_string(), "--out".into(), adapter.display().to_string()];
        for s in sets {
            args.extend(["--set".to_string(), s]);
        }
        let (ok, _, err) = run_reft(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(ok, "train failed: {err}");
        let classifier = tmp.path().join("movies");
        let (ok, _, err) = run_reft(&["export", "--adapter", adapter.to_str().unwrap(), "--out", classifier.to_str().unwrap()]);
        assert!(ok, "export failed: {err}");
        let decoder = smollm2_gguf().map(|gguf| {
            let out = tmp.path().join("smol");
            let (ok, _, err) = run_reft(&["export", "--model", gguf.to_str().unwrap(), "--out", out.to_str().unwrap()]);
            assert!(ok, "export --model failed: {err}");
            out
        });
        Pipelines { _tmp: tmp, classifier, decoder }
    })
}

fn error_message(v: &serde_json::Value) -> String {
    v["error"]["message"].as_str().unwrap_or_else(|| panic!("no error message in {v}")).to_string()
}

#[test]
fn predict_matches_onnx_runtime_batches_and_refuses_bad_requests_by_name() {
    let p = pipelines();
    let dir = p.classifier.to_str().unwrap();
    let s = Server::start(&[dir, "--max-batch", "8", "--max-wait-us", "50000", "--max-texts", "16", "--max-input-tokens", "40", "--max-body-bytes", "4096"]);

    // /v1/models and /health.
    let (status, models) = s.get("/v1/models");
    assert_eq!(status, 200);
    let models: serde_json::Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["id"], "movies");
    assert_eq!(models["data"][0]["task"], "classification");

    // The same probabilities ONNX Runtime gives for these texts alone.
    let texts = ["A gorgeous, moving film.", "Dull and lifeless, a waste of two hours.", "It was fine."];
    let (status, out) = s.post("/v1/predict", serde_json::json!({ "inputs": texts }));
    assert_eq!(status, 200, "{out}");
    let mut pipe = OrtPipeline::load(&p.classifier, None).unwrap();
    for (i, text) in texts.iter().enumerate() {
        let ids = pipe.encode(text).unwrap();
        let want = reft_core::runtime::ort::softmax(&pipe.logits(&[ids.clone()]).unwrap()[0]);
        let pred = &out["predictions"][i];
        assert_eq!(pred["model"], "movies");
        assert_eq!(pred["tokens"], ids.len());
        for (k, label) in pipe.spec.labels.iter().enumerate() {
            let got = pred["probabilities"][label].as_f64().unwrap();
            assert!((got - want[k] as f64).abs() < 1e-5, "{text}: {label} {got} vs ORT alone {}", want[k]);
        }
        let best = if want[0] >= want[1] { &pipe.spec.labels[0] } else { &pipe.spec.labels[1] };
        assert_eq!(pred["label"].as_str().unwrap(), best);
    }

    // Concurrent one-text requests are batched: fewer ONNX Runtime runs than texts.
    let (runs0, texts0) = (s.metric("reft_batch_size_count"), s.metric("reft_batch_size_sum"));
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let base = s.base.clone();
            std::thread::spawn(move || {
                let body = serde_json::json!({ "inputs": [format!("Review number {i}: a fine film.")] }).to_string();
                Server::agent().post(format!("{base}/v1/predict")).send(body).unwrap().status().as_u16()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    let (runs, batched) = (s.metric("reft_batch_size_count") - runs0, s.metric("reft_batch_size_sum") - texts0);
    assert_eq!(batched, 16.0);
    assert!(runs < 16.0, "16 concurrent requests took {runs} ONNX Runtime runs: no batching");
    eprintln!("16 concurrent requests ran as {runs} batches");

    // Every error status, with a JSON error that names the field or the limit.
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/predict", "{\"inputs\": [\"a\"".into(), 400, "not valid JSON"),
        ("/v1/predict", "{\"inputs\": [\"a\", 5]}".into(), 400, "`inputs[1]`"),
        ("/v1/predict", "{\"input\": [\"a\"]}".into(), 400, "unknown field `input`"),
        ("/v1/predict", "{}".into(), 400, "missing field `inputs`"),
        ("/v1/predict", "{\"inputs\": []}".into(), 400, "`inputs` is empty"),
        ("/v1/predict", serde_json::json!({ "inputs": vec!["a"; 17] }).to_string(), 413, "--max-texts limit of 16"),
        ("/v1/predict", serde_json::json!({ "inputs": ["ok", "word ".repeat(60)] }).to_string(), 422, "inputs[1] has 62 tokens: over the --max-input-tokens limit of 40"),
        ("/v1/predict", serde_json::json!({ "inputs": ["x".repeat(5000)] }).to_string(), 413, "--max-body-bytes limit of 4096"),
        ("/v1/predict", "{\"inputs\": [\"a\"], \"model\": \"nope\"}".into(), 404, "no model `nope`"),
        ("/v1/completions", "{\"prompt\": \"a\"}".into(), 404, "no causal_lm model"),
        ("/v1/nothing", "{}".into(), 404, "no route POST /v1/nothing"),
    ];
    for (path, body, status, says) in cases {
        let (got, _, text) = s.post_raw(path, &body);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path} {body:.60}: not JSON: {text}"));
        assert_eq!(got, status, "{path} {body:.60}: {text}");
        assert!(error_message(&v).contains(says), "{path} {body:.60}: {text}\nshould say {says:?}");
    }
    let (status, text) = s.get("/v1/predict");
    assert_eq!(status, 405, "{text}");

    // Truncation at the pipeline's max_length (64) is reported, not hidden.
    let s2 = Server::start(&[dir]);
    let (status, out) = s2.post("/v1/predict", serde_json::json!({ "inputs": ["word ".repeat(100)] }));
    assert_eq!(status, 200);
    assert_eq!(out["predictions"][0]["truncated"], true);
    assert_eq!(out["predictions"][0]["tokens"], 64);

    // Requests, latency and batch sizes are in /metrics, by route and status.
    let (_, metrics) = s.get("/metrics");
    for line in ["reft_requests_total{route=\"/v1/predict\",status=\"200\"}", "reft_requests_total{route=\"/v1/predict\",status=\"413\"}", "reft_request_duration_seconds_count{route=\"/v1/predict\"}", "reft_queue_depth{model=\"movies\"} 0", "reft_ready 1"] {
        assert!(metrics.contains(line), "/metrics has no {line}:\n{metrics}");
    }
    // One log line per request, with its id.
    assert!(s.log().contains("request_id="), "{}", s.log());
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_never_drops_a_connection() {
    let p = pipelines();
    // One waiting request at most; each request is a full batch of 64 long texts, so the
    // worker is busy with one while the others arrive (a batching wait would let the worker
    // drain the queue into its batch, and whether the queue ever filled would be timing).
    let s = Server::start(&[p.classifier.to_str().unwrap(), "--max-queue", "1", "--max-batch", "64", "--max-wait-us", "0"]);
    let long = "A slow, sprawling film that never finds its footing, though the cast tries hard. ".repeat(4);
    let handles: Vec<_> = (0..24)
        .map(|i| {
            let base = s.base.clone();
            let texts = vec![format!("{i} {long}"); 64];
            std::thread::spawn(move || {
                let body = serde_json::json!({ "inputs": texts }).to_string();
                let mut r = Server::agent().post(format!("{base}/v1/predict")).send(body).expect("a connection was dropped without a status");
                let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                (r.status().as_u16(), retry, r.body_mut().read_to_string().unwrap())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let full: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(ok + full.len(), 24, "{results:?}");
    assert!(ok >= 1 && !full.is_empty(), "{ok} answered, {} refused", full.len());
    for (_, retry, body) in &full {
        assert_eq!(retry.as_deref(), Some("1"), "{body}");
        assert!(body.contains("--max-queue"), "{body}");
    }
    // And the server still answers afterwards.
    let (status, _) = s.post("/v1/predict", serde_json::json!({ "inputs": ["still here"] }));
    assert_eq!(status, 200);
}

/// Text of a greedy generation straight from the pipeline, as `reft generate --runtime ort`.
fn ort_text(dec: &mut OrtDecoder, ids: &[u32], n: usize) -> String {
    let opts = GenerateOptions { max_new_tokens: n, sampling: Sampling::Greedy, extra_stop_tokens: vec![] };
    let gen = dec.lm.generate(ids, &opts, &mut |_| Ok(())).unwrap();
    let mut stream = TextStream::new(&dec.tokenizer);
    let mut text = String::new();
    for &t in &gen.tokens {
        text.push_str(&stream.push(t).unwrap().unwrap_or_default());
    }
    text + &stream.finish().unwrap().unwrap_or_default()
}

#[test]
fn completions_and_chat_match_the_pipeline_stream_and_stop() {
    let p = pipelines();
    let Some(smol) = &p.decoder else { return };
    let s = Server::start(&[&format!("smol={}", smol.display()), p.classifier.to_str().unwrap()]);
    let mut dec = OrtDecoder::load(smol, None).unwrap();

    // Greedy completion: the pipeline's own text.
    let prompt = "The capital of France is";
    let ids = dec.tokenizer.encode(prompt, None).unwrap();
    let want = ort_text(&mut dec, &ids, 12);
    let (status, out) = s.post("/v1/completions", serde_json::json!({ "model": "smol", "prompt": prompt, "max_tokens": 12, "temperature": 0 }));
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["choices"][0]["text"].as_str().unwrap(), want);
    assert_eq!(out["object"], "text_completion");
    assert_eq!(out["usage"]["prompt_tokens"], ids.len());
    assert_eq!(out["usage"]["completion_tokens"], 12);
    assert_eq!(out["choices"][0]["finish_reason"], "length");

    // Streamed: the pieces add up to the same text, then [DONE].
    let events = s.post_stream("/v1/completions", serde_json::json!({ "prompt": prompt, "max_tokens": 12, "temperature": 0, "stream": true, "stream_options": { "include_usage": true } }));
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let streamed: String = chunks.iter().filter_map(|c| c["choices"].get(0)?["text"].as_str().map(str::to_string)).collect();
    assert_eq!(streamed, want);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 12);

    // A stop string cuts the text before it.
    let cut = want.find('.').map(|i| &want[..i]).expect("the greedy text has a full stop");
    let (_, out) = s.post("/v1/completions", serde_json::json!({ "prompt": prompt, "max_tokens": 12, "temperature": 0, "stop": ["."] }));
    assert_eq!(out["choices"][0]["text"].as_str().unwrap(), cut);
    assert_eq!(out["choices"][0]["finish_reason"], "stop");

    // Seeded sampling repeats; another seed may differ but is still a valid response.
    let sampled = |seed: u64| s.post("/v1/completions", serde_json::json!({ "prompt": "Once upon a time", "max_tokens": 10, "temperature": 0.9, "top_p": 0.95, "seed": seed })).1["choices"][0]["text"].clone();
    assert_eq!(sampled(7), sampled(7));

    // Chat: the model's template, then the pipeline's greedy text, whole and streamed.
    let template = dec.chat_template.clone().expect("SmolLM2 has a chat template");
    let rendered = template.render(&[reft_core::model::llama::ChatMessage::new("user", "Name three colours.")], true).unwrap();
    let chat_ids = dec.tokenizer.encode_continuation(&rendered).unwrap();
    let want = ort_text(&mut dec, &chat_ids, 10);
    let body = serde_json::json!({ "messages": [{ "role": "user", "content": "Name three colours." }], "max_tokens": 10, "temperature": 0 });
    let (status, out) = s.post("/v1/chat/completions", body.clone());
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["choices"][0]["message"]["role"], "assistant");
    assert_eq!(out["choices"][0]["message"]["content"].as_str().unwrap(), want);
    let mut stream_body = body;
    stream_body["stream"] = true.into();
    let events = s.post_stream("/v1/chat/completions", stream_body);
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string)).collect();
    assert_eq!(streamed, want);

    // Errors that name the field.
    let cases = [
        (serde_json::json!({ "prompt": "a", "logprobs": 2 }), "/v1/completions", 400, "unknown field `logprobs`"),
        (serde_json::json!({ "prompt": "a", "n": 2 }), "/v1/completions", 400, "`n` = 2"),
        (serde_json::json!({ "prompt": "a", "temperature": -1 }), "/v1/completions", 400, "temperature -1"),
        (serde_json::json!({ "prompt": "a", "max_tokens": 100000 }), "/v1/completions", 400, "over the model's context"),
        (serde_json::json!({ "messages": [{ "role": "user", "content": "a" }] }), "/v1/completions", 400, "`messages` is for POST /v1/chat/completions"),
        (serde_json::json!({ "messages": [] }), "/v1/chat/completions", 400, "`messages` is empty"),
        (serde_json::json!({ "messages": [{ "role": "user", "content": [{ "type": "image_url" }] }] }), "/v1/chat/completions", 400, "only text parts"),
        (serde_json::json!({ "model": "movies", "prompt": "a" }), "/v1/completions", 400, "`movies` is a classification model"),
        (serde_json::json!({ "inputs": ["a"], "model": "smol" }), "/v1/predict", 400, "`smol` is a causal_lm model"),
    ];
    for (body, path, status, says) in cases {
        let (got, out) = s.post(path, body.clone());
        assert_eq!(got, status, "{path} {body}: {out}");
        assert!(error_message(&out).contains(says), "{path} {body}: {out}\nshould say {says:?}");
    }
    let (_, metrics) = s.get("/metrics");
    assert!(metrics.contains("reft_generated_tokens_total{model=\"smol\"}"), "{metrics}");
    assert!(s.metric("reft_time_to_first_token_seconds_count") >= 6.0, "{metrics}");
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let p = pipelines();
    let Some(smol) = &p.decoder else { return };
    let mut s = Server::start(&[smol.to_str().unwrap()]);
    let base = s.base.clone();
    let streaming = std::thread::spawn(move || {
        let body = serde_json::json!({ "prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "stream": true });
        let r = Server::agent().post(format!("{base}/v1/completions")).send(body.to_string()).unwrap();
        BufReader::new(r.into_body().into_reader()).lines().map_while(Result::ok).filter_map(|l| l.strip_prefix("data: ").map(str::to_string)).collect::<Vec<_>>()
    });
    // Wait for the generation to start, then ask the server to stop.
    let start = Instant::now();
    while s.metric("reft_time_to_first_token_seconds_count") < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = s.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let events = streaming.join().unwrap();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "the request in flight was cut: {events:?}");
    let last: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length", "{last}");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "exit status {status} after SIGTERM:\n{}", s.log());
    assert!(s.log().contains("SIGTERM"), "{}", s.log());
    // Nothing listens any more.
    assert!(Server::agent().get(format!("{}/health", s.base)).call().is_err());
}

#[test]
fn a_folder_that_is_not_a_pipeline_is_refused_before_listening() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, _, err) = run_reft(&["serve", tmp.path().to_str().unwrap(), "--port", "0"]);
    assert!(!ok);
    assert!(err.contains("pipeline.yaml"), "{err}");
    assert!(!err.contains("listening"), "{err}");
    let (ok, _, err) = run_reft(&["serve", "/no/such/folder", "--port", "0"]);
    assert!(!ok && err.contains("/no/such/folder") && err.contains("no such pipeline folder"), "{err}");
}
