//! A recipe's data files, read and tokenised the way its task reads them.

use super::causal_lm::{self, PromptFormat};
use super::{Encoded, Targets};
use crate::data::{read_examples, read_pairs, Example, Format};
use crate::error::{Error, Result};
use crate::model;
use crate::recipe::{Plan, TaskKind};

/// Read and tokenise a data file named in the recipe, the way its task reads data.
/// `lm` is the model, needed by causal LM for its end token; `note` hears about responses
/// cut to `data.max_length`.
pub fn encode_file(
    plan: &Plan,
    key: &str,
    file: &str,
    tok: &model::tokenizer::TextTokenizer,
    lm: Option<&dyn model::CausalLm>,
    note: &mut dyn FnMut(&str),
) -> Result<Encoded> {
    let recipe = &plan.recipe;
    let data = recipe.recipe.data.as_ref().expect("caller checked");
    let path = recipe.resolve_path(&format!("data.{key}"), file)?;
    if !path.exists() {
        return Err(recipe.error_at(&format!("data.{key}"), format!("{} does not exist (run `reft setup` for the default data)", path.display())));
    }
    let format = Format::of(&path, data.format)?;
    let task = &recipe.recipe.task;
    match task.kind {
        TaskKind::Classification => {
            let examples: Vec<Example> = read_examples(&path, format, &data.text, &data.label, task.num_labels, task.labels.as_deref())?;
            let ids = examples
                .iter()
                .map(|e| tok.encode(&e.text, Some(data.max_length)))
                .collect::<Result<Vec<_>>>()?;
            Ok(Encoded { ids, targets: Targets::Labels(examples.iter().map(|e| e.label).collect()) })
        }
        TaskKind::CausalLm => {
            let lm = lm.ok_or_else(|| recipe.error_at("task.kind", "causal_lm needs a decoder model"))?;
            let eos = *lm.stop_tokens().first().ok_or_else(|| Error::Other("the model names no end-of-sequence token".into()))?;
            let (prompt_col, response_col) = data.pair_columns();
            let pairs = read_pairs(&path, format, prompt_col, response_col)?;
            let prompts = PromptFormat::new(task.uses_chat_template(), task.system.clone(), &plan.model_dir)?;
            let (encoded, truncated) = causal_lm::encode_pairs(&path, &pairs, tok, &prompts, eos, data.max_length)?;
            if truncated > 0 {
                note(&format!(
                    "{}: {truncated} of {} responses cut to `data.max_length` {} tokens (their end token too)",
                    path.display(),
                    pairs.len(),
                    data.max_length
                ));
            }
            Ok(encoded)
        }
    }
}
