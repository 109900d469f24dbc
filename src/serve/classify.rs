//! A classifier's worker thread: it owns the pipeline's ONNX Runtime session and runs
//! **dynamic batches**. It takes the first waiting request, then keeps taking requests
//! until the batch holds `max_batch` texts or `max_wait` has passed since the first, runs
//! them all in one padded ONNX Runtime call (several, `max_batch` texts each, when one
//! request alone brings more), and answers each request with its own rows.

use super::metrics::Metrics;
use super::queue::Inbox;
use reft_core::deploy::OrtOptions;
use reft_core::runtime::OrtPipeline;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// One request's texts, tokenised.
pub struct ClassifyJob {
    pub rows: Vec<Vec<u32>>,
    /// Logits per row, or why the run failed.
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
    pub queued_at: Instant,
}

#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_batch: usize,
    pub max_wait: Duration,
}

/// Start the worker of the pipeline at `dir`. It loads the session first and says on
/// `loaded` whether that worked.
pub fn spawn(
    name: String,
    dir: PathBuf,
    ort: Option<OrtOptions>,
    inbox: Inbox<ClassifyJob>,
    batching: Batching,
    metrics: Arc<Metrics>,
    loaded: std::sync::mpsc::Sender<Result<String, String>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("classify:{name}")).spawn(move || {
        let mut pipe = match OrtPipeline::load(&dir, ort.as_ref()) {
            Ok(p) => p,
            Err(e) => {
                let _ = loaded.send(Err(format!("{name} ({}): {e}", dir.display())));
                return;
            }
        };
        let _ = loaded.send(Ok(name.clone()));
        let batch_sizes = metrics.batch_size.with_label_values(&[name.as_str()]);
        let queue_wait = metrics.queue_wait.with_label_values(&[name.as_str()]);
        let mut carried: Option<ClassifyJob> = None;
        loop {
            let Some(first) = carried.take().or_else(|| inbox.recv()) else {
                return; // every sender is gone: the server is shutting down
            };
            let deadline = Instant::now() + batching.max_wait;
            let mut texts = first.rows.len();
            let mut jobs = vec![first];
            while texts < batching.max_batch {
                let Some(job) = inbox.recv_until(deadline) else { break };
                if texts + job.rows.len() > batching.max_batch {
                    carried = Some(job);
                    break;
                }
                texts += job.rows.len();
                jobs.push(job);
            }
            // Requests whose client has gone need no work.
            jobs.retain(|j| !j.reply.is_closed());
            for j in &jobs {
                queue_wait.observe(j.queued_at.elapsed().as_secs_f64());
            }
            let rows: Vec<Vec<u32>> = jobs.iter().flat_map(|j| j.rows.iter().cloned()).collect();
            if rows.is_empty() {
                continue;
            }
            for chunk in rows.chunks(batching.max_batch) {
                batch_sizes.observe(chunk.len() as f64);
            }
            // A panic below (a bug) fails this batch's requests, not the worker.
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| pipe.logits_batched(&rows, batching.max_batch)))
                .unwrap_or_else(|_| Err(reft_core::Error::Other("the classifier panicked (a bug in reft; see the server log)".into())));
            match result {
                Ok(logits) => {
                    let mut logits = logits.into_iter();
                    for job in jobs {
                        let mine: Vec<Vec<f32>> = logits.by_ref().take(job.rows.len()).collect();
                        let _ = job.reply.send(Ok(mine));
                    }
                }
                Err(e) => {
                    tracing::error!(model = %name, error = %e, "classifier run failed");
                    for job in jobs {
                        let _ = job.reply.send(Err(e.to_string()));
                    }
                }
            }
        }
    })
}
