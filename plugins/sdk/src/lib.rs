//! reft-sdk: what a run-time plugin builds against.
//!
//! A plugin crate depends on this crate only, declares itself with [`declare_plugin!`], and
//! is built as a `cdylib` in the same workspace, profile and toolchain as the `reft` binary
//! (docs/plugins.md walks through it). `reft --plugin path/to/libmy_plugin.so …`, or
//! `plugins: [path]` in a recipe, loads it: the loader checks the header this macro emits
//! (ABI version and exact build id) before calling any of the plugin's code.

pub use candle_core;
pub use candle_nn;
pub use reft_core;
pub use serde;
pub use serde_yaml;

/// Everything a plugin's `register` function and its intervention usually need.
pub mod prelude {
    pub use candle_core::{DType, Device, Module, Tensor, Var, D};
    pub use reft_core::onnx::Graph;
    pub use reft_core::hooks::HookKind;
    pub use reft_core::intervention::{BuildSpec, Ctx, Intervention, NamedVar, PluginFactory};
    pub use reft_core::plugin::Registrar;
    pub use reft_core::{Error, Result};
}

/// Declare a crate as a reft plugin library. `$register` is a `fn(&mut Registrar)` that
/// calls `Registrar::add` once per plugin:
///
/// ```ignore
/// fn register(r: &mut Registrar) {
///     r.add(PluginFactory { name: "gated_steering", version: env!("CARGO_PKG_VERSION"), … });
/// }
/// reft_sdk::declare_plugin!(register);
/// ```
///
/// It exports two symbols: `REFT_PLUGIN_HEADER`, plain data the host checks first, and
/// `reft_plugin_register`, called only if the header matches the host's build.
#[macro_export]
macro_rules! declare_plugin {
    ($register:path) => {
        #[no_mangle]
        #[used]
        pub static REFT_PLUGIN_HEADER: $crate::reft_core::plugin::PluginHeader =
            $crate::reft_core::plugin::PluginHeader::current();

        #[no_mangle]
        pub fn reft_plugin_register(registrar: &mut $crate::reft_core::plugin::Registrar) {
            let register: fn(&mut $crate::reft_core::plugin::Registrar) = $register;
            register(registrar)
        }
    };
}
