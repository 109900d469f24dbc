//! `reft check RECIPE`: validate and print the plan.

use super::format::thousands;
use reft_core::recipe::{DTypeSpec, LoadedRecipe, Plan, TaskKind};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The recipe to check.
    recipe: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::new(LoadedRecipe::load(&args.recipe)?)?;
    print!("{}", render(&plan));
    Ok(())
}

fn render(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let r = &plan.recipe.recipe;
    let base = plan.model.num_parameters;
    let _ = writeln!(s, "recipe  {}", plan.recipe.path.display());
    let _ = writeln!(
        s,
        "model   {} ({}, {} layers, {} frozen parameters)",
        plan.model_dir.display(),
        plan.model.arch,
        reft_core::hooks::HookSurface::num_layers(&plan.model.config),
        thousands(base)
    );
    // A 16-bit base changes speed by CPU: say which linear-map kernel this run gets.
    let kernel = match r.model.dtype {
        DTypeSpec::F32 => None,
        DTypeSpec::Bf16 if reft_core::ops::bf16_native() => Some("bf16, linear maps on this CPU's AVX512-BF16 dot products"),
        DTypeSpec::Bf16 => Some("bf16, linear maps widened to f32 (this CPU has no AVX512-BF16: memory halves, time does not)"),
        DTypeSpec::F16 => Some("f16, linear maps widened to f32 (memory halves, time does not)"),
    };
    if let Some(k) = kernel {
        let _ = writeln!(s, "base    {k}; interventions, head, gradients and optimiser in f32");
    }
    let head = plan.head_parameters();
    let task = match r.task.kind {
        TaskKind::Classification => format!("classification, {} labels, {:?} pooling", r.task.num_labels, r.task.pooling).to_lowercase(),
        TaskKind::CausalLm => "causal_lm".to_string(),
    };
    let _ = writeln!(s, "task    {task}");
    // `train.batch_size` is the global batch: under mpirun/srun each rank trains its share.
    let batch = r.train.batch_size;
    match reft_core::dist::world::launch().filter(|l| l.world_size > 1) {
        Some(l) => {
            let (lo, hi) = (batch / l.world_size, batch.div_ceil(l.world_size));
            let per_rank = if lo == hi { format!("{lo}") } else { format!("{lo}-{hi}") };
            let _ = writeln!(s, "batch   {batch} global, {per_rank} per rank over {} ranks ({})", l.world_size, l.source);
        }
        None => {
            let _ = writeln!(s, "batch   {batch} (one process; under mpirun/srun the global batch, split over the ranks)");
        }
    }
    let _ = writeln!(s);
    let rows: Vec<[String; 5]> = plan
        .interventions
        .iter()
        .map(|p| {
            [
                p.entry.to_string(),
                p.site.to_string(),
                p.factory.name.to_string(),
                p.positions.to_string(),
                thousands(p.trainable),
            ]
        })
        .collect();
    let header = ["#", "hook", "plugin", "positions", "trainable"];
    let mut w = header.map(|h| h.len());
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |c: &[String; 5]| {
        format!("{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>w4$}\n", c[0], c[1], c[2], c[3], c[4],
            w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4])
    };
    if rows.is_empty() {
        let _ = writeln!(s, "no interventions: only the task head trains");
    } else {
        s.push_str(&line(&header.map(String::from)));
        for row in &rows {
            s.push_str(&line(row));
        }
        let _ = writeln!(s, "interventions: {} trainable", thousands(plan.total_trainable()));
    }
    let total = plan.total_trainable() + head;
    if head > 0 {
        let _ = writeln!(s, "task head: {} trainable", thousands(head));
    }
    let _ = writeln!(
        s,
        "total trainable: {} ({:.4}% of the base model's {})",
        thousands(total),
        100.0 * total as f64 / base.max(1) as f64,
        thousands(base)
    );
    s
}
