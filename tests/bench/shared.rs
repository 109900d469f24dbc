//! Helpers the bench binaries use (included with `#[path]`, so it is no target of its own).
#![allow(dead_code)]

use reft_core::model;

/// Peak resident set size of this process (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// Resident memory now, in MB (VmRSS): where a step's memory goes, phase by phase.
#[allow(dead_code)] // not every bench prints phases
pub fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `batch` texts of the real training data, each exactly `len` tokens (texts are joined
/// until long enough, then cut), so every run has the same shape and no padding.
pub fn fixed_batch(batch: usize, len: usize) -> Vec<Vec<u32>> {
    let dir = reft_assets::minilm_dir(&reft_assets::cache_dir());
    let tok = model::load_tokenizer(&dir).expect("run `reft setup` first");
    let data = reft_assets::movie_reviews_file(&reft_assets::cache_dir(), "train");
    let text = std::fs::read_to_string(data).expect("run `reft setup` first");
    let mut texts = text.lines().skip(1).map(|l| l.splitn(3, '\t').nth(2).unwrap_or("").to_string());
    (0..batch)
        .map(|_| {
            let mut ids = vec![101u32];
            while ids.len() < len {
                let t = texts.next().unwrap();
                let e = tok.encode(&t, None).unwrap();
                ids.extend_from_slice(&e[1..e.len() - 1]);
            }
            ids.truncate(len - 1);
            ids.push(102);
            ids
        })
        .collect()
}

/// Proportional set size of this process now (/proc/self/smaps_rollup), in MB: pages shared
/// with other mappings count by share, so a file mapped twice counts once.
pub fn pss_mb() -> f64 {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    rollup
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
