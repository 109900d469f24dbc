//! Inference benchmarks: the exported pipeline on ONNX Runtime against candle, for the main
//! job's recipe (configs/loreft_glue.yaml: LoReFT r1 at all 6 layers, [CLS] only).
//!
//!   cargo bench --bench infer                 # every figure, each in its own process
//!   cargo bench --bench infer -- ort          # one engine: ort | ort-nospin | ort-1thread | ort-int8 | ort-int8-nospin | ort-int8-1thread | candle
//!
//! Figures: batch-1 × 64-token latency (median ms) and batch-32 × 64-token throughput
//! (median sequences/s). Inputs are real training texts cut to exactly 64 tokens. Medians
//! after a warm-up; the machine is shared and noisy, so compare medians.

use reft_core::intervention::attach::Interventions;
use reft_core::candle_core::{DType, Device};
use reft_core::deploy::OrtOptions;
use reft_core::deploy::Source;
use reft_core::export::{export_pipeline, ExportInput, ExportOptions};
use reft_core::model::{self, tokenizer::batch_from_ids};
use reft_core::recipe::{LoadedRecipe, Plan};
use reft_core::rng::SeededRng;
use reft_core::runtime::OrtPipeline;
use reft_core::task::classification::{ClassifierHead, ClassifierModel};
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Instant;

use reft_plugins as _;

#[path = "shared.rs"]
mod shared;
use shared::{fixed_batch, median};

const RECIPE: &str = "configs/loreft_glue.yaml";

struct Setup {
    backbone: Box<dyn model::Backbone>,
    interventions: Interventions,
    head: ClassifierHead,
    model_dir: PathBuf,
}

fn setup() -> Setup {
    let plan = Plan::new(LoadedRecipe::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(RECIPE)).unwrap()).unwrap();
    let backbone = model::load(&plan.model_dir, DType::F32, &Device::Cpu).unwrap();
    let interventions = plan.build_interventions(&Device::Cpu, DType::F32, 1).unwrap();
    let head = ClassifierHead::new(384, 2, plan.recipe.recipe.task.pooling, &mut SeededRng::new(2), DType::F32, &Device::Cpu).unwrap();
    Setup { backbone, interventions, head, model_dir: plan.model_dir.clone() }
}

/// Run `f` `warm + n` times; the median of the last `n`, in ms.
fn time_ms(warm: usize, n: usize, mut f: impl FnMut()) -> f64 {
    let mut times = Vec::new();
    for i in 0..warm + n {
        let t0 = Instant::now();
        f();
        if i >= warm {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    median(times)
}

fn report(engine: &str, b1: f64, b32: f64) {
    println!("{engine:<22} batch-1 x 64 tokens: median {b1:.2} ms | batch-32 x 64 tokens: median {b32:.1} ms = {:.0} sequences/s", 32e3 / b32);
}

fn bench_ort(threads: usize, quantize: Option<&str>, spinning: bool) {
    let s = setup();
    let dir = std::env::temp_dir().join(format!("reft-bench-infer-{}", std::process::id()));
    export_pipeline(
        &ExportInput {
            backbone: s.backbone.as_ref(),
            interventions: &s.interventions,
            head: &s.head,
            model_dir: &s.model_dir,
            labels: None,
            max_length: 64,
            source: Source { adapter: "bench".into(), base_model: s.model_dir.display().to_string(), base_model_fingerprint: String::new() },
        },
        &dir,
        &ExportOptions { quantize: quantize.map(String::from), ..Default::default() },
    )
    .unwrap();
    drop(s);
    let opts = OrtOptions { intra_op_threads: threads, intra_op_spinning: spinning, ..Default::default() };
    let mut pipe = OrtPipeline::load(&dir, Some(&opts)).unwrap();
    let one = fixed_batch(1, 64);
    let many = fixed_batch(32, 64);
    let b1 = time_ms(20, 300, || {
        pipe.logits(&one).unwrap();
    });
    let b32 = time_ms(3, 20, || {
        pipe.logits(&many).unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
    let name = format!(
        "ORT{}{}{}",
        if quantize.is_some() { " int8" } else { "" },
        if threads == 1 { " 1 thread" } else { "" },
        if spinning { "" } else { " no-spin" }
    );
    report(&name, b1, b32);
}

fn bench_candle() {
    let s = setup();
    let model = ClassifierModel { backbone: s.backbone.as_ref(), interventions: &s.interventions, head: &s.head, dtype: DType::F32 };
    let rng = RefCell::new(SeededRng::new(0));
    let one = batch_from_ids(&fixed_batch(1, 64), 0, &Device::Cpu).unwrap();
    let many = batch_from_ids(&fixed_batch(32, 64), 0, &Device::Cpu).unwrap();
    let b1 = time_ms(5, 40, || {
        model.logits(&one, None, false, &rng).unwrap().to_vec2::<f32>().unwrap();
    });
    let b32 = time_ms(2, 8, || {
        model.logits(&many, None, false, &rng).unwrap().to_vec2::<f32>().unwrap();
    });
    report("candle", b1, b32);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    match args.first().map(String::as_str) {
        Some("ort") => bench_ort(0, None, true),
        Some("ort-nospin") => bench_ort(0, None, false),
        Some("ort-1thread") => bench_ort(1, None, true),
        Some("ort-int8") => bench_ort(0, Some("int8"), true),
        Some("ort-int8-nospin") => bench_ort(0, Some("int8"), false),
        Some("ort-int8-1thread") => bench_ort(1, Some("int8"), true),
        Some("candle") => bench_candle(),
        _ => {
            println!("{RECIPE}, fp32, CPU");
            let me = std::env::current_exe().unwrap();
            for mode in ["ort", "ort-nospin", "ort-1thread", "ort-int8", "ort-int8-nospin", "ort-int8-1thread", "candle"] {
                let status = std::process::Command::new(&me).arg(mode).status().unwrap();
                assert!(status.success(), "{mode} failed");
            }
        }
    }
}
