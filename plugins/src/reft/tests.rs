use super::*;
use crate::testing::{build, ctx_eval, max_abs, with_spec};
use reft_core::intervention::Intervention;
use reft_core::candle_core::{DType, Device, Tensor};
use reft_core::rng::SeededRng;

#[test]
fn parameter_counts_match_the_formulas() {
    let (d, r) = (384usize, 4usize);
    for (kind, want) in [
        ("loreft", 2 * r * d + r),
        ("noreft", 2 * r * d + r),
        ("consreft", r * d + r),
        ("lobireft", r * d + r),
        ("direft", 2 * r * d + r),
        ("nodireft", 2 * r * d + r),
    ] {
        let m = build(kind, &format!("rank: {r}"), d).unwrap();
        assert_eq!(m.num_trainable(), want, "{kind}");
    }
    assert_eq!(build("loreft", "rank: 4", 384).unwrap().num_trainable(), 3_076);
    assert_eq!(build("noreft", "{rank: 4, add_bias: true}", 384).unwrap().num_trainable(), 2 * 4 * 384 + 8);
}

#[test]
fn loreft_matches_its_formula() {
    let d = 16;
    let m = with_spec("rank: 3", d, |s| LowRankReft::build(Variant::LoReft, s)).unwrap();
    let h = SeededRng::new(5).normal((2, 4, d), 1.0, DType::F32, &Device::Cpu).unwrap();
    let got = m.delta(&h, &ctx_eval()).unwrap();
    // Recompute Rᵀ(Wh + b − Rh) from the named state, independently of the layer code.
    let state = m.state();
    let get = |n: &str| state.iter().find(|v| v.name == n).unwrap().var.as_tensor().clone();
    let (w, b) = (get("source.weight"), get("source.bias"));
    let lr = m.projection_matrix().unwrap();
    let h2 = h.reshape((8, d)).unwrap();
    let inner = (h2.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap()
        - h2.matmul(&lr.t().unwrap()).unwrap())
    .unwrap();
    let want = inner.matmul(&lr).unwrap().reshape((2, 4, d)).unwrap();
    assert!(max_abs(&got, &want) < 1e-5);
}

#[test]
fn bad_options_are_refused() {
    for (kind, opts, needle) in [
        ("loreft", "rank: 0", "rank"),
        ("loreft", "rank: 999", "rank"),
        ("loreft", "{rank: 4, rnak: 2}", "rnak"),
        ("loreft", "{rank: 4, dropout: 1.5}", "dropout"),
        ("loreft", "{rank: 4, add_bias: true}", "add_bias"),
        ("loreft", "{rank: 4, activation: swish}", "swish"),
        ("loreft", "{}", "rank"),
    ] {
        let e = build(kind, opts, 32).err().unwrap_or_else(|| panic!("{opts} should fail")).to_string();
        assert!(e.contains(needle), "{opts}: {e}");
    }
}

#[test]
fn dropout_only_in_training() {
    let m = build("loreft", "{rank: 2, dropout: 0.5}", 8).unwrap();
    let h = Tensor::ones((1, 3, 8), DType::F32, &Device::Cpu).unwrap();
    let a = m.delta(&h, &ctx_eval()).unwrap();
    let b = m.delta(&h, &ctx_eval()).unwrap();
    assert_eq!(max_abs(&a, &b), 0.0);
    let rng = std::cell::RefCell::new(SeededRng::new(1));
    let mask = Tensor::ones((1, 3, 1), DType::F32, &Device::Cpu).unwrap();
    let train = reft_core::intervention::Ctx { mask: &mask, train: true, rng: &rng };
    let c = m.delta(&h, &train).unwrap();
    assert!(max_abs(&a, &c) > 0.1);
}
