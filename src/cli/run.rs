//! `reft run RECIPE`: the whole job in one command — fetch what is missing, train, print the
//! metrics, then export the adapter to an ONNX Runtime pipeline and score the test set with
//! it, next to candle's figure.

use super::train::RecipeArgs;
use reft_core::adapter;
use reft_core::export::{export_adapter, ExportOptions};
use reft_core::runtime::OrtPipeline;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Stop after training: no ONNX export or ONNX Runtime inference.
    #[arg(long)]
    no_export: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    super::train::refuse_under_launcher("reft run", "`mpirun … reft train RECIPE`, then `reft export` on its run folder")?;
    // Idempotent: a complete cache costs a marker check per asset.
    super::setup::fetch_defaults()?;
    let trained = super::train::train_and_report(super::train::Args::for_run(args.recipe))?;
    if args.no_export {
        return Ok(());
    }
    let run_dir = &trained.summary.run_dir;
    // The recipe's `export.dir`, else beside the adapter.
    let pipeline_dir = trained.export_dir.clone().unwrap_or_else(|| run_dir.join("pipeline"));
    let loaded = adapter::load(run_dir, None, &candle_core::Device::Cpu)?;
    super::format::print_notes(&loaded.notes);
    let report = export_adapter(&loaded, &pipeline_dir, &ExportOptions::default())?;
    drop(loaded);
    if trained.causal_lm {
        // A decoder exports as prefill + decode-step graphs; generation, not a test-set score,
        // is how it is used (docs/export.md, "Decoders").
        println!(
            "pipeline     {} ({} graph nodes; `reft generate --runtime ort --pipeline {} \"prompt\"`)",
            report.dir.display(),
            report.nodes,
            report.dir.display()
        );
        return Ok(());
    }
    println!("pipeline     {} ({} graph nodes; `reft infer {} \"text\"`)", report.dir.display(), report.nodes, report.dir.display());
    if let (Some(test), Some(candle_test)) = (&trained.test_file, trained.summary.test.as_ref().and_then(|t| t.classification())) {
        let mut pipe = OrtPipeline::load(&pipeline_dir, None)?;
        let start = std::time::Instant::now();
        let m = super::infer::evaluate(&mut pipe, test, &trained.text_column, &trained.label_column, 32)?;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "test (ORT)   accuracy {:.2}%  macro-F1 {:.2}%  ({} examples in {secs:.1} s; candle {:.2}%)",
            100.0 * m.accuracy,
            100.0 * m.macro_f1,
            m.examples,
            100.0 * candle_test.accuracy
        );
    }
    Ok(())
}
