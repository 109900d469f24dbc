//! The CLI's training reporter: a progress bar with loss and examples/s, and one line per
//! epoch with the dev metrics.

use indicatif::{ProgressBar, ProgressStyle};
use reft_core::task::metrics::TaskMetrics;
use reft_core::train::Reporter;

pub struct BarReporter {
    bar: Option<ProgressBar>,
    smoothed_loss: Option<f64>,
    /// Without a terminal (CI logs, `> file`) a bar draws nothing: print a line instead
    /// every this many updates.
    plain_every: Option<usize>,
    total: usize,
}

impl BarReporter {
    pub fn new() -> Self {
        use std::io::IsTerminal;
        let plain_every = (!std::io::stderr().is_terminal()).then_some(25);
        BarReporter { bar: None, smoothed_loss: None, plain_every, total: 0 }
    }
    fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}

impl Reporter for BarReporter {
    fn begin(&mut self, total: usize, start: usize) {
        self.total = total;
        if self.plain_every.is_some() {
            eprintln!("training: {total} updates ({start} done)");
            return;
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} updates, epoch {prefix} {msg} (eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(start as u64);
        self.bar = Some(bar);
    }
    fn step(&mut self, step: usize, epoch: usize, loss: f64, eps: f64) {
        let s = self.smoothed_loss.map_or(loss, |p| 0.9 * p + 0.1 * loss);
        self.smoothed_loss = Some(s);
        if let Some(every) = self.plain_every {
            if step % every == 0 || step == self.total {
                eprintln!("update {step}/{}, epoch {}: loss {s:.4}, {eps:.0} examples/s", self.total, epoch + 1);
            }
        }
        if let Some(b) = &self.bar {
            b.set_position(step as u64);
            b.set_prefix((epoch + 1).to_string());
            b.set_message(format!("loss {s:.4}, {eps:.0} ex/s"));
        }
    }
    fn epoch(&mut self, epoch: usize, dev: &TaskMetrics, best: bool) {
        let best = if best { " (best so far, saved)" } else { "" };
        match dev {
            TaskMetrics::Classification(dev) => self.println(&format!(
                "epoch {}: dev accuracy {:.2}%, macro-F1 {:.2}%, loss {:.4}{best}",
                epoch + 1,
                100.0 * dev.accuracy,
                100.0 * dev.macro_f1,
                dev.loss,
            )),
            TaskMetrics::CausalLm(dev) => self.println(&format!(
                "epoch {}: eval response loss {:.4}, perplexity {:.3} ({} tokens){best}",
                epoch + 1,
                dev.loss,
                dev.perplexity,
                dev.tokens,
            )),
        }
    }
    fn message(&mut self, line: &str) {
        self.println(line);
    }
    fn end(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
