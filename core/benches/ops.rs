//! Forward + backward of one BERT-like layer (MiniLM widths) on the fused ops of
//! `reft_core::ops` against candle's differentiable reference ops, with the gradient taken
//! with respect to the layer input (as when an intervention sits below it).
//!
//! `cargo bench -p reft-core --bench ops` (runs on 2 threads unless RAYON_NUM_THREADS is set;
//! `-- --runs N` for more runs).

use reft_core::candle_core::{DType, Device, Result, Tensor, Var, D};
use reft_core::candle_nn;
use reft_core::ops;
use reft_core::rng::SeededRng;
use std::time::Instant;

const BATCH: usize = 16;
const SEQ: usize = 64;
const D_MODEL: usize = 384;
const HEADS: usize = 12;
const HEAD_DIM: usize = D_MODEL / HEADS;
const INTER: usize = 1536;
const EPS: f64 = 1e-12;

struct Lin {
    w: Tensor,
    /// The same `W`, stored `[in, out]` as the backbones hold it (`nn::Linear::into_gemm_layout`).
    w_gemm: Tensor,
    b: Tensor,
}

struct Layer {
    q: Lin,
    k: Lin,
    v: Lin,
    o: Lin,
    ln1: (Tensor, Tensor),
    up: Lin,
    down: Lin,
    ln2: (Tensor, Tensor),
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// `x.matmul(Wᵀ) + b`, `layer_norm_slow`, `candle_nn::ops::softmax`.
    Slow,
    /// `ops::frozen_linear` (weights in gemm layout), `ops::frozen_layer_norm`,
    /// `ops::softmax_last`.
    Fused,
}

fn lin(rng: &mut SeededRng, out: usize, inp: usize) -> Lin {
    let w = rng.normal((out, inp), 0.05, DType::F32, &Device::Cpu).unwrap();
    Lin {
        w_gemm: w.t().unwrap().contiguous().unwrap().t().unwrap(),
        w,
        b: rng.normal(out, 0.02, DType::F32, &Device::Cpu).unwrap(),
    }
}

fn norm(rng: &mut SeededRng) -> (Tensor, Tensor) {
    let g = (rng.normal(D_MODEL, 0.1, DType::F32, &Device::Cpu).unwrap() + 1.0).unwrap();
    (g, rng.normal(D_MODEL, 0.1, DType::F32, &Device::Cpu).unwrap())
}

impl Path {
    fn linear(self, x: &Tensor, l: &Lin) -> Result<Tensor> {
        match self {
            Path::Slow => reft_core::nn::linear(x, &l.w, Some(&l.b)),
            Path::Fused => ops::frozen_linear(x, &l.w_gemm, Some(&l.b)),
        }
    }
    fn norm(self, x: &Tensor, (g, b): &(Tensor, Tensor)) -> Result<Tensor> {
        match self {
            Path::Slow => candle_nn::ops::layer_norm_slow(x, g, b, EPS as f32),
            Path::Fused => ops::frozen_layer_norm(x, g, b, EPS),
        }
    }
    fn softmax(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Path::Slow => candle_nn::ops::softmax(x, D::Minus1),
            Path::Fused => ops::softmax_last(x),
        }
    }
}

/// One post-norm BERT layer as in `model/bert.rs`: q/k/v projections, masked softmax
/// attention over [16, 12, 64, 64], output projection, LayerNorm, 384→1536→384 MLP with
/// exact GELU, LayerNorm.
fn layer(p: Path, l: &Layer, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let split = |t: Tensor| t.reshape((BATCH, SEQ, HEADS, HEAD_DIM))?.transpose(1, 2)?.contiguous();
    let q = split(p.linear(x, &l.q)?)?;
    let k = split(p.linear(x, &l.k)?)?;
    let v = split(p.linear(x, &l.v)?)?;
    let scores = (q.matmul(&k.t()?)? / (HEAD_DIM as f64).sqrt())?.broadcast_add(mask)?;
    let probs = p.softmax(&scores)?;
    let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((BATCH, SEQ, D_MODEL))?;
    let a = p.norm(&(p.linear(&ctx, &l.o)? + x)?, &l.ln1)?;
    let act = p.linear(&a, &l.up)?.gelu_erf()?;
    p.norm(&(p.linear(&act, &l.down)? + &a)?, &l.ln2)
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Times `f` for both paths, interleaved run by run so drift hits both alike.
fn bench(name: &str, runs: usize, f: &dyn Fn(Path)) {
    for _ in 0..3 {
        f(Path::Slow);
        f(Path::Fused);
    }
    let (mut slow, mut fused) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (p, out) in [(Path::Slow, &mut slow), (Path::Fused, &mut fused)] {
            let t = Instant::now();
            f(p);
            out.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (s, fu) = (median_ms(slow), median_ms(fused));
    println!("{name:<44} {s:>9.2} {fu:>9.2} {:>7.2}x", s / fu);
}

fn main() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Before anything starts rayon's pool; candle reads the same variable.
        std::env::set_var("RAYON_NUM_THREADS", "2");
    }
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(30usize);

    let mut rng = SeededRng::new(0);
    let l = Layer {
        q: lin(&mut rng, D_MODEL, D_MODEL),
        k: lin(&mut rng, D_MODEL, D_MODEL),
        v: lin(&mut rng, D_MODEL, D_MODEL),
        o: lin(&mut rng, D_MODEL, D_MODEL),
        ln1: norm(&mut rng),
        up: lin(&mut rng, INTER, D_MODEL),
        down: lin(&mut rng, D_MODEL, INTER),
        ln2: norm(&mut rng),
    };
    let dev = Device::Cpu;
    let x = Var::from_tensor(&rng.normal((BATCH, SEQ, D_MODEL), 1.0, DType::F32, &dev).unwrap()).unwrap();
    let probe = rng.normal((BATCH, SEQ, D_MODEL), 1.0, DType::F32, &dev).unwrap();
    // Every sequence pads its last (i mod 16) positions.
    let mask: Vec<f32> = (0..BATCH)
        .flat_map(|b| (0..SEQ).map(move |s| if s < SEQ - b % 16 { 0.0 } else { -1e9 }))
        .collect();
    let mask = Tensor::from_vec(mask, (BATCH, 1, 1, SEQ), &dev).unwrap();

    // The two paths agree before anything is timed.
    let run = |p: Path| {
        let out = layer(p, &l, &x, &mask).unwrap();
        let g = out.mul(&probe).unwrap().sum_all().unwrap().backward().unwrap();
        (out, g.get(&x).unwrap().clone())
    };
    let ((ys, gs), (yf, gf)) = (run(Path::Slow), run(Path::Fused));
    let diff = |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    println!(
        "layer [{BATCH}, {SEQ}, {D_MODEL}] f32, {} threads, median of {runs} runs",
        std::env::var("RAYON_NUM_THREADS").unwrap()
    );
    println!("check: max |Δ output| {:.2e}, max |Δ grad x| {:.2e}", diff(&ys, &yf), diff(&gs, &gf));
    println!("{:<44} {:>9} {:>9} {:>8}", "", "slow ms", "fused ms", "speedup");

    bench("layer forward + backward (grad wrt x)", runs, &|p| {
        let out = layer(p, &l, &x, &mask).unwrap();
        let g = out.mul(&probe).unwrap().sum_all().unwrap().backward().unwrap();
        std::hint::black_box(g.get(&x).unwrap());
    });
    let x_plain = x.as_tensor().detach();
    bench("layer forward only (no Var, inference)", runs, &|p| {
        std::hint::black_box(layer(p, &l, &x_plain, &mask).unwrap());
    });

    // The ops alone, forward + backward with respect to their input.
    let xs = Var::from_tensor(&rng.normal((BATCH * SEQ, D_MODEL), 1.0, DType::F32, &dev).unwrap()).unwrap();
    let probe_up = rng.normal((BATCH * SEQ, INTER), 1.0, DType::F32, &dev).unwrap();
    bench("linear 384->1536 [1024 rows] fwd+bwd", runs, &|p| {
        let y = p.linear(&xs, &l.up).unwrap();
        std::hint::black_box(y.mul(&probe_up).unwrap().sum_all().unwrap().backward().unwrap());
    });
    let probe_d = rng.normal((BATCH * SEQ, D_MODEL), 1.0, DType::F32, &dev).unwrap();
    bench("layer norm [1024, 384] fwd+bwd", runs, &|p| {
        let y = p.norm(&xs, &l.ln1).unwrap();
        std::hint::black_box(y.mul(&probe_d).unwrap().sum_all().unwrap().backward().unwrap());
    });
    let sc = Var::from_tensor(&rng.normal((BATCH, HEADS, SEQ, SEQ), 2.0, DType::F32, &dev).unwrap()).unwrap();
    let probe_s = rng.normal((BATCH, HEADS, SEQ, SEQ), 1.0, DType::F32, &dev).unwrap();
    bench("softmax [16, 12, 64, 64] fwd+bwd", runs, &|p| {
        let y = p.softmax(&sc).unwrap();
        std::hint::black_box(y.mul(&probe_s).unwrap().sum_all().unwrap().backward().unwrap());
    });

    println!("frozen linear maps, f32 against bf16 (AVX512-BF16 here: {})", ops::bf16_native());
    for (rows, inp, out) in [(BATCH * SEQ, D_MODEL, INTER), (BATCH * SEQ, INTER, D_MODEL), (1024, 2048, 8192), (1024, 8192, 2048)] {
        bench_dtypes(&mut rng, runs.min(10), rows, inp, out);
    }
}

/// A frozen linear map's forward at one shape, f32 against bf16 (the
/// AVX512-BF16 kernel where the CPU has it, else widening to f32), in GFLOP/s.
fn bench_dtypes(rng: &mut SeededRng, runs: usize, rows: usize, inp: usize, out: usize) {
    let dev = Device::Cpu;
    let w32 = rng.normal((out, inp), 0.05, DType::F32, &dev).unwrap();
    let x32 = rng.normal((rows, inp), 1.0, DType::F32, &dev).unwrap();
    let flops = 2.0 * (rows * inp * out) as f64;
    let mut line = format!("linear {inp}->{out} [{rows} rows]");
    for dt in [DType::F32, DType::BF16] {
        // Weights in gemm layout ([in, out] storage), as the backbones hold them.
        let w = w32.to_dtype(dt).unwrap().t().unwrap().contiguous().unwrap().t().unwrap();
        let x = x32.to_dtype(dt).unwrap();
        let time = |f: &dyn Fn()| {
            f();
            median_ms((0..runs).map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            }).collect())
        };
        let fwd = time(&|| {
            std::hint::black_box(ops::frozen_linear(&x, &w, None).unwrap());
        });
        line += &format!("  {dt:?}: {fwd:.2} ms ({:.0} GFLOP/s)", flops / fwd / 1e6);
    }
    println!("{line}");
}
