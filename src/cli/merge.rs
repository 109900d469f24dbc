//! `reft merge`: fold a LoRA adapter into the base model's weights.

use reft_core::adapter::{self, merge};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Adapter folder: ours (`reft train`) or HF PEFT's (`adapter_config.json`).
    #[arg(long)]
    adapter: PathBuf,
    /// Folder for the merged model (written in the base model's own layout).
    #[arg(long)]
    out: PathBuf,
    /// Use this base model folder instead of the one the adapter records.
    #[arg(long)]
    model: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = adapter::load(&args.adapter, args.model.as_deref(), &candle_core::Device::Cpu)?;
    super::format::print_notes(&loaded.notes);
    let report = merge::merge(&loaded, &args.out)?;
    let worst = report.merged.iter().map(|(_, m)| *m).fold(0f32, f32::max);
    println!(
        "merged {} modules into {} (largest |ΔW| {worst:.3e}); copied {}",
        report.merged.len(),
        args.out.join(merge::WEIGHTS_FILE).display(),
        report.copied.join(", ")
    );
    if loaded.head.is_some() {
        println!("note: the adapter's classification head is not part of a merged backbone; it stays in {}", args.adapter.display());
    }
    Ok(())
}
