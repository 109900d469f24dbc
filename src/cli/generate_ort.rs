//! `reft generate --runtime ort --pipeline DIR`: text from an exported causal-LM pipeline
//! on ONNX Runtime (reft_core::runtime::OrtDecoder), with the same prompt handling, sampling
//! options, streaming and summary line as the candle path in generate.rs.

use anyhow::bail;
use reft_core::generate::{GenerateOptions, Sampling, TextStream};
use reft_core::model::llama::ChatMessage;
use reft_core::runtime::OrtDecoder;
use std::io::Write;
use std::path::PathBuf;

/// Which engine runs `reft generate`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// The model itself, through candle.
    Candle,
    /// An exported pipeline (`reft export`), through ONNX Runtime.
    Ort,
}

/// What generate.rs hands over.
pub struct Request {
    pub runtime: Runtime,
    pub pipeline: Option<PathBuf>,
    /// --model or --adapter was given (the pipeline already holds both).
    pub model_given: bool,
    pub prompt: String,
    pub chat: bool,
    pub system: Option<String>,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
}

pub fn run(req: Request) -> anyhow::Result<()> {
    if req.runtime != Runtime::Ort {
        bail!("--pipeline runs on ONNX Runtime: add --runtime ort (or leave --pipeline out to run the model with candle)");
    }
    let Some(dir) = req.pipeline else {
        bail!("--runtime ort needs --pipeline DIR, a folder written by `reft export --model PATH` or `reft export --adapter DIR` for a decoder");
    };
    if req.model_given {
        bail!("--model/--adapter are for the candle runtime; with --runtime ort the pipeline folder holds the model and its interventions (export another with `reft export`)");
    }
    let mut dec = OrtDecoder::load(&dir, None)?;
    let text = if req.chat {
        let mut msgs: Vec<ChatMessage> = req.system.as_deref().map(|s| vec![ChatMessage::new("system", s)]).unwrap_or_default();
        msgs.push(ChatMessage::new("user", &req.prompt));
        let Some(template) = &dec.chat_template else {
            bail!("{}: the model had no chat template when it was exported; generate without --chat", dir.display());
        };
        template.render(&msgs, true)?
    } else {
        req.prompt
    };
    // A rendered chat prompt carries its own special tokens (as apply_chat_template tokenises it).
    let ids = if req.chat { dec.tokenizer.encode_continuation(&text)? } else { dec.tokenizer.encode(&text, None)? };
    if ids.is_empty() {
        bail!("the prompt is empty");
    }
    let opts = GenerateOptions { max_new_tokens: req.max_new_tokens, sampling: req.sampling, extra_stop_tokens: vec![] };
    let mut stream = TextStream::new(&dec.tokenizer);
    let mut out = std::io::stdout().lock();
    let mut on_token = |t: u32| -> reft_core::Result<()> {
        if let Some(piece) = stream.push(t)? {
            // A closed stdout (`| head`) ends the run quietly rather than in a panic.
            out.write_all(piece.as_bytes()).and_then(|_| out.flush()).map_err(|e| reft_core::Error::Other(format!("stdout: {e}")))?;
        }
        Ok(())
    };
    let gen = dec.lm.generate(&ids, &opts, &mut on_token)?;
    if let Some(rest) = stream.finish()? {
        out.write_all(rest.as_bytes())?;
    }
    writeln!(out)?;
    out.flush()?;
    super::generate::report(&gen);
    Ok(())
}
