//! `reft infer PIPE "text" …`: run an exported pipeline with ONNX Runtime. Texts come from
//! the arguments, else one per stdin line; `--data FILE` scores a labelled file instead.

use anyhow::Context;
use reft_core::data::{read_examples, Format};
use reft_core::deploy::OrtOptions;
use reft_core::runtime::ort::softmax;
use reft_core::runtime::OrtPipeline;
use reft_core::task::classification::argmax;
use reft_core::task::metrics::ClassificationMetrics;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Pipeline folder (from `reft export`).
    pub pipeline: PathBuf,
    /// Texts to classify; without any (and without --data), one text per stdin line.
    pub texts: Vec<String>,
    /// Labelled data file (tsv, csv or jsonl): print accuracy instead of predictions.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value = "text")]
    pub text_column: String,
    #[arg(long, default_value = "label")]
    pub label_column: String,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Override pipeline.yaml's graph optimisation level (disable, basic, extended, all).
    #[arg(long)]
    pub optimization: Option<String>,
    /// Override pipeline.yaml's intra-op thread count (0: ONNX Runtime's choice).
    #[arg(long)]
    pub intra_threads: Option<usize>,
    /// Idle ONNX Runtime threads do not spin (better on a busy, shared machine).
    #[arg(long)]
    pub no_spinning: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Metrics of a pipeline on a labelled file (`reft run` uses this too).
pub fn evaluate(pipe: &mut OrtPipeline, data: &std::path::Path, text_column: &str, label_column: &str, batch_size: usize) -> anyhow::Result<ClassificationMetrics> {
    let n = pipe.spec.labels.len();
    let format = Format::of(data, None)?;
    let examples = read_examples(data, format, text_column, label_column, n, Some(pipe.spec.labels.as_slice()))?;
    let ids = examples.iter().map(|e| pipe.encode(&e.text)).collect::<Result<Vec<_>, _>>()?;
    let logits = pipe.logits_batched(&ids, batch_size)?;
    let labels: Vec<usize> = examples.iter().map(|e| e.label).collect();
    let preds: Vec<usize> = logits.iter().map(|l| argmax(l)).collect();
    let loss = logits.iter().zip(&labels).map(|(l, &y)| -(softmax(l)[y].max(f32::MIN_POSITIVE) as f64).ln()).sum::<f64>() / labels.len().max(1) as f64;
    Ok(ClassificationMetrics::compute(&preds, &labels, n, loss))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let overrides = if args.optimization.is_some() || args.intra_threads.is_some() || args.no_spinning {
        let spec = reft_core::deploy::PipelineSpec::read(&args.pipeline)?;
        Some(OrtOptions {
            graph_optimization_level: args.optimization.clone().unwrap_or(spec.ort.graph_optimization_level),
            intra_op_threads: args.intra_threads.unwrap_or(spec.ort.intra_op_threads),
            inter_op_threads: spec.ort.inter_op_threads,
            intra_op_spinning: spec.ort.intra_op_spinning && !args.no_spinning,
        })
    } else {
        None
    };
    let mut pipe = OrtPipeline::load(&args.pipeline, overrides.as_ref())?;
    if let Some(data) = &args.data {
        let start = std::time::Instant::now();
        let m = evaluate(&mut pipe, data, &args.text_column, &args.label_column, args.batch_size)?;
        let secs = start.elapsed().as_secs_f64();
        if args.json {
            println!("{}", serde_json::json!({ "data": data, "pipeline": args.pipeline, "metrics": m, "seconds": secs }));
        } else {
            println!("examples   {}", m.examples);
            println!("accuracy   {:.2}%", 100.0 * m.accuracy);
            println!("macro-F1   {:.2}%", 100.0 * m.macro_f1);
            println!("loss       {:.4}", m.loss);
            println!("seconds    {secs:.2} (ONNX Runtime)");
        }
        return Ok(());
    }
    let texts = if args.texts.is_empty() {
        std::io::stdin().lock().lines().collect::<Result<Vec<_>, _>>().context("reading stdin")?.into_iter().filter(|l| !l.trim().is_empty()).collect()
    } else {
        args.texts.clone()
    };
    let ids = texts.iter().map(|t| pipe.encode(t)).collect::<Result<Vec<_>, _>>()?;
    let logits = pipe.logits_batched(&ids, args.batch_size)?;
    let names = pipe.spec.labels.clone();
    for (text, l) in texts.iter().zip(&logits) {
        let p = softmax(l);
        let best = argmax(&p);
        if args.json {
            let probs: serde_json::Map<String, serde_json::Value> = names.iter().zip(&p).map(|(n, v)| (n.clone(), serde_json::json!(v))).collect();
            println!("{}", serde_json::json!({ "text": text, "label": names[best], "probabilities": probs, "logits": l }));
        } else {
            let detail: Vec<String> = names.iter().zip(&p).map(|(n, v)| format!("{n} {v:.3}")).collect();
            println!("{}\t{}\t{text}", names[best], detail.join(", "));
        }
    }
    Ok(())
}
