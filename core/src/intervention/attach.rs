//! Interventions attached to a backbone: turns a plan's instances into the [`Hooks`] a
//! forward pass calls, applying each with its position mask.

use crate::error::{Error, Result};
use crate::hooks::Site;
use crate::intervention::{Ctx, Intervention};
use crate::batch::Batch;
use crate::hooks::Hooks;
use crate::hooks::positions::Positions;
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
        let mut selections: HashMap<String, Selection> = HashMap::new();
        let mut by_site: HashMap<Site, Vec<(usize, String)>> = HashMap::new();
        for (i, a) in self.items.iter().enumerate() {
            let key = a.positions.to_string();
            if !selections.contains_key(&key) {
                selections.insert(key.clone(), Selection::new(a.positions, scope, dtype, device)?);
            }
            by_site.entry(a.site).or_default().push((i, key));
        }
        Ok(BatchHooks {
            owner: self,
            dtype,
            seq_len: s,
            selections,
            by_site,
            train,
            rng,
        })
    }
}

/// The positions one position spec selects in a batch: flat row indices into
/// `[batch * seq]` and the all-ones mask representation interventions see with them, and
/// the `[batch, seq, 1]` 0/1 mask linear-hook interventions see.
struct Selection {
    rows: Tensor,
    ones: Tensor,
    count: usize,
    mask: Tensor,
    /// The same for first-token states `[batch, 1, d]` (`Hooks::first_token_suffices`): the
    /// rows whose position 0 is selected, their all-ones mask, and the mask's column 0.
    first_rows: Tensor,
    first_ones: Tensor,
    first_count: usize,
    first_mask: Tensor,
}

impl Selection {
    fn new(positions: Positions, scope: &[Vec<u32>], dtype: DType, device: &Device) -> Result<Self> {
        let (b, s) = (scope.len(), scope.first().map_or(0, Vec::len));
        let flat: Vec<f32> = positions.mask_rows(scope).into_iter().flatten().collect();
        let rows: Vec<u32> = flat.iter().enumerate().filter(|(_, &m)| m != 0.0).map(|(i, _)| i as u32).collect();
        let first: Vec<u32> = rows.iter().filter(|&&i| i as usize % s.max(1) == 0).map(|&i| i / s.max(1) as u32).collect();
        let (n, n_first) = (rows.len(), first.len());
        let mask = Tensor::from_vec(flat, (b, s, 1), device)?.to_dtype(dtype)?;
        Ok(Selection {
            rows: Tensor::from_vec(rows, n, device)?,
            ones: Tensor::ones((1, n, 1), dtype, device)?,
            count: n,
            first_mask: mask.narrow(1, 0, 1.min(s))?,
            mask,
            first_rows: Tensor::from_vec(first, n_first, device)?,
            first_ones: Tensor::ones((1, n_first, 1), dtype, device)?,
            first_count: n_first,
        })
    }
}

/// The hooks of one batch: the selected positions computed once, interventions by site.
pub struct BatchHooks<'a> {
    owner: &'a Interventions,
    /// The interventions' own dtype (f32 under a bf16/f16 base: mixed precision). States of
    /// another dtype are cast to it at the hook and the change cast back, so parameters,
    /// their arithmetic and gradients stay in this dtype.
    dtype: DType,
    /// The batch's sequence length: states with one position instead are the first tokens
    /// alone (`Hooks::first_token_suffices`).
    seq_len: usize,
    selections: HashMap<String, Selection>,
    by_site: HashMap<Site, Vec<(usize, String)>>,
    train: bool,
    rng: &'a RefCell<SeededRng>,
}

impl BatchHooks<'_> {
    /// A state in the interventions' dtype (a no-op when the base computes in it too).
    fn to_param_dtype(&self, t: Tensor) -> Result<Tensor> {
        Ok(if t.dtype() == self.dtype { t } else { t.to_dtype(self.dtype)? })
    }

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
    /// Each intervention runs on the selected positions alone, gathered into a `[1, n, d]`
    /// batch, and its change is added back at those rows, as pyvene does: `f1` costs one
    /// row per example instead of the whole `[batch, seq, d]` state and its masked
    /// arithmetic, forward and backward. Unselected positions keep `h` exactly.
    fn representation(&self, site: Site, mut h: Tensor) -> Result<Tensor> {
        let Some(list) = self.by_site.get(&site) else { return Ok(h) };
        for (i, key) in list {
            let sel = &self.selections[key];
            let dims = h.dims().to_vec();
            let d = *dims.last().expect("hidden states have a feature dim");
            let flat = h.reshape((h.elem_count() / d, d))?;
            // First-token states `[batch, 1, d]` (the backbone's `[CLS]`-only last layer):
            // edit the rows whose position 0 is selected, as the full state would be.
            let first_tokens = dims.len() == 3 && dims[1] == 1 && self.seq_len > 1;
            let (rows, count, ones) = if first_tokens { (&sel.first_rows, sel.first_count, &sel.first_ones) } else { (&sel.rows, sel.count, &sel.ones) };
            if count == 0 {
                continue;
            }
            let picked = self.to_param_dtype(flat.index_select(rows, 0)?.unsqueeze(0)?)?;
            let ctx = Ctx { mask: ones, train: self.train, rng: self.rng };
            let delta = self.owner.items[*i].module.delta(&picked, &ctx)?;
            if delta.dims() != picked.dims() {
                return Err(self.shape_error(*i, &picked, &delta));
            }
            h = flat.index_add(rows, &delta.squeeze(0)?.to_dtype(flat.dtype())?, 0)?.reshape(dims)?;
        }
        Ok(h)
    }

    fn linear(&self, site: Site, x: &Tensor, mut y: Tensor) -> Result<Tensor> {
        let Some(list) = self.by_site.get(&site) else { return Ok(y) };
        for (i, key) in list {
            let sel = &self.selections[key];
            // The first-token input of a `[CLS]`-only last layer gets the mask's column 0.
            let first_tokens = x.rank() == 3 && x.dim(1)? == 1 && self.seq_len > 1;
            let ctx = Ctx { mask: if first_tokens { &sel.first_mask } else { &sel.mask }, train: self.train, rng: self.rng };
            let delta = self.owner.items[*i].module.delta(&self.to_param_dtype(x.clone())?, &ctx)?;
            if delta.dims() != y.dims() {
                return Err(self.shape_error(*i, &y, &delta));
            }
            let delta = delta.to_dtype(y.dtype())?;
            y = (y + delta)?;
        }
        Ok(y)
    }

    /// Anything but a `block_input` hook: every other hook of a layer either sits on the
    /// keys and values (computed for every token all the same) or acts on one token's own
    /// path after attention, where the first token's edit needs nothing from the others.
    fn first_token_suffices(&self, layer: usize) -> bool {
        !self.by_site.keys().any(|site| site.layer == Some(layer) && site.component == crate::hooks::Component::BlockInput)
    }

    fn inner_hooks(&self, layer: usize) -> Option<Vec<crate::hooks::Component>> {
        use crate::hooks::Component::{BlockInput, BlockOutput};
        Some(self.by_site.keys().filter(|site| site.layer == Some(layer) && !matches!(site.component, BlockInput | BlockOutput)).map(|site| site.component).collect())
    }
}

