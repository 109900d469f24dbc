//! `reft eval` and `reft predict`: use a trained adapter.

use anyhow::Context;
use reft_core::adapter;
use reft_core::data::{read_examples, Format};
use reft_core::model;
use reft_core::task::classification::argmax;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Adapter folder: from `reft train`, or an HF PEFT LoRA folder (`adapter_config.json`).
    #[arg(long)]
    adapter: PathBuf,
    /// Labelled data file (tsv, csv or jsonl).
    #[arg(long)]
    data: PathBuf,
    /// Column (or JSON field) holding the text.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Column (or JSON field) holding the label.
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Causal-LM adapters: the column (or JSON field) holding the prompt.
    #[arg(long, default_value = "instruction")]
    prompt_column: String,
    /// Causal-LM adapters: the column (or JSON field) holding the response.
    #[arg(long, default_value = "response")]
    response_column: String,
    /// Use this base model folder instead of the one recorded in the adapter.
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Print metrics as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct PredictArgs {
    /// Adapter folder: from `reft train`, or an HF PEFT LoRA folder (`adapter_config.json`).
    #[arg(long)]
    adapter: PathBuf,
    /// Texts to classify; without any, one text per stdin line.
    texts: Vec<String>,
    /// Use this base model folder instead of the one recorded in the adapter.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Print one JSON object per text.
    #[arg(long)]
    json: bool,
}

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let loaded = adapter::load(&args.adapter, args.model.as_deref(), &candle_core::Device::Cpu)?;
    super::format::print_notes(&loaded.notes);
    if loaded.manifest.task.is_some() {
        return eval_causal_lm(&args, &loaded);
    }
    let head = loaded.manifest.head.clone().context("the adapter has no classification head")?;
    let tok = model::load_tokenizer(&loaded.model_dir)?;
    let format = Format::of(&args.data, None)?;
    let examples = read_examples(&args.data, format, &args.text_column, &args.label_column, head.num_labels, head.labels.as_deref())?;
    let max_len = loaded.manifest.max_length;
    let ids = examples.iter().map(|e| tok.encode(&e.text, max_len)).collect::<Result<Vec<_>, _>>()?;
    let labels: Vec<usize> = examples.iter().map(|e| e.label).collect();
    let clf = loaded.classifier()?;
    let (m, _) = clf.evaluate(&ids, &labels, args.batch_size, tok.pad_id(), None)?;
    if args.json {
        println!("{}", serde_json::json!({ "data": args.data, "adapter": args.adapter, "metrics": m }));
    } else {
        println!("examples   {}", m.examples);
        println!("accuracy   {:.2}%", 100.0 * m.accuracy);
        println!("macro-F1   {:.2}%", 100.0 * m.macro_f1);
        println!("loss       {:.4}", m.loss);
    }
    Ok(())
}

/// A causal-LM adapter: response loss and perplexity on instruction/response pairs, the
/// prompts formed as in training.
fn eval_causal_lm(args: &EvalArgs, loaded: &adapter::Loaded) -> anyhow::Result<()> {
    use reft_core::task::{causal_lm, TaskModel};
    let task = loaded.manifest.task.as_ref().context("not a causal-LM adapter")?;
    let device = candle_core::Device::Cpu;
    let tok = model::load_tokenizer(&loaded.model_dir)?;
    let lm = loaded.backbone.as_causal_lm().context("the adapter's base model is not a causal LM")?;
    let eos = *lm.stop_tokens().first().context("the model names no end-of-sequence token")?;
    let format = causal_lm::PromptFormat::new(task.chat_template, task.system.clone(), &loaded.model_dir)?;
    let pairs = reft_core::data::read_pairs(&args.data, Format::of(&args.data, None)?, &args.prompt_column, &args.response_column)?;
    // The trainer's default when the recipe sets none.
    let max_length = loaded.manifest.max_length.unwrap_or(64);
    let (set, truncated) = causal_lm::encode_pairs(&args.data, &pairs, &tok, &format, eos, max_length)?;
    if truncated > 0 {
        eprintln!("note: {truncated} responses cut to the adapter's max_length {max_length}");
    }
    let model = causal_lm::CausalLmModel::new(loaded.backbone.as_ref(), &loaded.interventions, candle_core::DType::F32, &device)?;
    let metrics = model.metrics(&set, args.batch_size.min(16), tok.pad_id(), None)?;
    let m = metrics.causal_lm().context("causal-LM metrics")?;
    if args.json {
        println!("{}", serde_json::json!({ "data": args.data, "adapter": args.adapter, "metrics": m }));
    } else {
        println!("examples     {}", m.examples);
        println!("tokens       {}", m.tokens);
        println!("loss         {:.4}", m.loss);
        println!("perplexity   {:.3}", m.perplexity);
    }
    Ok(())
}

pub fn predict(args: PredictArgs) -> anyhow::Result<()> {
    let loaded = adapter::load(&args.adapter, args.model.as_deref(), &candle_core::Device::Cpu)?;
    super::format::print_notes(&loaded.notes);
    let head = loaded.manifest.head.clone().context("the adapter has no classification head")?;
    let names: Vec<String> = head.labels.clone().unwrap_or_else(|| (0..head.num_labels).map(|i| i.to_string()).collect());
    let texts = if args.texts.is_empty() {
        std::io::stdin().lock().lines().collect::<Result<Vec<_>, _>>()?.into_iter().filter(|l| !l.trim().is_empty()).collect()
    } else {
        args.texts.clone()
    };
    let tok = model::load_tokenizer(&loaded.model_dir)?;
    let ids = texts.iter().map(|t| tok.encode(t, loaded.manifest.max_length)).collect::<Result<Vec<_>, _>>()?;
    let clf = loaded.classifier()?;
    let (_, probs) = clf.evaluate(&ids, &[], 32, tok.pad_id(), None)?;
    for (text, p) in texts.iter().zip(&probs) {
        let best = argmax(p);
        if args.json {
            let probs: serde_json::Map<String, serde_json::Value> = names.iter().zip(p).map(|(n, v)| (n.clone(), serde_json::json!(v))).collect();
            println!("{}", serde_json::json!({ "text": text, "label": names[best], "probabilities": probs }));
        } else {
            let detail: Vec<String> = names.iter().zip(p).map(|(n, v)| format!("{n} {v:.3}")).collect();
            println!("{}\t{}\t{text}", names[best], detail.join(", "));
        }
    }
    Ok(())
}
