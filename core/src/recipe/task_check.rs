//! Checks that tie the task to the rest of a recipe: keys that belong to the other task, a
//! causal LM's need for a decoder, and interventions a causal LM cannot carry. Each error
//! points at the key at fault.

use super::{LoadedRecipe, PlannedIntervention, TaskKind};
use crate::error::Result;
use crate::hooks::HookKind;
use crate::model::ModelInfo;

pub(super) fn check(recipe: &LoadedRecipe, model: &ModelInfo, interventions: &[PlannedIntervention]) -> Result<()> {
    let r = &recipe.recipe;
    let task = &r.task;
    let data = r.data.as_ref();
    match task.kind {
        TaskKind::Classification => {
            let causal_keys = [
                ("task.chat_template", task.chat_template.is_some()),
                ("task.system", task.system.is_some()),
                ("data.prompt", data.is_some_and(|d| d.prompt.is_some())),
                ("data.response", data.is_some_and(|d| d.response.is_some())),
            ];
            if let Some((key, _)) = causal_keys.iter().find(|(_, set)| *set) {
                return Err(recipe.error_at_key(key, format!("`{}` is a `causal_lm` setting; this recipe's task is classification", key.rsplit('.').next().unwrap_or(key))));
            }
        }
        TaskKind::CausalLm => {
            if model.arch != "llama" {
                return Err(recipe.error_at(
                    "task.kind",
                    format!("causal_lm needs a decoder with an LM head (a llama-family model); `model.path` is a `{}` model", model.arch),
                ));
            }
            if task.labels.is_some() {
                return Err(recipe.error_at_key("task.labels", "`labels` names classification labels; a causal_lm task has none"));
            }
            if task.system.is_some() && !task.uses_chat_template() {
                return Err(recipe.error_at_key("task.system", "`system` is a message of the chat template, which `chat_template: false` turns off"));
            }
            if let Some(p) = interventions.iter().find(|p| p.factory.hook_kind == HookKind::Linear) {
                return Err(recipe.error_at(
                    &format!("interventions[{}].kind", p.entry),
                    format!(
                        "`{}` wraps linear modules at every position, but a causal_lm adapter edits the prompt only \
                         (generation runs it in the prefill); use a representation intervention such as `loreft`",
                        p.factory.name
                    ),
                ));
            }
            if interventions.is_empty() {
                return Err(recipe.error_at_key(
                    "interventions",
                    "nothing to train: a causal_lm recipe trains its interventions alone (the LM head stays frozen); add one",
                ));
            }
        }
    }
    Ok(())
}
