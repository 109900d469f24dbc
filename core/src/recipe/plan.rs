//! Validating a recipe against the registry and the model into a plan: each intervention
//! resolved to concrete hook sites, position masks and a plugin, with its parameter count.

use super::LoadedRecipe;
use crate::error::{Error, Location, Result};
use crate::hooks::{HookKind, HookPattern, HookSurface, Site};
use crate::intervention::attach::Interventions;
use crate::intervention::{self, BuildSpec, Intervention, PluginFactory};
use crate::model::{self, ModelInfo};
use crate::hooks::positions::Positions;
use crate::rng::SeededRng;
use candle_core::{DType, Device};
use std::path::PathBuf;

/// One intervention instance at one site.
pub struct PlannedIntervention {
    /// Index of the recipe entry it came from.
    pub entry: usize,
    /// Unique, stable name: the prefix of its tensors in adapters.
    pub name: String,
    pub factory: &'static PluginFactory,
    pub site: Site,
    pub positions: Positions,
    pub options: serde_yaml::Mapping,
    pub in_dim: usize,
    pub out_dim: usize,
    /// Exact count of trainable scalars.
    pub trainable: usize,
    /// Where the recipe declares it.
    pub location: Option<Location>,
}

impl PlannedIntervention {
    /// Build the intervention, drawing its initial weights from `rng`.
    pub fn build(&self, device: &Device, dtype: DType, rng: &mut SeededRng) -> Result<Box<dyn Intervention>> {
        let mut spec = BuildSpec {
            options: &self.options,
            site: self.site,
            in_dim: self.in_dim,
            out_dim: self.out_dim,
            device,
            dtype,
            rng,
        };
        (self.factory.build)(&mut spec)
    }
}

pub struct Plan {
    pub recipe: LoadedRecipe,
    pub model_dir: PathBuf,
    pub model: ModelInfo,
    pub interventions: Vec<PlannedIntervention>,
}

impl Plan {
    /// Check the recipe against the registry and the model folder's config.
    pub fn new(recipe: LoadedRecipe) -> Result<Plan> {
        let model_dir = recipe.resolve_path("model.path", &recipe.recipe.model.path)?;
        let model = model::inspect(&model_dir)
            .map_err(|e| recipe.error_at("model.path", e.to_string()))?;
        let task = &recipe.recipe.task;
        const MAX_LABELS: usize = 1 << 20;
        if task.kind == crate::recipe::TaskKind::Classification && !(1..=MAX_LABELS).contains(&task.num_labels) {
            return Err(recipe.error_at(
                "task.num_labels",
                format!("`num_labels` must be between 1 and {MAX_LABELS}, got {}", task.num_labels),
            ));
        }
        // Run-time plugins first: the interventions below may name kinds they register.
        for (i, text) in recipe.recipe.plugins.iter().enumerate() {
            let at = format!("plugins[{i}]");
            let path = recipe.resolve_path(&at, text)?;
            crate::plugin::load(&path).map_err(|e| recipe.error_at(&at, e.to_string()))?;
        }
        let mut interventions = Vec::new();
        for (i, spec) in recipe.recipe.interventions.iter().enumerate() {
            interventions.extend(plan_entry(&recipe, i, spec, &model.config)?);
        }
        super::task_check::check(&recipe, &model, &interventions)?;
        super::train_check::check(&recipe, &model)?;
        Ok(Plan {
            recipe,
            model_dir,
            model,
            interventions,
        })
    }

    /// Trainable scalars of the interventions (the task head not included).
    pub fn total_trainable(&self) -> usize {
        self.interventions.iter().map(|p| p.trainable).sum()
    }

    /// Trainable scalars of the task head: a linear classifier `hidden → num_labels` for
    /// classification, none for causal LM (the frozen LM head is reused).
    pub fn head_parameters(&self) -> usize {
        let t = &self.recipe.recipe.task;
        match t.kind {
            crate::recipe::TaskKind::Classification => self.model.config.hidden_size() * t.num_labels + t.num_labels,
            crate::recipe::TaskKind::CausalLm => 0,
        }
    }
}

fn plan_entry(
    recipe: &LoadedRecipe,
    i: usize,
    spec: &super::InterventionSpec,
    surface: &dyn HookSurface,
) -> Result<Vec<PlannedIntervention>> {
    let at = |p: &str| format!("interventions[{i}]{p}");
    let factory = intervention::find(&spec.kind).map_err(|e| recipe.error_at(&at(".kind"), e.to_string()))?;

    let positions = match &spec.positions {
        None => Positions::All,
        Some(text) => {
            let p: Positions = text
                .parse()
                .map_err(|e: Error| recipe.error_at(&at(".positions"), e.to_string()))?;
            if factory.hook_kind == HookKind::Linear && p != Positions::All {
                return Err(recipe.error_at(
                    &at(".positions"),
                    format!("`{}` wraps linear modules and applies at every position; remove `positions`", spec.kind),
                ));
            }
            p
        }
    };

    let sites = resolve_sites(recipe, i, spec, factory, surface)?;

    let location = recipe.source.value(&at("")).map(|(line, column)| Location {
        file: recipe.path.clone(),
        line,
        column,
    });
    let base_name = spec.name.clone().unwrap_or_else(|| format!("{i}.{}", spec.kind));
    let mut out = Vec::new();
    for site in sites {
        let (in_dim, out_dim) = surface
            .component_dims(site.component)
            .expect("resolved sites exist on the model");
        let mut planned = PlannedIntervention {
            entry: i,
            name: format!("{base_name}.{site}"),
            factory,
            site,
            positions,
            options: spec.options.clone(),
            in_dim,
            out_dim,
            trainable: 0,
            location: location.clone(),
        };
        // A dry build on the CPU validates the plugin's options and counts its parameters.
        let probe = planned
            .build(&Device::Cpu, DType::F32, &mut SeededRng::new(0))
            .map_err(|e| option_error(recipe, i, spec, e))?;
        planned.trainable = probe.num_trainable();
        out.push(planned);
    }
    Ok(out)
}

/// The sites an entry names, through `hooks` or through `target` (+ `layers`).
fn resolve_sites(
    recipe: &LoadedRecipe,
    i: usize,
    spec: &super::InterventionSpec,
    factory: &PluginFactory,
    surface: &dyn HookSurface,
) -> Result<Vec<Site>> {
    let at = |p: &str| format!("interventions[{i}]{p}");
    let mut sites: Vec<Site> = Vec::new();
    let mut add = |site: Site| {
        if !sites.contains(&site) {
            sites.push(site);
        }
    };
    match (&spec.hooks, &spec.target) {
        (Some(_), Some(_)) => {
            return Err(recipe.error_at_key(&at(".target"), "give either `hooks` or `target`, not both"));
        }
        (None, None) => {
            return Err(recipe.error_at(
                &at(""),
                format!("`{}` needs `hooks` (e.g. `layers[2].block_output`) or, for linear-module plugins, `target` (e.g. [query, value])", spec.kind),
            ));
        }
        (Some(hooks), None) => {
            if spec.layers.is_some() {
                return Err(recipe.error_at_key(
                    &at(".layers"),
                    "`layers` goes with `target`; with `hooks`, name the layers in the hook (`layers[0,2].attention.query`)",
                ));
            }
            let list = hooks.as_slice();
            if list.is_empty() {
                return Err(recipe.error_at(&at(".hooks"), "`hooks` is empty: name at least one hook point"));
            }
            for (j, text) in list.iter().enumerate() {
                let hook_path = if hooks.is_list() { at(&format!(".hooks[{j}]")) } else { at(".hooks") };
                let resolved = HookPattern::parse(text)
                    .and_then(|p| p.resolve(surface))
                    .map_err(|e| recipe.error_at(&hook_path, e.to_string()))?;
                for site in resolved {
                    if site.kind() != factory.hook_kind {
                        let want = match factory.hook_kind {
                            HookKind::Representation => "a representation such as `layers[2].block_output`",
                            HookKind::Linear => "a linear module such as `layers[*].attention.query`",
                        };
                        return Err(recipe.error_at(
                            &hook_path,
                            format!("`{}` attaches to {want}, but `{site}` is not one", spec.kind),
                        ));
                    }
                    add(site);
                }
            }
        }
        (None, Some(target)) => {
            if factory.hook_kind != HookKind::Linear {
                return Err(recipe.error_at_key(
                    &at(".target"),
                    format!("`target` picks linear modules, but `{}` edits representations: use `hooks`", spec.kind),
                ));
            }
            let layers = spec.layers.as_ref().map(|l| l.to_vec());
            if let Some(ls) = &layers {
                let n = surface.num_layers();
                if let Some(bad) = ls.iter().find(|l| **l >= n) {
                    return Err(recipe.error_at(&at(".layers"), format!("layer {bad} does not exist: the model has layers 0..{}", n.saturating_sub(1))));
                }
                if ls.is_empty() {
                    return Err(recipe.error_at(&at(".layers"), "`layers` is empty: leave it out to take every layer"));
                }
            }
            let picked = super::target::select(target, layers.as_deref(), surface).map_err(|e| {
                let path = match (e.entry, target) {
                    (Some(j), super::Target::Names(_)) => at(&format!(".target[{j}]")),
                    _ => at(".target"),
                };
                recipe.error_at(&path, e.message)
            })?;
            picked.into_iter().for_each(&mut add);
        }
    }
    Ok(sites)
}

/// Point a plugin's complaint at the offending key when the message names one.
fn option_error(recipe: &LoadedRecipe, i: usize, spec: &super::InterventionSpec, e: Error) -> Error {
    let message = e.to_string();
    let key = spec
        .options
        .keys()
        .filter_map(|k| k.as_str())
        .find(|k| message.contains(&format!("`{k}`")));
    match key {
        Some(k) => recipe.error_at_key(&format!("interventions[{i}].{k}"), message),
        None => recipe.error_at(&format!("interventions[{i}]"), message),
    }
}

impl Plan {
    /// Build every planned intervention, attached to its hook ([`Interventions`]). Each
    /// draws its initial weights from its own fork of the seed, in plan order, so the same
    /// recipe and seed give the same weights.
    pub fn build_interventions(&self, device: &Device, dtype: DType, seed: u64) -> Result<Interventions> {
        let mut rng = SeededRng::new(seed);
        let mut built = Interventions::default();
        for p in &self.interventions {
            let mut own = rng.fork();
            built.push(&p.name, p.site, p.positions, p.build(device, dtype, &mut own)?);
        }
        Ok(built)
    }

    /// The lowest layer any intervention touches: everything below it is frozen and fixed.
    pub fn frozen_prefix_layers(&self) -> usize {
        let n = HookSurface::num_layers(&self.model.config);
        self.interventions
            .iter()
            // `embeddings` sits below layer 0: nothing is frozen below it.
            .map(|p| p.site.layer.unwrap_or(0))
            .min()
            .unwrap_or(n)
    }
}
