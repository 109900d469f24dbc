//! `reft run RECIPE`: the whole job in one command — fetch what is missing, train, and
//! print the metrics. (Export and ONNX Runtime inference join here as they land.)

use super::train::RecipeArgs;
use reft_core::assets::{self, SetupOptions};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    recipe: RecipeArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Idempotent: a complete cache costs a marker check per asset.
    assets::setup(&SetupOptions::new(assets::cache_dir()), &mut |line: &str| eprintln!("{line}"))?;
    super::train::run(super::train::Args::for_run(args.recipe))
}
