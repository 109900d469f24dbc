//! Interventions attached to a backbone: turns a plan's instances into the [`Hooks`] a
//! forward pass calls, applying each with its position mask.

use crate::error::{Error, Result};
use crate::hooks::Site;
use crate::intervention::{Ctx, Intervention};
use crate::model::{Batch, Hooks};
use crate::positions::Positions;
use crate::recipe::Plan;
use crate::rng::SeededRng;
use candle_core::{DType, Device, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;

pub struct Attached {
    pub name: String,
    pub site: Site,
    pub positions: Positions,
    pub module: Box<dyn Intervention>,
}

/// All interventions of a plan, built and ready to run.
#[derive(Default)]
pub struct Interventions {
    pub items: Vec<Attached>,
}

impl Interventions {
    /// Build every planned intervention. Each draws its initial weights from its own fork of
    /// the seed, in plan order, so the same recipe and seed give the same weights.
    pub fn build(plan: &Plan, device: &Device, dtype: DType, seed: u64) -> Result<Self> {
        let mut rng = SeededRng::new(seed);
        let mut items = Vec::new();
        for p in &plan.interventions {
            let mut own = rng.fork();
            items.push(Attached {
                name: p.name.clone(),
                site: p.site,
                positions: p.positions,
                module: p.build(device, dtype, &mut own)?,
            });
        }
        Ok(Interventions { items })
    }

    pub fn push(&mut self, name: &str, site: Site, positions: Positions, module: Box<dyn Intervention>) {
        self.items.push(Attached {
            name: name.to_string(),
            site,
            positions,
            module,
        });
    }

    pub fn num_trainable(&self) -> usize {
        self.items.iter().map(|a| a.module.num_trainable()).sum()
    }

    /// Hooks for one forward pass over `batch`. `rng` drives dropout in training mode.
    /// Positions (`f1`, `l1`, …) count over the batch's real tokens.
    pub fn hooks<'a>(&'a self, batch: &Batch, train: bool, dtype: DType, rng: &'a RefCell<SeededRng>) -> Result<BatchHooks<'a>> {
        self.hooks_within(batch, &batch.attention_rows, train, dtype, rng)
    }

    /// [`Self::hooks`] with positions counted over the tokens `scope` marks (1) instead of
    /// every real token: a causal-LM batch holds prompt and response, and its interventions
    /// edit the prompt alone, so `l1` is the prompt's last token, as at generation time.
    pub fn hooks_within<'a>(
        &'a self,
        batch: &Batch,
        scope: &[Vec<u32>],
        train: bool,
        dtype: DType,
        rng: &'a RefCell<SeededRng>,
    ) -> Result<BatchHooks<'a>> {
        let (b, s) = batch.dims();
        if scope.len() != b || scope.iter().any(|r| r.len() != s) {
            return Err(Error::Shape {
                context: "position scope of a batch".into(),
                expected: format!("{b} rows of {s}"),
                got: vec![scope.len(), scope.first().map_or(0, |r| r.len())],
            });
        }
        let device = batch.input_ids.device();
        let mut masks: HashMap<String, Tensor> = HashMap::new();
        let mut by_site: HashMap<Site, Vec<(usize, String)>> = HashMap::new();
        for (i, a) in self.items.iter().enumerate() {
            let key = a.positions.to_string();
            if !masks.contains_key(&key) {
                let m = a
                    .positions
                    .mask(scope, device)?
                    .to_dtype(dtype)?
                    .reshape((b, s, 1))?;
                masks.insert(key.clone(), m);
            }
            by_site.entry(a.site).or_default().push((i, key));
        }
        Ok(BatchHooks {
            owner: self,
            masks,
            by_site,
            train,
            rng,
        })
    }
}

/// The hooks of one batch: per-position masks computed once, interventions by site.
pub struct BatchHooks<'a> {
    owner: &'a Interventions,
    masks: HashMap<String, Tensor>,
    by_site: HashMap<Site, Vec<(usize, String)>>,
    train: bool,
    rng: &'a RefCell<SeededRng>,
}

impl BatchHooks<'_> {
    fn shape_error(&self, i: usize, input: &Tensor, out: &Tensor) -> Error {
        let a = &self.owner.items[i];
        Error::Shape {
            context: format!("intervention `{}` ({}) at `{}`", a.name, a.module.kind(), a.site),
            expected: format!("{:?}-compatible output", input.dims()),
            got: out.dims().to_vec(),
        }
    }
}

impl Hooks for BatchHooks<'_> {
    fn representation(&self, site: Site, mut h: Tensor) -> Result<Tensor> {
        let Some(list) = self.by_site.get(&site) else { return Ok(h) };
        for (i, key) in list {
            let mask = &self.masks[key];
            let ctx = Ctx { mask, train: self.train, rng: self.rng };
            let delta = self.owner.items[*i].module.delta(&h, &ctx)?;
            if delta.dims() != h.dims() {
                return Err(self.shape_error(*i, &h, &delta));
            }
            // h' = h + m ⊙ (Φ(h) − h): unedited positions keep h exactly.
            h = (h + delta.broadcast_mul(mask)?)?;
        }
        Ok(h)
    }

    fn linear(&self, site: Site, x: &Tensor, mut y: Tensor) -> Result<Tensor> {
        let Some(list) = self.by_site.get(&site) else { return Ok(y) };
        for (i, key) in list {
            let ctx = Ctx { mask: &self.masks[key], train: self.train, rng: self.rng };
            let delta = self.owner.items[*i].module.delta(x, &ctx)?;
            if delta.dims() != y.dims() {
                return Err(self.shape_error(*i, &y, &delta));
            }
            y = (y + delta)?;
        }
        Ok(y)
    }

    fn touches_layer(&self, layer: usize) -> bool {
        self.by_site.keys().any(|site| site.layer == Some(layer))
    }
}

