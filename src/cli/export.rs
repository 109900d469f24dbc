//! `reft export --adapter DIR --out PIPE`: write an ONNX Runtime pipeline folder.

use reft_core::adapter;
use reft_core::export::pipeline::OrtOptions;
use reft_core::export::{export_adapter, ExportOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Adapter folder (from `reft train`).
    #[arg(long)]
    pub adapter: PathBuf,
    /// Pipeline folder to write: model.onnx, tokenizer.json, pipeline.yaml.
    #[arg(long)]
    pub out: PathBuf,
    /// Use this base model folder instead of the one recorded in the adapter.
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
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = adapter::load(&args.adapter, args.model.as_deref(), &candle_core::Device::Cpu)?;
    let opts = ExportOptions {
        ort: OrtOptions { graph_optimization_level: args.optimization.clone(), intra_op_threads: args.intra_threads, inter_op_threads: 0, intra_op_spinning: !args.no_spinning },
        quantize: args.quantize.clone(),
        ..Default::default()
    };
    let report = export_adapter(&loaded, &args.out, &opts)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "pipeline": report.dir,
                "files": report.files,
                "nodes": report.nodes,
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
    println!("graph        {} nodes, opset {}, inputs input_ids + attention_mask [batch, sequence], output logits", report.nodes, report.spec.opset);
    for i in &report.spec.interventions {
        println!("  {:<28} {:<8} {} ({}) as {}", i.name, i.kind, i.hook, i.positions, i.exported_as);
    }
    Ok(())
}
