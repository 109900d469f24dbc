//! The `train:` and `data:` numbers a recipe may hold, checked when the plan is made, so
//! `reft check` refuses what `reft train` would refuse or could not train (each error names
//! the key and its value).

use super::{LoadedRecipe, TaskKind};
use crate::error::Result;
use crate::model::ModelInfo;

/// The largest learning rate accepted: above this no optimiser setting reft offers trains.
const MAX_LR: f64 = 10.0;

pub(super) fn check(recipe: &LoadedRecipe, model: &ModelInfo) -> Result<()> {
    let r = &recipe.recipe;
    crate::device::validate(&r.model.device).map_err(|e| recipe.error_at("model.device", e.to_string()))?;
    let t = &r.train;
    if t.batch_size == 0 {
        return Err(recipe.error_at("train.batch_size", "`batch_size` must be at least 1"));
    }
    match t.max_steps {
        Some(0) => return Err(recipe.error_at("train.max_steps", "`max_steps` must be at least 1 (leave it out to train `epochs`)")),
        None if t.epochs == 0 => return Err(recipe.error_at("train.epochs", "`epochs` must be at least 1")),
        _ => {}
    }
    if !(t.lr.is_finite() && t.lr > 0.0 && t.lr <= MAX_LR) {
        return Err(recipe.error_at("train.lr", format!("learning rate must be a number in (0, {MAX_LR}], got {}", t.lr)));
    }
    if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
        return Err(recipe.error_at("train.weight_decay", format!("`weight_decay` must be a finite number ≥ 0, got {}", t.weight_decay)));
    }
    if !(0.0..=1.0).contains(&t.warmup_ratio) {
        return Err(recipe.error_at("train.warmup_ratio", format!("`warmup_ratio` must be between 0 and 1, got {}", t.warmup_ratio)));
    }
    if !t.max_grad_norm.is_finite() {
        return Err(recipe.error_at("train.max_grad_norm", format!("`max_grad_norm` must be finite (0 turns clipping off), got {}", t.max_grad_norm)));
    }
    if let Some(data) = &r.data {
        let limit = model.config.max_positions();
        if data.max_length == 0 || data.max_length > limit {
            return Err(recipe.error_at(
                "data.max_length",
                format!("`max_length` must be between 1 and the model's {limit} positions, got {}", data.max_length),
            ));
        }
    }
    let task = &r.task;
    if let Some(p) = task.classifier_dropout {
        if task.kind != TaskKind::Classification {
            return Err(recipe.error_at("task.classifier_dropout", "`classifier_dropout` applies to a classifier's head; a causal LM has none"));
        }
        if !(0.0..1.0).contains(&p) {
            return Err(recipe.error_at("task.classifier_dropout", format!("`classifier_dropout` must be in [0, 1), got {p}")));
        }
    }
    if task.kind == TaskKind::Classification {
        if task.num_labels < 2 {
            return Err(recipe.error_at("task.num_labels", format!("a classifier needs at least 2 labels, got {}", task.num_labels)));
        }
        if let Some(labels) = &task.labels {
            if labels.len() != task.num_labels {
                return Err(recipe.error_at_key(
                    "task.labels",
                    format!("{} label names for `num_labels: {}`; give one name per label", labels.len(), task.num_labels),
                ));
            }
        }
    }
    Ok(())
}
