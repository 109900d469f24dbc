//! Argument definitions and dispatch.

mod check;
mod collect;
mod eval;
mod export;
mod format;
mod generate;
mod generate_ort;
mod infer;
mod install;
mod merge;
mod plot;
mod plot_frontier;
mod plot_sweep;
mod plugins;
mod progress;
mod run;
mod setup;
mod sweep;
mod sweep_jobs;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "reft",
    version,
    about = "Representation finetuning (ReFT) and LoRA for frozen transformers",
    long_about = "Representation finetuning (ReFT) and LoRA for frozen transformers.\n\n\
Write a YAML recipe that attaches intervention plugins to hook points of a model, check it,\n\
train it, and use the adapter. Start with `reft run configs/loreft_glue.yaml`, which fetches the\n\
model and data on first use, trains, and prints the metrics."
)]
pub struct Cli {
    /// Load a run-time plugin library (repeatable) before anything else; see docs/plugins.md.
    #[arg(long = "plugin", value_name = "PATH", global = true)]
    plugins: Vec<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole job: fetch what is missing, train a recipe, print its metrics.
    Run(run::Args),
    /// Fetch the default model, data and ONNX Runtime into reft's cache folder.
    Setup(setup::Args),
    /// Install this reft and the shared libraries it runs on under a prefix (PREFIX/bin, PREFIX/lib).
    Install(install::Args),
    /// List the registered intervention plugins.
    Plugins(plugins::Args),
    /// Validate a recipe and print its plan: hooks, positions, plugins, trainable parameters.
    Check(check::Args),
    /// Capture representations at hook points into a safetensors file.
    Collect(collect::Args),
    /// Train a recipe: interventions and head on the frozen model; keeps the best adapter.
    Train(train::Args),
    /// Train a recipe over a grid or random search of overrides and seeds; select by dev; resumable.
    Sweep(sweep::Args),
    /// Evaluate an adapter on a data file: accuracy, or a causal LM's response loss and perplexity.
    Eval(eval::EvalArgs),
    /// Classify texts with an adapter (arguments, or one per stdin line).
    Predict(eval::PredictArgs),
    /// Export an adapter to an ONNX Runtime pipeline: model.onnx, tokenizer.json, pipeline.yaml.
    Export(export::Args),
    /// Classify texts (or score a labelled file) with an exported pipeline on ONNX Runtime.
    Infer(infer::Args),
    /// Serve exported pipelines over HTTP: /v1/predict, OpenAI-style completions, /metrics.
    Serve(crate::serve::Args),
    /// Draw a run's loss and dev-accuracy curves to a PNG.
    Plot(plot::Args),
    /// Fold a LoRA adapter (ours or PEFT's) into the base model's weights.
    Merge(merge::Args),
    /// Continue a prompt with a causal LM (llama GGUF or folder), streaming the text.
    Generate(generate::GenerateArgs),
    /// Chat with a causal LM through its chat template (lines from stdin; /exit to leave).
    Chat(generate::ChatArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    reft_core::plugin::load_all(&cli.plugins)?;
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Setup(a) => setup::run(a),
        Command::Install(a) => install::run(a),
        Command::Plugins(a) => plugins::run(a),
        Command::Check(a) => check::run(a),
        Command::Collect(a) => collect::run(a),
        Command::Train(a) => train::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Eval(a) => eval::eval(a),
        Command::Predict(a) => eval::predict(a),
        Command::Export(a) => export::run(a),
        Command::Infer(a) => infer::run(a),
        Command::Serve(a) => crate::serve::run(a),
        Command::Plot(a) => plot::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Generate(a) => generate::generate_cmd(a),
        Command::Chat(a) => generate::chat_cmd(a),
    }
}
