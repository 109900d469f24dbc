//! `reft train RECIPE`: train a recipe's interventions and head, keep the best adapter.

use super::progress::BarReporter;
use reft_core::recipe::{LoadedRecipe, Plan};
use reft_core::task::metrics::TaskMetrics;
use reft_core::train::{self, TrainOptions};
use std::path::PathBuf;

/// What `reft train` and `reft run` both take: the recipe, the run folder, overrides.
#[derive(clap::Args)]
pub struct RecipeArgs {
    /// The recipe to train, e.g. configs/loreft_glue.yaml.
    pub recipe: PathBuf,
    /// Run folder: adapter, metrics.jsonl, checkpoint (default: out/<recipe name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override a recipe value, e.g. --set train.lr=1e-3 --set train.seed=7 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Continue an interrupted run from its folder's checkpoint.
    #[arg(long)]
    resume: bool,
    /// Write a checkpoint every N updates (and at each epoch end).
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    /// Recompute the frozen layers below the lowest intervention every step instead of
    /// caching them (slower; for checking that the cache changes nothing).
    #[arg(long)]
    no_cache: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Keep the frozen-prefix caches in this folder and reuse them when another run has the
    /// same model, lowest intervened layer and data (`reft sweep` gives its trials one).
    #[arg(long, value_name = "DIR")]
    prefix_cache_dir: Option<PathBuf>,
    /// Stop after epoch EPOCH if its dev score (accuracy; minus the response loss for a
    /// causal LM) is below SCORE, keeping the best epoch so far: the median rule of a
    /// sweep's `early_stop` (`reft sweep --jobs` passes it to its trials).
    #[arg(long, value_name = "EPOCH:SCORE")]
    stop_below: Option<train::EarlyStop>,
}

impl Args {
    /// The defaults `reft run` trains with.
    pub fn for_run(recipe: RecipeArgs) -> Self {
        Args { recipe, resume: false, checkpoint_every: 50, no_cache: false, json: false, prefix_cache_dir: None, stop_below: None }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    train_and_report(args).map(|_| ())
}

/// What a finished `reft train` leaves for `reft run`: the summary and the recipe's test file.
pub struct Trained {
    pub summary: train::TrainSummary,
    pub test_file: Option<PathBuf>,
    pub text_column: String,
    pub label_column: String,
    /// The recipe's `export.dir` (resolved against the recipe's folder): where `reft run`
    /// writes the pipeline.
    pub export_dir: Option<PathBuf>,
    /// A causal LM exports as a decoder (prefill + decode step), scored by generating.
    pub causal_lm: bool,
}

/// Only `reft train` joins a data-parallel world: refuse `command` when a launcher started
/// several ranks of it (each would fetch, sweep or export on its own), and say what to do.
pub fn refuse_under_launcher(command: &str, instead: &str) -> anyhow::Result<()> {
    if let Some(l) = reft_core::dist::world::launch().filter(|l| l.world_size > 1) {
        anyhow::bail!("{command} runs as one process, but {} started {} ranks of it; use {instead}", l.source, l.world_size);
    }
    Ok(())
}

/// Train, print the summary, and return it.
pub fn train_and_report(args: Args) -> anyhow::Result<Trained> {
    let RecipeArgs { recipe: recipe_path, out, set } = args.recipe;
    let recipe = LoadedRecipe::load_with_overrides(&recipe_path, &set)?;
    let plan = Plan::new(recipe)?;
    let data = plan.recipe.recipe.data.as_ref();
    let test_file = match data.and_then(|d| d.test.as_deref()) {
        Some(t) => Some(plan.recipe.resolve_path("data.test", t)?),
        None => None,
    };
    let export_dir = match &plan.recipe.recipe.export {
        Some(e) => Some(plan.recipe.resolve_path("export.dir", &e.dir)?),
        None => None,
    };
    let (text_column, label_column) = data.map(|d| (d.text.clone(), d.label.clone())).unwrap_or_else(|| ("text".into(), "label".into()));
    let run_dir = out.unwrap_or_else(|| {
        let stem = recipe_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
        PathBuf::from("out").join(stem)
    });
    // Under mpirun/srun this process is one rank of a data-parallel run: rank 0 shows the
    // progress and prints the summary; the others train their shares silently.
    let world = reft_core::dist::world::connect(&plan.recipe.recipe.model.device)?;
    let root = world.is_root();
    if root && !world.is_single_process() {
        eprintln!(
            "data parallel: {} rank{} over {}; global batch {} (about {} per rank)",
            world.world_size(),
            if world.world_size() == 1 { "" } else { "s" },
            world.describe(),
            plan.recipe.recipe.train.batch_size,
            plan.recipe.recipe.train.batch_size.div_ceil(world.world_size())
        );
    }
    let mut bar = BarReporter::new();
    let mut silent = train::Silent;
    let reporter: &mut dyn train::Reporter = if root { &mut bar } else { &mut silent };
    let summary = train::train(
        &plan,
        TrainOptions {
            run_dir,
            resume: args.resume,
            checkpoint_every: args.checkpoint_every,
            log_every: 10,
            cache_prefix: !args.no_cache,
            prefix_cache_dir: args.prefix_cache_dir.clone(),
            reporter,
            collective: world.as_ref(),
            early_stop: args.stop_below,
        },
    )
    .map_err(|e| if world.world_size() > 1 { anyhow::anyhow!("rank {}: {e}", world.rank()) } else { e.into() })?;
    let causal_lm = plan.recipe.recipe.task.kind == reft_core::recipe::TaskKind::CausalLm;
    let trained = Trained { summary: summary.clone(), test_file, text_column, label_column, export_dir, causal_lm };
    if !root {
        return Ok(trained);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(trained);
    }
    println!("adapter      {}", summary.run_dir.display());
    println!("trainable    {}", super::format::thousands(summary.trainable_parameters));
    println!("best epoch   {}", summary.best_epoch);
    let show = |name: &str, m: &TaskMetrics| match m {
        TaskMetrics::Classification(m) => println!("{name:<12} accuracy {:.2}%  macro-F1 {:.2}%", 100.0 * m.accuracy, 100.0 * m.macro_f1),
        TaskMetrics::CausalLm(m) => println!("{name:<12} response loss {:.4}  perplexity {:.3}  ({} tokens)", m.loss, m.perplexity, m.tokens),
    };
    match &summary.dev {
        Some(d) => show("dev", d),
        None => println!("dev          (no eval set: the epoch with the lowest training loss is kept)"),
    }
    if let Some(t) = &summary.test {
        show("test", t);
    }
    for (name, m) in &summary.transfer {
        show(name, m);
    }
    println!("s/epoch      {:.1} (training only)", summary.seconds_per_epoch);
    Ok(trained)
}
