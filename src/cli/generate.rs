//! `reft generate` and `reft chat`: text from a causal LM (a llama GGUF file or folder),
//! optionally with an adapter's interventions applied to the prompt.

use anyhow::{bail, Context};
use reft_core::adapter;
use reft_core::intervention::attach::Interventions;
use reft_core::generate::{generate, GenerateOptions, Generation, Sampling, StopReason, TextStream};
use reft_core::model::llama::{ChatMessage, ChatTemplate};
use reft_core::model::tokenizer::TextTokenizer;
use reft_core::model::{self, Backbone, CausalLm, NoHooks};
use reft_core::rng::SeededRng;
use reft_core::task::causal_lm::PromptFormat;
use std::cell::RefCell;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

mod prompts;

/// What both commands share: the model, and how to sample.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Model: a .gguf file, a folder holding one, or a Hugging Face llama folder
    /// (default: the SmolLM2-135M-Instruct that `reft setup` installs). With --adapter:
    /// the base model to use instead of the one the adapter records.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Adapter folder whose interventions apply to the prompt (its base must be a causal LM).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Stop after this many new tokens.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 = greedy (the default).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling: draw from the most likely tokens whose probabilities sum to this.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Seed of the sampler (same seed, same text).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt; without it, all of stdin.
    prompt: Option<String>,
    /// Wrap the prompt as a user turn of the model's chat template.
    #[arg(long)]
    chat: bool,
    /// With --chat: the system message (default: the adapter's, else the template's own).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    // ---- ONNX Runtime: src/cli/generate_ort.rs ----
    /// The engine: `candle` (the model itself) or `ort` (an exported pipeline, --pipeline).
    #[arg(long, value_enum, default_value_t = super::generate_ort::Runtime::Candle)]
    runtime: super::generate_ort::Runtime,
    /// With --runtime ort: the pipeline folder `reft export` wrote for a decoder.
    #[arg(long)]
    pipeline: Option<PathBuf>,
    // --- causal-LM adapters: many prompts, machine-readable output (see prompts.rs) ---
    /// Generate for every prompt of this file instead of PROMPT: a .jsonl file (the prompt
    /// is the field --field) or text, one prompt per line.
    #[arg(long, conflicts_with = "prompt")]
    prompts: Option<PathBuf>,
    /// With --prompts FILE.jsonl: the field holding the prompt.
    #[arg(long, default_value = "instruction", requires = "prompts")]
    field: String,
    /// Print one JSON object per prompt (prompt, output, token ids, stop reason) instead
    /// of streaming the text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The system message (default: the template's own).
    #[arg(long)]
    system: Option<String>,
}

/// A loaded causal LM with its tokenizer, and the adapter whose hooks apply to prompts.
struct Session {
    backbone: Box<dyn Backbone>,
    interventions: Option<Interventions>,
    tokenizer: TextTokenizer,
    model_path: PathBuf,
    options: GenerateOptions,
    /// How the adapter's prompts were formed in training (causal-LM adapters only).
    trained_format: Option<PromptFormat>,
}

impl Session {
    fn open(args: &ModelArgs) -> anyhow::Result<Session> {
        let device = candle_core::Device::Cpu;
        let mut trained_format = None;
        let (backbone, interventions, model_path) = match &args.adapter {
            Some(dir) => {
                let loaded = adapter::load(dir, args.model.as_deref(), &device)?;
                super::format::print_notes(&loaded.notes);
                if loaded.head.is_some() {
                    eprintln!("note: the adapter's classification head is not used for generation");
                }
                trained_format = prompts::trained_format(&loaded)?;
                (loaded.backbone, Some(loaded.interventions), loaded.model_dir)
            }
            None => {
                let path = args
                    .model
                    .clone()
                    .unwrap_or_else(|| reft_assets::smollm2_dir(&reft_assets::cache_dir()));
                (model::load(&path, candle_core::DType::F32, &device)?, None, path)
            }
        };
        if backbone.as_causal_lm().is_none() {
            bail!("{}: a `{}` model cannot generate text (a decoder such as llama can)", model_path.display(), backbone.arch());
        }
        let tokenizer = model::load_tokenizer(&model_path)?;
        let options = GenerateOptions {
            max_new_tokens: args.max_new_tokens,
            sampling: Sampling::new(args.temperature, args.top_p, args.seed)?,
            extra_stop_tokens: vec![],
        };
        Ok(Session { backbone, interventions, tokenizer, model_path, options, trained_format })
    }

    fn lm(&self) -> &dyn CausalLm {
        self.backbone.as_causal_lm().expect("checked in open")
    }

    /// Generate from `prompt`, streaming the text to stdout; returns the text and the run.
    /// `templated`: the text was rendered by the chat template, which writes its own special
    /// tokens (tokenised as `apply_chat_template` does); raw text gets the tokenizer's.
    fn run(&self, prompt: &str, templated: bool) -> anyhow::Result<(String, Generation)> {
        self.run_to(prompt, templated, true)
    }

    fn encode(&self, prompt: &str, templated: bool) -> anyhow::Result<Vec<u32>> {
        Ok(if templated { self.tokenizer.encode_continuation(prompt)? } else { self.tokenizer.encode(prompt, None)? })
    }

    /// [`Self::run`], streaming to stdout only when `stream_out`.
    fn run_to(&self, prompt: &str, templated: bool, stream_out: bool) -> anyhow::Result<(String, Generation)> {
        let ids = self.encode(prompt, templated)?;
        if ids.is_empty() {
            bail!("the prompt is empty");
        }
        let device = candle_core::Device::Cpu;
        let batch = self.tokenizer.batch_from_ids(&[ids], &device)?;
        let rng = RefCell::new(SeededRng::new(0));
        let mut stream = TextStream::new(&self.tokenizer);
        let mut out = std::io::stdout().lock();
        let mut on_token = |t: u32| -> reft_core::Result<()> {
            if let Some(piece) = stream.push(t)?.filter(|_| stream_out) {
                // A closed stdout (`| head`) ends the run quietly rather than in a panic.
                out.write_all(piece.as_bytes()).and_then(|_| out.flush()).map_err(|e| reft_core::Error::Other(format!("stdout: {e}")))?;
            }
            Ok(())
        };
        let gen = match &self.interventions {
            Some(iv) => {
                let hooks = iv.hooks(&batch, false, candle_core::DType::F32, &rng)?;
                generate(self.lm(), &batch, &hooks, &self.options, &mut on_token)?
            }
            None => generate(self.lm(), &batch, &NoHooks, &self.options, &mut on_token)?,
        };
        if let Some(rest) = stream.finish()?.filter(|_| stream_out) {
            out.write_all(rest.as_bytes())?;
        }
        if stream_out {
            writeln!(out)?;
            out.flush()?;
        }
        Ok((stream.text()?, gen))
    }
}

pub(super) fn report(gen: &Generation) {
    let why = match gen.stop {
        StopReason::StopToken(_) => "end of sequence",
        StopReason::MaxNewTokens => "--max-new-tokens reached",
        StopReason::ContextFull => "context full",
    };
    eprintln!(
        "[{} prompt tokens in {:.2} s; {} new tokens, decoding {:.1} tokens/s; stopped: {why}]",
        gen.prompt_tokens,
        gen.prefill_secs,
        gen.tokens.len(),
        gen.decode_tokens_per_sec()
    );
}

fn template(session: &Session, system: Option<&str>) -> anyhow::Result<(ChatTemplate, Vec<ChatMessage>)> {
    let t = ChatTemplate::for_model(&session.model_path)?;
    // Without --system, the system message the adapter was trained with (if any).
    let system = system.or(match &session.trained_format {
        Some(PromptFormat::Chat { system, .. }) => system.as_deref(),
        _ => None,
    });
    let start = system.map(|s| vec![ChatMessage::new("system", s)]).unwrap_or_default();
    Ok((t, start))
}

pub fn generate_cmd(args: GenerateArgs) -> anyhow::Result<()> {
    if (args.prompts.is_some() || args.json) && (args.runtime == super::generate_ort::Runtime::Ort || args.pipeline.is_some()) {
        bail!("--prompts and --json run on candle only for now; drop --runtime ort/--pipeline, or give one prompt");
    }
    if args.prompts.is_some() || args.json {
        let session = Session::open(&args.model)?;
        return prompts::generate_many(&session, &args);
    }
    let prompt = match args.prompt {
        Some(p) => p,
        None => std::io::read_to_string(std::io::stdin()).context("reading the prompt from stdin")?,
    };
    // ---- ONNX Runtime: src/cli/generate_ort.rs ----
    if args.runtime == super::generate_ort::Runtime::Ort || args.pipeline.is_some() {
        let m = &args.model;
        return super::generate_ort::run(super::generate_ort::Request {
            runtime: args.runtime,
            pipeline: args.pipeline,
            model_given: m.model.is_some() || m.adapter.is_some(),
            prompt,
            chat: args.chat,
            system: args.system,
            max_new_tokens: m.max_new_tokens,
            sampling: Sampling::new(m.temperature, m.top_p, m.seed)?,
        });
    }
    let session = Session::open(&args.model)?;
    // An adapter trained on chat-template prompts gets its prompt the same way.
    let chat = args.chat || matches!(session.trained_format, Some(PromptFormat::Chat { .. }));
    let text = if chat {
        let (t, mut msgs) = template(&session, args.system.as_deref())?;
        msgs.push(ChatMessage::new("user", &prompt));
        t.render(&msgs, true)?
    } else {
        prompt
    };
    let (_, gen) = session.run(&text, chat)?;
    report(&gen);
    Ok(())
}

pub fn chat_cmd(args: ChatArgs) -> anyhow::Result<()> {
    let session = Session::open(&args.model)?;
    let (t, mut msgs) = template(&session, args.system.as_deref())?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("chatting with {} (/exit or Ctrl-D to leave)", session.model_path.display());
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let line = line.trim();
        if line == "/exit" {
            break;
        }
        if line.is_empty() {
            continue;
        }
        msgs.push(ChatMessage::new("user", line));
        // Keep the conversation within the context: drop the oldest exchanges first.
        let budget = session.lm().max_positions().saturating_sub(session.options.max_new_tokens);
        let first = usize::from(msgs.first().is_some_and(|m| m.role == "system"));
        let mut prompt = t.render(&msgs, true)?;
        while session.encode(&prompt, true)?.len() > budget && msgs.len() > first + 1 {
            msgs.drain(first..(first + 2).min(msgs.len() - 1));
            prompt = t.render(&msgs, true)?;
        }
        let (reply, gen) = session.run(&prompt, true)?;
        if interactive {
            report(&gen);
        }
        msgs.push(ChatMessage::new("assistant", reply.trim_end()));
    }
    Ok(())
}
