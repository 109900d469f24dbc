//! `reft generate --prompts FILE` and `--json`: one generation per prompt, printed as it
//! streams or as one JSON object per line — what measuring an adapter's effect on many
//! held-out prompts needs (docs/causal_lm.md) — and the prompt format a causal-LM adapter
//! was trained with, so its prompts are formed (and its positions counted) the same way.

use super::{template, GenerateArgs, Session};
use anyhow::Context;
use reft_core::adapter;
use reft_core::generate::StopReason;
use reft_core::recipe::TaskKind;
use reft_core::task::causal_lm::PromptFormat;
use std::path::Path;

/// The prompt format recorded in a causal-LM adapter's manifest (`None` for others).
pub(super) fn trained_format(loaded: &adapter::Loaded) -> anyhow::Result<Option<PromptFormat>> {
    match &loaded.manifest.task {
        Some(t) if t.kind == TaskKind::CausalLm => Ok(Some(PromptFormat::new(t.chat_template, t.system.clone(), &loaded.model_dir)?)),
        _ => Ok(None),
    }
}

/// Prompts from a file: the `field` of each object of a .jsonl file, else one per line.
pub(super) fn read_prompts(path: &Path, field: &str) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let jsonl = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if !jsonl {
            out.push(line.to_string());
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let p = v.get(field).and_then(|p| p.as_str()).with_context(|| format!("{}: no string field `{field}` (choose one with --field)", at()))?;
        out.push(p.to_string());
    }
    anyhow::ensure!(!out.is_empty(), "{}: no prompts", path.display());
    Ok(out)
}

/// How this run forms prompts: the chat template with `--chat` or for an adapter trained
/// on it (with `--system`, else the adapter's system message, else the template's), or
/// the raw text.
fn format(session: &Session, args: &GenerateArgs) -> anyhow::Result<PromptFormat> {
    if args.chat || matches!(session.trained_format, Some(PromptFormat::Chat { .. })) {
        let (t, start) = template(session, args.system.as_deref())?;
        return Ok(PromptFormat::Chat { template: t, system: start.into_iter().next().map(|m| m.content) });
    }
    Ok(PromptFormat::Raw)
}

pub(super) fn generate_many(session: &Session, args: &GenerateArgs) -> anyhow::Result<()> {
    let prompts = match (&args.prompts, &args.prompt) {
        (Some(file), _) => read_prompts(file, &args.field)?,
        (None, Some(p)) => vec![p.clone()],
        (None, None) => vec![std::io::read_to_string(std::io::stdin()).context("reading the prompt from stdin")?],
    };
    let format = format(session, args)?;
    for prompt in &prompts {
        let templated = matches!(format, PromptFormat::Chat { .. });
        let rendered = format.render(prompt)?;
        let (text, gen) = session.run_to(&rendered, templated, !args.json)?;
        if args.json {
            let stop = match gen.stop {
                StopReason::StopToken(_) => "end_of_sequence",
                StopReason::MaxNewTokens => "max_new_tokens",
                StopReason::ContextFull => "context_full",
            };
            let record = serde_json::json!({
                "prompt": prompt, "prompt_ids": session.encode(&rendered, templated)?,
                "output": text, "token_ids": gen.tokens, "new_tokens": gen.tokens.len(), "stop": stop,
            });
            println!("{record}");
        } else {
            super::report(&gen);
        }
    }
    Ok(())
}
