//! `reft run RECIPE`: the whole job in one command — fetch what is missing, train, and
//! print the metrics. (Export and ONNX Runtime inference join here as they land.)

use reft_core::assets::{self, SetupOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The recipe to run, e.g. configs/loreft_glue.yaml.
    recipe: PathBuf,
    /// Run folder (default: out/<recipe name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override a recipe value, e.g. --set train.epochs=1 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Idempotent: a complete cache costs a marker check per asset.
    assets::setup(&SetupOptions::new(assets::cache_dir()), &mut |line: &str| eprintln!("{line}"))?;
    super::train::run(super::train::Args::for_run(args.recipe, args.out, args.set))
}
