//! Using reft as a library: load a recipe, check it into a plan, build its interventions
//! on the real model, and run one forward pass with them, capturing a hook on the way.
//!
//!   cargo run --release --example library_api -- configs/loreft_r4_layers2_4.yaml "A moving film."
//!
//! (Run `reft setup` first: the recipe's model comes from reft's cache.)

use reft_core::candle_core::{DType, Device};
use reft_core::collect::Collector;
use reft_core::hooks::{HookPattern, HookSurface};
use reft_core::model;
use reft_core::recipe::{LoadedRecipe, Plan};
use reft_core::rng::SeededRng;
use std::cell::RefCell;

// Link the built-in plugins (their registrations live in that crate).
use reft_plugins as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let recipe = args.next().unwrap_or_else(|| "configs/loreft_r4_layers2_4.yaml".into());
    let text = args.next().unwrap_or_else(|| "A gorgeous, moving film.".into());

    let plan = Plan::new(LoadedRecipe::load(recipe.as_ref())?)?;
    for p in &plan.interventions {
        println!("{:<28} {:<8} {:<6} {} trainable", p.site.to_string(), p.factory.name, p.positions.to_string(), p.trainable);
    }

    let device = Device::Cpu;
    let backbone = model::load(&plan.model_dir, DType::F32, &device)?;
    let tokenizer = model::load_tokenizer(&plan.model_dir)?;
    let interventions = plan.build_interventions(&device, DType::F32, plan.recipe.recipe.train.seed)?;

    let batch = tokenizer.batch(&[text.as_str()], Some(64), &device)?;
    let rng = RefCell::new(SeededRng::new(0));
    let hooks = interventions.hooks(&batch, false, DType::F32, &rng)?;
    let sites = HookPattern::parse("layers[-1].block_output")?.resolve(backbone.as_ref() as &dyn HookSurface)?;
    let collector = Collector::new(sites.clone(), &hooks);
    let hidden = backbone.forward(&batch, &collector)?;
    let captured = collector.into_captured();
    println!("final hidden state {:?}; captured {} = {:?}", hidden.dims(), sites[0], captured[&sites[0]].dims());
    Ok(())
}
