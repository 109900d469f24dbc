//! reft-core: the pieces every reft tool stands on.
//!
//! Data flows one way: recipe -> resolved plan -> backbone with attached interventions
//! -> trainer -> adapter artifact -> exporter -> runtime. No module reaches back up that chain:
//! each module stands on a floor and imports only from lower ones (docs/architecture.md;
//! `core/tests/layering.rs` enforces it). From the ground up:
//!
//! 0. `error`
//! 1. `io`, `rng`, `alloc`, `device`, `cache`, `batch`
//! 2. `ops` (fused kernels) 3. `nn` (frozen modules)
//! 4. `hooks` (sites, positions, the forward `Hooks` trait)
//! 5. `onnx` (graph vocabulary) 6. `intervention` (trait, registry, attach) 7. `plugin`
//! 8. `model` (backbones and their ONNX nodes) 9. `deploy`, `generate`
//! 10. `recipe` 11. `data` 12. `task` 13. `collect`, `adapter` 14. `train`
//! 15. `export`, `sweep` (many trainings, selected by dev) 16. `runtime`

pub mod adapter;
pub mod alloc;
pub mod batch;
pub mod cache;
pub mod collect;
pub mod data;
pub mod deploy;
pub mod device;
pub mod dist;
pub mod error;
pub mod export;
pub mod generate;
pub mod hooks;
pub mod intervention;
pub mod io;
pub mod model;
pub mod nn;
pub mod onnx;
pub mod ops;
pub mod plugin;
pub mod recipe;
pub mod rng;
pub mod runtime;
pub mod sweep;
pub mod task;
pub mod train;

pub use error::{Error, Result};

/// Re-exported so plugins build against exactly the candle the host uses.
pub use candle_core;
pub use candle_nn;
pub use inventory;
pub use serde_yaml;
