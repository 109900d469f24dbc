//! Built-in reft intervention plugins. Each registers itself with the core registry through
//! `inventory`; a binary links them with `use reft_plugins as _;`.
//!
//! Every plugin has the same shape, so a reader who knows one knows where everything of
//! another lives: `config.rs` (its recipe options), `layer.rs` (its forward), `mod.rs`
//! (registration and tests).

pub mod common;
pub mod linear;
pub mod lora;
pub mod mlp;
pub mod reft;

#[cfg(test)]
mod testing;

/// Force the linker to keep this crate (and so its registrations).
pub fn link() {}
