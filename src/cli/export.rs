//! `reft export --adapter DIR --out PIPE`: write an ONNX Runtime pipeline folder.
//! `reft export --model PATH --out PIPE`: a decoder without an adapter, as a causal-LM pipeline.
//! `--format genai`: a decoder (with a causal-LM adapter's edits) for ONNX Runtime GenAI.

use reft_core::adapter;
use reft_core::deploy::OrtOptions;
use reft_core::export::{causal_lm_input, export_adapter, export_base_model, export_genai, with_base_model, ExportOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["adapter", "model"])))]
pub struct Args {
    /// Adapter folder (from `reft train`). An adapter with a classification head gives a
    /// classification pipeline; one on a decoder without a head, a causal-LM pipeline.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Pipeline folder to write: model.onnx, tokenizer.json, pipeline.yaml (a causal LM:
    /// prefill.onnx, decode.onnx, weights.onnx.data, tokenizer.json, pipeline.yaml).
    #[arg(long)]
    pub out: PathBuf,
    /// With --adapter: use this base model instead of the one recorded in the adapter.
    /// Alone: export this decoder (a .gguf file or llama folder) for `reft generate --runtime ort`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// ONNX Runtime graph optimisation level recorded for `reft infer`: disable, basic, extended, all.
    #[arg(long, default_value = "all")]
    pub optimization: String,
    /// ONNX Runtime intra-op threads recorded for `reft infer` (0: ONNX Runtime's choice).
    #[arg(long, default_value_t = 0)]
    pub intra_threads: usize,
    /// Record that ONNX Runtime's idle threads should not spin (better on a busy, shared machine).
    #[arg(long)]
    pub no_spinning: bool,
    /// `int8`: the frozen backbone's linear modules as dynamic int8 matmuls (faster on CPUs
    /// with VNNI/AMX; logits then differ from candle's by quantization error).
    #[arg(long)]
    pub quantize: Option<String>,
    /// `pipeline`: reft's folder (`reft infer`, `reft generate --runtime ort`, `reft serve`).
    /// `genai`: a decoder as a folder ONNX Runtime GenAI loads (`onnxruntime_genai.Model(DIR)`).
    #[arg(long, value_enum, default_value = "pipeline")]
    pub format: Format,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pipeline,
    Genai,
}

/// `--format genai`: genai_config.json, model.onnx (+ .data), tokenizer.json, tokenizer_config.json.
fn run_genai(args: &Args) -> anyhow::Result<()> {
    // These record reft's ONNX Runtime settings in pipeline.yaml, which a GenAI folder has not.
    let recorded = [
        ("--quantize", args.quantize.is_some()),
        ("--optimization", args.optimization != "all"),
        ("--intra-threads", args.intra_threads != 0),
        ("--no-spinning", args.no_spinning),
    ];
    if let Some((flag, _)) = recorded.iter().find(|(_, given)| *given) {
        anyhow::bail!("{flag} applies to reft pipelines; a --format genai folder is float32 and takes GenAI's own session options");
    }
    let report = match (&args.adapter, &args.model) {
        (Some(dir), model) => {
            let loaded = adapter::load(dir, model.as_deref(), &candle_core::Device::Cpu)?;
            super::format::print_notes(&loaded.notes);
            export_genai(&causal_lm_input(&loaded)?, &args.out)?
        }
        (None, Some(model)) => with_base_model(model, |input| export_genai(input, &args.out))?,
        (None, None) => anyhow::bail!("give --adapter DIR (a causal-LM adapter) or --model PATH (a decoder)"),
    };
    if args.json {
        println!("{}", serde_json::json!({ "folder": report.dir, "format": "genai", "files": report.files, "nodes": report.nodes, "interventions": report.interventions }));
        return Ok(());
    }
    println!("genai folder {}", report.dir.display());
    for f in &report.files {
        let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        println!("  {:<24} {:>8.1} MB", f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), size as f64 / 1e6);
    }
    let g = &report.geometry;
    println!("graph        {} nodes; {} layers, KV cache {} x [batch, {}, positions, {}]; interventions in the prefill only", report.nodes, g.num_layers, 2 * g.num_layers, g.num_kv_heads, g.head_dim);
    for i in &report.interventions {
        println!("  {:<28} {:<8} {} ({}) as {}", i.name, i.kind, i.hook, i.positions, i.exported_as);
    }
    println!("load         python3 -c \"import onnxruntime_genai as og; og.Model('{}')\"", report.dir.display());
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.format == Format::Genai {
        return run_genai(&args);
    }
    let opts = ExportOptions {
        ort: OrtOptions { graph_optimization_level: args.optimization.clone(), intra_op_threads: args.intra_threads, inter_op_threads: 0, intra_op_spinning: !args.no_spinning },
        quantize: args.quantize.clone(),
        ..Default::default()
    };
    let report = match (&args.adapter, &args.model) {
        (Some(dir), model) => {
            let loaded = adapter::load(dir, model.as_deref(), &candle_core::Device::Cpu)?;
            super::format::print_notes(&loaded.notes);
            export_adapter(&loaded, &args.out, &opts)?
        }
        (None, Some(model)) => export_base_model(model, &args.out, &opts)?,
        (None, None) => anyhow::bail!("give --adapter DIR (an adapter) or --model PATH (a decoder to export as it is)"),
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "pipeline": report.dir,
                "files": report.files,
                "task": report.spec.task,
                "nodes": report.nodes,
                "decode_nodes": report.spec.decoder.as_ref().map(|_| report.decode_nodes),
                "initializer_bytes": report.initializer_bytes,
                "interventions": report.spec.interventions,
            })
        );
        return Ok(());
    }
    println!("pipeline     {}", report.dir.display());
    for f in &report.files {
        let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        println!("  {:<24} {:>8.1} MB", f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), size as f64 / 1e6);
    }
    match &report.spec.decoder {
        None => println!("graph        {} nodes, opset {}, inputs input_ids + attention_mask [batch, sequence], output logits", report.nodes, report.spec.opset),
        Some(d) => {
            println!(
                "graphs       prefill {} nodes, decode step {} nodes, opset {}; {} layers, KV cache {} x [batch, {}, positions, {}]",
                report.nodes, report.decode_nodes, report.spec.opset, d.geometry.num_layers, d.geometry.num_layers * 2, d.geometry.num_kv_heads, d.geometry.head_dim
            );
            println!("generate     reft generate --runtime ort --pipeline {} \"PROMPT\"", report.dir.display());
        }
    }
    for i in &report.spec.interventions {
        println!("  {:<28} {:<8} {} ({}) as {}", i.name, i.kind, i.hook, i.positions, i.exported_as);
    }
    Ok(())
}
