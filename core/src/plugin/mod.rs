//! Run-time plugins: intervention plugins built as shared libraries and loaded with
//! `plugins: [path]` in a recipe or `--plugin PATH` on the command line.
//!
//! A plugin library links the `reft-sdk` dylib, the same shared copy of reft-core and candle
//! the `reft` binary links. That matters: a plugin that carried its own candle would number
//! its tensors from its own counter, and backprop (which keys gradients by tensor id) would
//! mix the host's tensors with the plugin's. Because the two sides must be the very same
//! build, the library's [`PluginHeader`] (ABI version and build id) and the SDK symbols it
//! needs are checked, from the file, before any of its code runs, and only then is its registrar called. Libraries are never unloaded: the
//! factories and vtables they hand out must outlive every intervention built from them.
//!
//! - [`header`]: the `#[repr(C)]` header a plugin exports, and this build's id.
//! - [`registrar`]: what a plugin's entry point registers through.
//! - [`inspect`]: the header and needed symbols, read from the file before it is opened.
//! - [`loader`]: opening a library, checking it, registering its plugins.

pub mod header;
mod inspect;
mod loader;
mod registrar;

pub use header::{PluginHeader, ABI_VERSION, BUILD_ID, HEADER_SYMBOL, MAGIC, REGISTER_SYMBOL};
pub use loader::{load, load_all, loaded_libraries, LoadedLibrary};
pub use registrar::Registrar;
