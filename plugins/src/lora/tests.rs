use crate::testing::{build_linear, ctx_eval, max_abs};
use reft_core::candle_core::{DType, Device, Tensor};
use reft_core::rng::SeededRng;

fn randn(shape: (usize, usize), seed: u64) -> Tensor {
    SeededRng::new(seed).normal(shape, 1.0, DType::F32, &Device::Cpu).unwrap()
}

/// Set every tensor of `m` to fresh random values (B starts at zero, which hides bugs).
fn randomise(m: &dyn reft_core::intervention::Intervention) {
    for (i, v) in m.state().iter().enumerate() {
        let dims = v.var.dims().to_vec();
        v.var.set(&randn((dims[0], dims[1]), 100 + i as u64)).unwrap();
    }
}

#[test]
fn counts_and_starts_at_the_frozen_model() {
    let m = build_linear("lora", "{rank: 8, alpha: 16}", 384, 1536).unwrap();
    assert_eq!(m.num_trainable(), 8 * (384 + 1536));
    let x = SeededRng::new(1).normal((2, 5, 384), 1.0, DType::F32, &Device::Cpu).unwrap();
    let d = m.delta(&x, &ctx_eval()).unwrap();
    assert_eq!(d.dims(), &[2, 5, 1536]);
    assert_eq!(max_abs(&d, &d.zeros_like().unwrap()), 0.0);
}

#[test]
fn a_has_peft_default_bound() {
    let m = build_linear("lora", "{rank: 64}", 400, 10).unwrap();
    let a = &m.state()[0].var;
    let bound = 1.0 / (400f32).sqrt();
    let max = a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(max <= bound && max > 0.9 * bound, "max |A| {max}, bound {bound}");
}

/// The scale is alpha/r (alpha/√r with rslora), checked against a hand-built update with
/// alpha ≠ r so that a scale of 1, alpha or 1/r would all fail.
#[test]
fn delta_is_scaled_b_a_x() {
    for (opts, scale) in [("{rank: 4, alpha: 16}", 4.0), ("{r: 4, lora_alpha: 16, use_rslora: true}", 8.0), ("{rank: 4}", 2.0)] {
        let m = build_linear("lora", opts, 6, 3).unwrap();
        randomise(m.as_ref());
        let s = m.state();
        let (a, b) = (s[0].var.as_tensor(), s[1].var.as_tensor());
        let x = randn((7, 6), 3);
        let want = (x.matmul(&a.t().unwrap()).unwrap().matmul(&b.t().unwrap()).unwrap() * scale).unwrap();
        let got = m.delta(&x, &ctx_eval()).unwrap();
        assert!(max_abs(&got, &want) < 1e-5, "{opts}: {}", max_abs(&got, &want));
    }
}

/// Folding the update into W gives the same output as running it beside W.
#[test]
fn merged_weight_matches_the_unmerged_update() {
    let m = build_linear("lora", "{rank: 3, alpha: 7}", 10, 5).unwrap();
    randomise(m.as_ref());
    let x = randn((9, 10), 4);
    let w = randn((5, 10), 5);
    let unmerged = (x.matmul(&w.t().unwrap()).unwrap() + m.delta(&x, &ctx_eval()).unwrap()).unwrap();
    let merged_w = (&w + m.merged_weight_delta().unwrap().unwrap()).unwrap();
    let merged = x.matmul(&merged_w.t().unwrap()).unwrap();
    assert!(max_abs(&merged, &unmerged) < 1e-5);
}

#[test]
fn bad_options_are_refused_with_the_key() {
    for (opts, key) in [("{rank: 0}", "`rank`"), ("{alpha: -1}", "`alpha`"), ("{dropout: 1.5}", "`dropout`"), ("{rank: 99999999}", "`rank`")] {
        let e = build_linear("lora", opts, 8, 8).err().expect(opts).to_string();
        assert!(e.contains(key), "{opts}: {e}");
    }
    let e = build_linear("lora", "{rnak: 4}", 8, 8).err().unwrap().to_string();
    assert!(e.contains("rnak"), "{e}");
}
