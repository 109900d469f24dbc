//! How training tells the outside world what it is doing. Core never prints: the CLI
//! passes a reporter that draws a progress bar; tests pass [`Silent`].

use crate::task::metrics::TaskMetrics;

pub trait Reporter {
    /// Training is about to run updates `start..total`.
    fn begin(&mut self, _total_steps: usize, _start_step: usize) {}
    /// After update `step` (1-based).
    fn step(&mut self, _step: usize, _epoch: usize, _loss: f64, _examples_per_sec: f64) {}
    /// After the dev evaluation of `epoch` (0-based).
    fn epoch(&mut self, _epoch: usize, _dev: &TaskMetrics, _best: bool) {}
    /// A line of information (cache built, checkpoint written, …).
    fn message(&mut self, _line: &str) {}
    fn end(&mut self) {}
}

pub struct Silent;
impl Reporter for Silent {}
