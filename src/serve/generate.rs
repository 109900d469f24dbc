//! A causal LM's worker thread: it owns the pipeline's prefill and decode-step sessions and
//! runs one generation at a time, in arrival order, sending text to the request's handler
//! as it is decoded. Generation stops on the model's end token, `max_tokens`, a full
//! context, a `stop` string, or a client that has gone away (no work for nobody).

use super::metrics::Metrics;
use super::queue::Inbox;
use super::stop::StopText;
use reft_core::deploy::OrtOptions;
use reft_core::generate::{GenerateOptions, Sampling, StopReason, TextStream};
use reft_core::runtime::OrtDecoder;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

pub struct GenerateJob {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub stops: Vec<String>,
    pub events: UnboundedSender<GenEvent>,
    /// When the request arrived (time to first token counts from here).
    pub arrived: Instant,
}

/// What the handler hears, in order: text pieces, then `Done` or `Failed`.
#[derive(Debug)]
pub enum GenEvent {
    Text(String),
    Done(Finish),
    Failed(String),
}

#[derive(Debug, Clone, Copy)]
pub struct Finish {
    /// OpenAI's `finish_reason`: `stop` (end token or stop string) or `length`.
    pub reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// Why `on_token` ended generation early.
enum Cut {
    StopString,
    ClientGone,
}

/// Start the worker of the causal-LM pipeline at `dir`; it says on `loaded` whether the
/// sessions loaded.
pub fn spawn(
    name: String,
    dir: PathBuf,
    ort: Option<OrtOptions>,
    inbox: Inbox<GenerateJob>,
    metrics: Arc<Metrics>,
    loaded: std::sync::mpsc::Sender<Result<String, String>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("generate:{name}")).spawn(move || {
        let mut dec = match OrtDecoder::load(&dir, ort.as_ref()) {
            Ok(d) => d,
            Err(e) => {
                let _ = loaded.send(Err(format!("{name} ({}): {e}", dir.display())));
                return;
            }
        };
        let _ = loaded.send(Ok(name.clone()));
        let tokens = metrics.generated_tokens.with_label_values(&[name.as_str()]);
        let ttft = metrics.time_to_first_token.with_label_values(&[name.as_str()]);
        let queue_wait = metrics.queue_wait.with_label_values(&[name.as_str()]);
        while let Some(job) = inbox.recv() {
            queue_wait.observe(job.arrived.elapsed().as_secs_f64());
            if job.events.is_closed() {
                continue;
            }
            let events = job.events.clone();
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(&mut dec, &job, &ttft)));
            let event = match outcome {
                Ok(Ok(finish)) => {
                    tokens.inc_by(finish.completion_tokens as u64);
                    GenEvent::Done(finish)
                }
                Ok(Err(e)) => {
                    tracing::error!(model = %name, error = %e, "generation failed");
                    GenEvent::Failed(e)
                }
                Err(_) => GenEvent::Failed("generation panicked (a bug in reft; see the server log)".into()),
            };
            let _ = events.send(event);
        }
    })
}

/// One generation, streamed to `job.events`.
fn run(dec: &mut OrtDecoder, job: &GenerateJob, ttft: &prometheus::Histogram) -> Result<Finish, String> {
    let opts = GenerateOptions { max_new_tokens: job.max_tokens, sampling: job.sampling.clone(), extra_stop_tokens: vec![] };
    let mut stream = TextStream::new(&dec.tokenizer);
    let mut stops = StopText::new(job.stops.clone());
    let mut produced = 0usize;
    let mut cut: Option<Cut> = None;
    let send = |text: String| -> bool { text.is_empty() || job.events.send(GenEvent::Text(text)).is_ok() };
    let result = dec.lm.generate(&job.prompt, &opts, &mut |tok| {
        produced += 1;
        if produced == 1 {
            ttft.observe(job.arrived.elapsed().as_secs_f64());
        }
        if let Some(piece) = stream.push(tok)? {
            let (out, hit) = stops.push(&piece);
            if !send(out) {
                cut = Some(Cut::ClientGone);
            } else if hit {
                cut = Some(Cut::StopString);
            }
        }
        match cut {
            // An error is the only way to end `generate` early; it is told apart below.
            Some(_) => Err(reft_core::Error::Other("generation cut short".into())),
            None => Ok(()),
        }
    });
    let finish = |reason| Finish { reason, prompt_tokens: job.prompt.len(), completion_tokens: produced };
    match (result, cut) {
        (_, Some(Cut::StopString)) => Ok(finish("stop")),
        (_, Some(Cut::ClientGone)) => Ok(finish("stop")),
        (Err(e), None) => Err(e.to_string()),
        (Ok(gen), None) => {
            let rest = stream.finish().map_err(|e| e.to_string())?.unwrap_or_default();
            let (out, hit) = stops.push(&rest);
            send(out);
            if hit {
                return Ok(finish("stop"));
            }
            send(stops.finish());
            Ok(finish(match gen.stop {
                StopReason::StopToken(_) => "stop",
                StopReason::MaxNewTokens | StopReason::ContextFull => "length",
            }))
        }
    }
}
