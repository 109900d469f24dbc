//! `reft collect`: capture representations at hook points (pyvene's "collect").

use anyhow::Context;
use reft_core::collect::Collector;
use reft_core::hooks::{HookPattern, HookSurface};
use reft_core::model::{self, NoHooks};
use reft_core::recipe::{LoadedRecipe, Plan};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model folder (config.json, model.safetensors, tokenizer.json). Defaults to the
    /// recipe's model when --recipe is given.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Apply this recipe's interventions (at their initial weights) while collecting.
    #[arg(long, conflicts_with = "adapter")]
    recipe: Option<PathBuf>,
    /// Apply a trained adapter while collecting: a `reft train` folder or an HF PEFT LoRA
    /// folder (`adapter_config.json`).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Hook points to capture, e.g. "layers[*].block_output" (repeatable).
    #[arg(long = "hooks", required = true)]
    hooks: Vec<String>,
    /// Input text (repeatable). Without any, one text per line is read from stdin.
    #[arg(long)]
    text: Vec<String>,
    /// Truncate each text to this many tokens.
    #[arg(long, default_value_t = 512)]
    max_length: usize,
    /// Output safetensors file: one `[batch, seq, width]` tensor per hook, named by its
    /// canonical hook name, plus `input_ids` and `attention_mask`.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let plan = match &args.recipe {
        Some(r) => Some(Plan::new(LoadedRecipe::load(r)?)?),
        None => None,
    };
    let device = candle_core::Device::Cpu;
    let loaded = match &args.adapter {
        Some(dir) => Some(reft_core::adapter::load(dir, args.model.as_deref(), &device)?),
        None => None,
    };
    let model_dir = match (&args.model, &plan, &loaded) {
        (Some(m), _, _) => m.clone(),
        (None, Some(p), _) => p.model_dir.clone(),
        (None, None, Some(l)) => l.model_dir.clone(),
        (None, None, None) => anyhow::bail!("say which model: --model DIR, --recipe RECIPE or --adapter DIR"),
    };
    let texts = if args.text.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()
            .context("reading texts from stdin")?
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect()
    } else {
        args.text.clone()
    };
    if texts.is_empty() {
        anyhow::bail!("no input text: pass --text or pipe one text per line");
    }

    let backbone = model::load(&model_dir, candle_core::DType::F32, &device)?;
    let tokenizer = model::load_tokenizer(&model_dir)?;
    let mut sites = Vec::new();
    for h in &args.hooks {
        for s in HookPattern::parse(h)?.resolve(backbone.as_ref() as &dyn HookSurface)? {
            if !sites.contains(&s) {
                sites.push(s);
            }
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = tokenizer.batch(&refs, Some(args.max_length), &device)?;

    let built = match &plan {
        Some(p) => Some(p.build_interventions(&device, candle_core::DType::F32, p.recipe.recipe.train.seed)?),
        None => None,
    };
    let interventions = built.as_ref().or(loaded.as_ref().map(|l| &l.interventions));
    let rng = std::cell::RefCell::new(reft_core::rng::SeededRng::new(0));
    let batch_hooks = match interventions {
        Some(i) => Some(i.hooks(&batch, false, candle_core::DType::F32, &rng)?),
        None => None,
    };
    let inner: &dyn reft_core::model::Hooks = match &batch_hooks {
        Some(h) => h,
        None => &NoHooks,
    };
    let collector = Collector::new(sites, inner);
    backbone.forward(&batch, &collector)?;

    let mut tensors: HashMap<String, candle_core::Tensor> = collector
        .into_captured()
        .into_iter()
        .map(|(site, t)| (site.to_string(), t))
        .collect();
    tensors.insert("input_ids".into(), batch.input_ids.clone());
    tensors.insert("attention_mask".into(), batch.attention_mask.clone());
    reft_core::io::save_safetensors_atomic(&tensors, &args.out)?;
    let (b, s) = batch.dims();
    eprintln!(
        "captured {} hook(s) for {b} text(s) of up to {s} tokens -> {}",
        tensors.len() - 2,
        args.out.display()
    );
    Ok(())
}
