//! `reft serve`: exported pipelines behind HTTP (docs/serving.md).
//!
//! Layout: `routes` (the router and the per-request middleware) hands requests to
//! `predict` and `completions`, which check them and queue jobs (`queue`) for one worker
//! thread per model (`classify`: dynamic batches; `generate`: one generation at a time,
//! streamed), each owning its ONNX Runtime sessions. `state` holds what the handlers share;
//! `metrics` the Prometheus registry; `error` the JSON error shape. The server keeps no
//! state between requests, so scaling out is running more replicas.

mod api;
mod classify;
mod completions;
mod error;
mod generate;
mod metrics;
mod predict;
mod queue;
mod routes;
mod state;
mod stop;

use anyhow::Context;
use reft_core::deploy::OrtOptions;
use state::{AppState, Classifier, Limits, Lm, Model, Plan, Served};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct Args {
    /// Pipeline folders written by `reft export` (classification or causal LM), each as DIR
    /// (its name is the folder's) or NAME=DIR.
    #[arg(required = true, value_name = "PIPELINE_DIR")]
    pub pipelines: Vec<String>,
    /// Address to listen on (0.0.0.0: every interface, as in a container).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (printed on start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Texts per ONNX Runtime run of a classifier: concurrent requests are batched up to this.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// How long a classifier waits for more requests to fill a batch, in microseconds.
    #[arg(long, default_value_t = 2000)]
    pub max_wait_us: u64,
    /// Requests that may wait per model; past it a request gets 503 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Texts per /v1/predict request (413 past it).
    #[arg(long, default_value_t = 256)]
    pub max_texts: usize,
    /// Tokens per text or prompt (422 past it). Classifier texts longer than the pipeline's
    /// max_length but within this are truncated to max_length, and the response says so.
    #[arg(long, default_value_t = 8192)]
    pub max_input_tokens: usize,
    /// Bytes per request body (413 past it).
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// ONNX Runtime intra-op threads per model (0: ONNX Runtime's choice, one per core).
    #[arg(long)]
    pub intra_threads: Option<usize>,
    /// Threads for HTTP (parsing, tokenising); the models run on their own threads.
    #[arg(long, default_value_t = 2)]
    pub http_threads: usize,
    /// Log lines as JSON objects instead of text (`RUST_LOG` sets the level; default info).
    #[arg(long)]
    pub log_json: bool,
}

/// A number that tells this process's ids apart from another replica's.
pub(crate) fn process_tag() -> u64 {
    static TAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TAG.get_or_init(|| {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64);
        (u64::from(std::process::id()) << 20) ^ nanos
    })
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false);
    // A second init (tests in one process) keeps the first subscriber.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

pub fn run(args: Args) -> anyhow::Result<()> {
    for (flag, v) in [("--max-batch", args.max_batch), ("--max-queue", args.max_queue), ("--max-texts", args.max_texts), ("--max-input-tokens", args.max_input_tokens), ("--max-body-bytes", args.max_body_bytes), ("--http-threads", args.http_threads)] {
        anyhow::ensure!(v > 0, "{flag} must be at least 1");
    }
    init_logging(args.log_json);
    let plans = args.pipelines.iter().map(|p| Plan::read(p)).collect::<anyhow::Result<Vec<_>>>()?;
    state::check_unique(&plans)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(args.http_threads).enable_all().build().context("starting the async runtime")?;
    runtime.block_on(serve(args, plans))
}

async fn serve(args: Args, plans: Vec<Plan>) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::new().context("setting up the metrics")?);
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    // The first line a supervisor (or a test) reads: where to connect.
    eprintln!("reft serve: listening on http://{addr}");

    // One worker thread per model; each loads its sessions, then says so on `loaded`.
    let (loaded_tx, loaded_rx) = std::sync::mpsc::channel();
    let batching = classify::Batching { max_batch: args.max_batch, max_wait: Duration::from_micros(args.max_wait_us) };
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut models = Vec::with_capacity(plans.len());
    for plan in plans {
        let gauge = metrics.queue_depth.with_label_values(&[plan.name.as_str()]);
        // pipeline.yaml's session options, with --intra-threads over its thread count.
        let ort = args.intra_threads.map(|n| OrtOptions { intra_op_threads: n, ..plan.spec.ort.clone() });
        let served = if plan.spec.decoder.is_some() {
            let (queue, inbox) = queue::bounded(args.max_queue, gauge);
            generate::spawn(plan.name.clone(), plan.dir.clone(), ort, inbox, metrics.clone(), loaded_tx.clone())?;
            let max_positions = plan.spec.decoder.as_ref().map_or(0, |d| d.geometry.max_positions);
            Served::Lm(Lm { tokenizer: plan.tokenizer, chat_template: plan.chat_template, max_positions, queue })
        } else {
            let (queue, inbox) = queue::bounded(args.max_queue, gauge);
            classify::spawn(plan.name.clone(), plan.dir.clone(), ort, inbox, batching, metrics.clone(), loaded_tx.clone())?;
            Served::Classifier(Classifier { spec: plan.spec, tokenizer: plan.tokenizer, queue })
        };
        models.push(Model { name: plan.name, created, served });
    }
    drop(loaded_tx);
    let limits = Limits { max_texts: args.max_texts, max_input_tokens: args.max_input_tokens, max_body_bytes: args.max_body_bytes };
    let count = models.len();
    let state = Arc::new(AppState::new(models, limits, metrics));

    // A model that fails to load ends the server (with its error): a replica that can never
    // become ready should fail where its supervisor sees it, not wait forever.
    let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let (load_failed_tx, load_failed_rx) = tokio::sync::oneshot::channel::<()>();
    {
        let (state, failure) = (state.clone(), failure.clone());
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            for result in loaded_rx.iter().take(count) {
                match result {
                    Ok(name) => tracing::info!(model = %name, "loaded"),
                    Err(e) => {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        let _ = load_failed_tx.send(());
                        return;
                    }
                }
            }
            state.set_ready();
            tracing::info!(models = count, secs = started.elapsed().as_secs_f64(), "ready");
        });
    }

    let app = routes::router(state.clone());
    let shutdown = async move {
        let why = tokio::select! {
            s = signal() => s,
            // (A dropped sender means every model loaded: nothing to wait for.)
            Ok(()) = load_failed_rx => "a model failed to load",
        };
        tracing::info!(reason = why, "shutting down: no new connections; finishing requests in flight");
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("serving HTTP")?;
    if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        anyhow::bail!("{e}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT or SIGTERM, whichever comes first.
async fn signal() -> &'static str {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term => "SIGTERM",
    }
}
