//! The sweep file: a base recipe, the values to try for recipe keys (a grid, or a seeded
//! random search), fixed overrides, and seeds; expanded into configurations, each a set of
//! `--set` overrides. Every key is checked against the recipe before anything trains, and an
//! error names the sweep file's line and column.

use crate::error::{Error, Location, Result};
use crate::recipe::LoadedRecipe;
use crate::rng::SeededRng;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A value a swept key takes.
pub type Value = serde_yaml::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// The base recipe, relative to the sweep file; or a list of them, each a configuration
    /// of its own (combined with the grid or random draws: every key must apply to each).
    pub recipe: Recipes,
    /// `train.seed` values: every configuration trains once per seed (default: 42).
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Overrides every trial gets (`train.epochs: 10`).
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    /// Every combination of these values.
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<Value>>,
    /// Or `trials` configurations drawn with `seed`.
    #[serde(default)]
    pub random: Option<RandomSearch>,
    /// Stop hopeless trials early by the median rule.
    #[serde(default)]
    pub early_stop: Option<EarlyStopRule>,
}

/// The median stopping rule (as in Vizier and Optuna's median pruner): a trial whose dev
/// score after epoch `after_epoch` is below the median of the earlier trials' scores after
/// that epoch stops there, once at least `min_trials` trials have one. It keeps its best
/// epoch so far and is evaluated and recorded like the others, marked as stopped.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopRule {
    /// 1-based.
    pub after_epoch: usize,
    #[serde(default = "default_min_trials")]
    pub min_trials: usize,
}

fn default_min_trials() -> usize {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Recipes {
    One(String),
    Many(Vec<String>),
}

impl Recipes {
    fn list(&self) -> Vec<String> {
        match self {
            Recipes::One(r) => vec![r.clone()],
            Recipes::Many(rs) => rs.clone(),
        }
    }
}

/// The pseudo-key that names a configuration's recipe when a sweep has several.
pub const RECIPE_KEY: &str = "recipe";

fn default_seeds() -> Vec<u64> {
    vec![42]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomSearch {
    pub trials: usize,
    #[serde(default)]
    pub seed: u64,
    pub params: BTreeMap<String, Distribution>,
}

/// Where a random search draws a key's value from: a mapping with exactly one of these keys
/// (`{ log_uniform: [5.0e-4, 1.0e-2] }`). serde_yaml reads enum variants as YAML tags
/// (`!log_uniform`), so the mapping goes through [`DistributionKeys`].
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "DistributionKeys")]
pub enum Distribution {
    /// One of these values, each as likely.
    Choice(Vec<Value>),
    /// A float in `[lo, hi)`.
    Uniform([f64; 2]),
    /// A float whose logarithm is uniform in `[ln lo, ln hi)` (learning rates).
    LogUniform([f64; 2]),
    /// An integer in `lo..=hi`.
    IntUniform([i64; 2]),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributionKeys {
    #[serde(default)]
    choice: Option<Vec<Value>>,
    #[serde(default)]
    uniform: Option<[f64; 2]>,
    #[serde(default)]
    log_uniform: Option<[f64; 2]>,
    #[serde(default)]
    int_uniform: Option<[i64; 2]>,
}

impl TryFrom<DistributionKeys> for Distribution {
    type Error = String;
    fn try_from(k: DistributionKeys) -> std::result::Result<Self, String> {
        let mut found: Vec<Distribution> = Vec::new();
        found.extend(k.choice.map(Distribution::Choice));
        found.extend(k.uniform.map(Distribution::Uniform));
        found.extend(k.log_uniform.map(Distribution::LogUniform));
        found.extend(k.int_uniform.map(Distribution::IntUniform));
        match found.len() {
            1 => Ok(found.remove(0)),
            n => Err(format!("give exactly one of `choice`, `uniform`, `log_uniform`, `int_uniform` (found {n})")),
        }
    }
}

/// One point of the search: the swept keys and their values (fixed overrides and the seed
/// come on top).
pub type Config = BTreeMap<String, Value>;

/// A parsed, checked sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub path: PathBuf,
    /// The base recipes (one, unless the file lists several).
    pub recipes: Vec<PathBuf>,
    pub seeds: Vec<u64>,
    pub set: BTreeMap<String, Value>,
    pub configs: Vec<Config>,
    /// Which of `recipes` each configuration trains.
    pub config_recipe: Vec<usize>,
    pub early_stop: Option<EarlyStopRule>,
}

/// `key=value` for `--set`: the value as JSON, which YAML reads back as the same value.
pub fn override_arg(key: &str, value: &Value) -> String {
    format!("{key}={}", serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
}

/// A value as a table cell: `0.001`, `f1+l1`, `[2,4]`.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

impl Sweep {
    pub fn load(path: &Path) -> Result<Sweep> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Sweep> {
        let at = |line: usize, column: usize| Some(Location { file: path.to_path_buf(), line, column });
        let fail = |location: Option<Location>, message: String| Error::Recipe { file: path.to_path_buf(), location, message };
        let file: SweepFile = serde_yaml::from_str(text).map_err(|e| {
            let loc = e.location().and_then(|l| at(l.line(), l.column()));
            fail(loc, format!("sweep file: {e}"))
        })?;
        let key_at = |key: &str| locate_key(text, key).and_then(|(l, c)| at(l, c));
        if file.seeds.is_empty() {
            return Err(fail(key_at("seeds"), "`seeds` is empty: give at least one train.seed".into()));
        }
        for key in file.set.keys().chain(file.grid.keys()).chain(file.random.iter().flat_map(|r| r.params.keys())) {
            if key == "train.seed" {
                return Err(fail(key_at(key), "`train.seed` is set by `seeds:`, not swept or fixed here".into()));
            }
        }
        if let Some((k, _)) = file.grid.iter().find(|(_, v)| v.is_empty()) {
            return Err(fail(key_at(k), format!("grid key `{k}` has no values")));
        }
        if let Some(rule) = &file.early_stop {
            if rule.after_epoch == 0 {
                return Err(fail(key_at("after_epoch"), "`early_stop.after_epoch` counts from 1: the first epoch is 1".into()));
            }
            if rule.min_trials == 0 {
                return Err(fail(key_at("min_trials"), "`early_stop.min_trials` must be at least 1: the median of no trials is undefined".into()));
            }
        }
        if !file.grid.is_empty() && file.random.is_some() {
            return Err(fail(key_at("random"), "a sweep is a `grid:` or a `random:` search, not both".into()));
        }
        let configs = match &file.random {
            Some(r) => {
                if r.trials == 0 {
                    return Err(fail(key_at("trials"), "`random.trials` must be at least 1".into()));
                }
                for (k, d) in &r.params {
                    let bad = match d {
                        Distribution::Choice(v) => v.is_empty().then(|| "`choice` has no values".to_string()),
                        Distribution::Uniform([lo, hi]) if !(lo < hi) => Some(format!("`uniform` needs lo < hi, got [{lo}, {hi}]")),
                        Distribution::LogUniform([lo, hi]) if !(*lo > 0.0 && lo < hi) => Some(format!("`log_uniform` needs 0 < lo < hi, got [{lo}, {hi}]")),
                        Distribution::IntUniform([lo, hi]) if lo > hi => Some(format!("`int_uniform` needs lo ≤ hi, got [{lo}, {hi}]")),
                        _ => None,
                    };
                    if let Some(m) = bad {
                        return Err(fail(key_at(k), format!("`{k}`: {m}")));
                    }
                }
                draw(r)
            }
            None => grid(&file.grid),
        };
        let names = file.recipe.list();
        if names.is_empty() {
            return Err(fail(key_at("recipe"), "`recipe` is an empty list: name at least one recipe".into()));
        }
        let mut recipes = Vec::new();
        for name in &names {
            let recipe = path.parent().unwrap_or(Path::new(".")).join(name);
            if !recipe.is_file() {
                return Err(fail(key_at("recipe"), format!("no recipe at {}", recipe.display())));
            }
            recipes.push(recipe);
        }
        // Several recipes: each configuration once per recipe, the recipe as a swept key.
        let (configs, config_recipe) = if names.len() > 1 {
            let mut all = Vec::new();
            let mut which = Vec::new();
            for (r, name) in names.iter().enumerate() {
                for c in &configs {
                    let mut c = c.clone();
                    c.insert(RECIPE_KEY.to_string(), Value::from(name.clone()));
                    all.push(c);
                    which.push(r);
                }
            }
            (all, which)
        } else {
            let n = configs.len();
            (configs, vec![0; n])
        };
        let sweep = Sweep { path: path.to_path_buf(), recipes, seeds: file.seeds, set: file.set, configs, config_recipe, early_stop: file.early_stop };
        sweep.check(text)?;
        Ok(sweep)
    }

    /// Every trial's overrides, checked against the recipe now (one key at a time first, so
    /// an error points at the key), not after hours of training.
    fn check(&self, text: &str) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for recipe in &self.recipes {
            let base = std::fs::read_to_string(recipe).map_err(|e| Error::io(recipe, e))?;
            let singles = self.set.iter().chain(self.configs.iter().flat_map(|c| c.iter())).filter(|(k, _)| *k != RECIPE_KEY);
            for (key, value) in singles {
                let arg = override_arg(key, value);
                if !seen.insert((recipe.clone(), arg.clone())) {
                    continue;
                }
                plan(recipe, &base, &[arg.clone()]).map_err(|e| Error::Recipe {
                    file: self.path.clone(),
                    location: locate_key(text, key).map(|(line, column)| Location { file: self.path.clone(), line, column }),
                    message: format!("`{key}: {}` does not apply to {}: {e}", show(value), recipe.display()),
                })?;
            }
        }
        for (i, _) in self.configs.iter().enumerate() {
            let args = self.overrides(i, self.seeds[0]);
            let recipe = self.recipe(i);
            let base = std::fs::read_to_string(recipe).map_err(|e| Error::io(recipe, e))?;
            plan(recipe, &base, &args).map_err(|e| Error::Recipe {
                file: self.path.clone(),
                location: None,
                message: format!("configuration {i} ({}) does not make a valid recipe: {e}", self.describe(i)),
            })?;
        }
        Ok(())
    }

    /// The base recipe of configuration `config`.
    pub fn recipe(&self, config: usize) -> &Path {
        &self.recipes[self.config_recipe[config]]
    }

    /// The recipes, for a heading: `a.yaml` or `a.yaml, b.yaml`.
    pub fn recipes_display(&self) -> String {
        self.recipes.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// The swept keys' `--set` overrides of configuration `config` (the recipe pseudo-key left out).
    pub fn config_overrides(&self, config: usize) -> Vec<String> {
        self.configs[config].iter().filter(|(k, _)| *k != RECIPE_KEY).map(|(k, v)| override_arg(k, v)).collect()
    }

    /// The `--set` overrides of configuration `config` with `seed`.
    pub fn overrides(&self, config: usize, seed: u64) -> Vec<String> {
        let mut out: Vec<String> = self.set.iter().map(|(k, v)| override_arg(k, v)).collect();
        out.extend(self.config_overrides(config));
        out.push(format!("train.seed={seed}"));
        out
    }

    /// `train.lr=0.001, interventions[0].rank=4` (or `base recipe` when nothing is swept).
    pub fn describe(&self, config: usize) -> String {
        let c = &self.configs[config];
        if c.is_empty() {
            return "base recipe".into();
        }
        c.iter().map(|(k, v)| format!("{k}={}", show(v))).collect::<Vec<_>>().join(", ")
    }

    /// The keys that vary between configurations.
    pub fn swept_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.configs.iter().flat_map(|c| c.keys().cloned()).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// The recipe with these overrides, planned (hooks, plugins and options checked against the
/// model's config; no weights are read).
fn plan(recipe: &Path, text: &str, overrides: &[String]) -> Result<crate::recipe::Plan> {
    crate::recipe::Plan::new(LoadedRecipe::parse_with_overrides(recipe, text, overrides)?)
}

/// Every combination of the grid's values (one empty configuration for an empty grid).
fn grid(grid: &BTreeMap<String, Vec<Value>>) -> Vec<Config> {
    let mut configs = vec![Config::new()];
    for (key, values) in grid {
        configs = configs
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut next = c.clone();
                    next.insert(key.clone(), v.clone());
                    next
                })
            })
            .collect();
    }
    configs
}

/// `r.trials` configurations from one seeded generator (the same file draws the same trials).
fn draw(r: &RandomSearch) -> Vec<Config> {
    let mut rng = SeededRng::new(r.seed);
    let mut unit = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (0..r.trials)
        .map(|_| {
            r.params
                .iter()
                .map(|(k, d)| {
                    let u = unit();
                    let v = match d {
                        Distribution::Choice(vals) => vals[((u * vals.len() as f64) as usize).min(vals.len() - 1)].clone(),
                        Distribution::Uniform([lo, hi]) => Value::from(round_sig(lo + u * (hi - lo))),
                        Distribution::LogUniform([lo, hi]) => Value::from(round_sig((lo.ln() + u * (hi.ln() - lo.ln())).exp())),
                        Distribution::IntUniform([lo, hi]) => Value::from(lo + ((u * (hi - lo + 1) as f64) as i64).min(hi - lo)),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .collect()
}

/// Four significant digits: a drawn learning rate reads `0.003162`, not 17 digits of noise.
fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// 1-based line and column of `key` as a mapping key in the sweep file's text.
fn locate_key(text: &str, key: &str) -> Option<(usize, usize)> {
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        for form in [key.to_string(), format!("\"{key}\""), format!("'{key}'")] {
            if let Some(rest) = trimmed.strip_prefix(&form) {
                if rest.trim_start().starts_with(':') {
                    return Some((i + 1, indent + 1));
                }
            }
        }
        // Keys inside a flow mapping (`grid: { train.lr: [...] }`).
        if let Some(k) = line.find(&format!("{key}:")) {
            let before = line[..k].trim_end();
            if before.ends_with('{') || before.ends_with(',') {
                return Some((i + 1, k + 1));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_is_every_combination_and_a_random_search_repeats_with_its_seed() {
        let mut g = BTreeMap::new();
        g.insert("a".to_string(), vec![Value::from(1), Value::from(2)]);
        g.insert("b".to_string(), vec![Value::from("x"), Value::from("y"), Value::from("z")]);
        let configs = grid(&g);
        assert_eq!(configs.len(), 6);
        let distinct: std::collections::BTreeSet<String> = configs.iter().map(|c| format!("{c:?}")).collect();
        assert_eq!(distinct.len(), 6);

        let mut params = BTreeMap::new();
        params.insert("lr".to_string(), Distribution::LogUniform([5e-4, 1e-2]));
        params.insert("rank".to_string(), Distribution::IntUniform([1, 16]));
        let r = RandomSearch { trials: 50, seed: 7, params };
        let (a, b) = (draw(&r), draw(&r));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        for c in &a {
            let lr = c["lr"].as_f64().unwrap();
            let rank = c["rank"].as_i64().unwrap();
            assert!((5e-4..=1e-2).contains(&lr) && (1..=16).contains(&rank), "{c:?}");
        }
        let ranks: std::collections::BTreeSet<i64> = a.iter().map(|c| c["rank"].as_i64().unwrap()).collect();
        assert!(ranks.len() > 8, "50 draws of 1..=16 hit only {ranks:?}");
        let other = draw(&RandomSearch { seed: 8, ..r.clone() });
        assert_ne!(format!("{a:?}"), format!("{other:?}"));
    }

    #[test]
    fn keys_are_found_in_block_and_flow_mappings() {
        let text = "recipe: r.yaml\ngrid:\n  train.lr: [1, 2]\n  \"interventions[0].rank\": [1]\nset: { train.epochs: 2 }\n";
        assert_eq!(locate_key(text, "train.lr"), Some((3, 3)));
        assert_eq!(locate_key(text, "interventions[0].rank"), Some((4, 3)));
        assert_eq!(locate_key(text, "train.epochs"), Some((5, 8)));
        assert_eq!(locate_key(text, "nope"), None);
    }
}
