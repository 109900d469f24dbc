//! Capturing representations at hook points (pyvene's "collect"): what interpretability
//! work starts from, and what reft's own parity tests compare.

use crate::hooks::Site;
use crate::model::{Hooks, NoHooks};
use crate::Result;
use candle_core::Tensor;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Records the tensor at each requested site as the forward pass goes by, after any
/// intervention that `inner` applies there. At a linear-module hook it records the output.
pub struct Collector<'a> {
    sites: Vec<Site>,
    inner: &'a dyn Hooks,
    captured: RefCell<BTreeMap<Site, Tensor>>,
}

impl<'a> Collector<'a> {
    pub fn new(sites: Vec<Site>, inner: &'a dyn Hooks) -> Self {
        Collector {
            sites,
            inner,
            captured: RefCell::new(BTreeMap::new()),
        }
    }

    pub fn plain(sites: Vec<Site>) -> Collector<'static> {
        Collector {
            sites,
            inner: &NoHooks,
            captured: RefCell::new(BTreeMap::new()),
        }
    }

    /// What was captured, by site, in site order.
    pub fn into_captured(self) -> BTreeMap<Site, Tensor> {
        self.captured.into_inner()
    }

    fn keep(&self, site: Site, t: &Tensor) {
        if self.sites.contains(&site) {
            self.captured.borrow_mut().insert(site, t.clone());
        }
    }
}

impl Hooks for Collector<'_> {
    fn representation(&self, site: Site, h: Tensor) -> Result<Tensor> {
        let h = self.inner.representation(site, h)?;
        self.keep(site, &h);
        Ok(h)
    }
    fn linear(&self, site: Site, x: &Tensor, y: Tensor) -> Result<Tensor> {
        let y = self.inner.linear(site, x, y)?;
        self.keep(site, &y);
        Ok(y)
    }
}
