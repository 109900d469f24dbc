//! Tests on the real assets in the cache (`reft setup` puts them there). Without them these
//! tests return early, unless REFT_REQUIRE_ASSETS=1 (CI), where a missing asset fails.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::reviews::{self, Counts, Split, MOVIE_SPLIT_COUNTS};
use super::*;

/// The cache if `present` holds there; `None` (skip) otherwise, or a panic under REFT_REQUIRE_ASSETS=1.
fn cache_with(what: &str, present: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let cache = cache_dir();
    if present(&cache) {
        return Some(cache);
    }
    assert!(
        !assets_required(),
        "{REQUIRE_ASSETS_ENV}=1 but {what} is not in the cache {} (set {CACHE_ENV} to use another): run `reft setup` first",
        cache.display()
    );
    eprintln!(
        "note: {what} not in {}; test skipped (run `reft setup`)",
        cache.display()
    );
    None
}

#[test]
fn real_movie_review_split_matches_documented_counts() {
    let Some(cache) = cache_with("the movie-review data", |c| {
        movie_reviews_raw_file(c).is_file()
    }) else {
        return;
    };
    let raw_path = movie_reviews_raw_file(&cache);
    let raw = std::fs::read(&raw_path).unwrap();
    let gt = reviews::parse_ground_truth(&raw, &raw_path).unwrap();
    assert_eq!(gt.examples.len() + gt.dropped_neutral, 10_605);
    assert_eq!(gt.dropped_neutral, 37);
    assert!(!gt.latin1, "the movie-review file is UTF-8");
    assert_eq!(
        Counts::of(&gt.examples),
        Counts {
            pos: 5242,
            neg: 5326
        }
    );

    let parts = reviews::split_movie_reviews(&gt.examples, &raw_path).unwrap();
    for ((split, want), part) in MOVIE_SPLIT_COUNTS.iter().zip(&parts) {
        assert_eq!(Counts::of(part), *want, "{} split", split.name());
    }
    assert_eq!(parts[2].len(), 1054);
    assert_eq!(parts[1].len(), 1057);
    assert_eq!(parts[0].len(), 8457);

    // the TSVs setup wrote are exactly this split
    for (split, part) in Split::ALL.iter().zip(&parts) {
        let written = reviews::read_tsv(&movie_reviews_file(&cache, split.name())).unwrap();
        assert_eq!(&written, part, "{}.tsv", split.name());
    }
    assert!(movie_reviews_dir(&cache).join("SPLIT.md").is_file());

    // the transfer domains (rating-0 sentences dropped: tweets 4, amazon 98, nyt 244)
    for (domain, total) in [("tweets", 4196), ("amazon", 3610), ("nyt", 4946)] {
        let all = reviews::read_tsv(&transfer_file(&cache, domain)).unwrap();
        assert_eq!(all.len(), total, "{domain}");
    }
}

#[test]
fn real_model_and_runtime_files_are_in_place() {
    let Some(cache) = cache_with("all-MiniLM-L6-v2", |c| is_installed(c, Asset::MiniLm)) else {
        return;
    };
    let dir = minilm_dir(&cache);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "1_Pooling/config.json",
    ] {
        assert!(dir.join(f).is_file(), "{} missing", dir.join(f).display());
    }
    let Some(cache) = cache_with("ONNX Runtime", |c| is_installed(c, Asset::OnnxRuntime)) else {
        return;
    };
    let lib = onnxruntime_library(&cache);
    assert!(
        std::fs::metadata(&lib).unwrap().len() > 20_000_000,
        "{}",
        lib.display()
    );
    assert!(onnxruntime_dir(&cache).join("libonnxruntime.so").is_file());
}

/// Full setup (needs pip and the registry) into a fresh folder, or into $REFT_SETUP_TEST_CACHE.
/// Run by hand: `cargo test -p reft-core fresh_setup -- --ignored --nocapture`.
#[test]
#[ignore = "downloads ~200 MB with pip"]
fn fresh_setup_into_temp_cache() {
    let scratch = super::testutil::scratch("fresh-setup"); // removed at the end
    let cache = std::env::var_os("REFT_SETUP_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| scratch.to_path_buf());
    let opts = SetupOptions::new(&cache);
    let start = Instant::now();
    let report = setup(&opts, &mut |l| eprintln!("  {l}")).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("setup took {:.1} s", start.elapsed().as_secs_f64());
    for o in &report.assets {
        assert!(is_installed(&cache, o.asset), "{}", o.asset);
    }
    assert!(minilm_dir(&cache).join("model.safetensors").is_file());
    assert!(onnxruntime_library(&cache).is_file());
    for split in Split::ALL {
        assert!(movie_reviews_file(&cache, split.name()).is_file());
    }
    let again = setup(&opts, &mut |_| {}).unwrap();
    assert!(again.assets.iter().all(|o| o.action == Action::UpToDate));
    eprintln!(
        "second run took {:.3} s",
        again
            .assets
            .iter()
            .map(|o| o.elapsed.as_secs_f64())
            .sum::<f64>()
    );
}
