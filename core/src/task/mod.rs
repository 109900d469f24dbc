//! Task heads and their losses and metrics.

pub mod classification;
pub mod metrics;
