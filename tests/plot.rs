//! `reft plot`: a synthetic but realistic `metrics.jsonl` (the records `reft train` writes)
//! becomes a PNG of the expected size with both panels drawn; broken run folders give errors
//! that name the file and line.

use std::path::{Path, PathBuf};
use std::process::Command;

fn reft(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reft")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A log shaped like a 3-epoch run of 265 updates per epoch with a step record every 10
/// updates: loss falling from ~0.69 with noise, dev accuracy rising, epoch 3 best.
fn realistic_log(with_dev: bool) -> String {
    let per_epoch = 265u64;
    let epochs = 3u64;
    let total = per_epoch * epochs;
    let mut lines = vec![];
    let mut noise = 12345u64;
    let mut epoch_sum = 0.0;
    let mut epoch_n = 0;
    let dev = [(0.7777, 0.7776, 0.4854), (0.7786, 0.7785, 0.4757), (0.7843, 0.7843, 0.4732)];
    for step in 1..=total {
        let epoch = (step - 1) / per_epoch + 1;
        noise = noise.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let jitter = ((noise >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.25;
        let loss = 0.40 + 0.29 * (-(step as f64) / 120.0).exp() + jitter;
        epoch_sum += loss;
        epoch_n += 1;
        if step % 10 == 0 {
            let lr = 2e-3 * (1.0 - step as f64 / total as f64);
            lines.push(format!(
                r#"{{"epoch":{epoch},"examples_per_sec":27.3,"grad_norm":0.21,"loss":{loss},"lr":{lr},"step":{step},"type":"step"}}"#
            ));
        }
        if step % per_epoch == 0 {
            let (acc, f1, dl) = dev[epoch as usize - 1];
            let dev_json = if with_dev {
                format!(r#"{{"accuracy":{acc},"examples":1057,"loss":{dl},"macro_f1":{f1}}}"#)
            } else {
                "null".into()
            };
            lines.push(format!(
                r#"{{"best":true,"dev":{dev_json},"epoch":{epoch},"step":{step},"train_loss":{},"train_seconds":{},"type":"epoch"}}"#,
                epoch_sum / epoch_n as f64,
                epoch as f64 * 390.5
            ));
            epoch_sum = 0.0;
            epoch_n = 0;
        }
    }
    lines.push(format!(
        r#"{{"step":{total},"summary":{{"best_epoch":3,"dev":{{"accuracy":0.7843,"examples":1057,"loss":0.4732,"macro_f1":0.7843}},"run_dir":"x","seconds_per_epoch":397.9,"steps":{total},"test":null,"trainable_parameters":5384}},"type":"final"}}"#
    ));
    lines.join("\n") + "\n"
}

fn run_folder(name: &str, log: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("metrics.jsonl"), log).unwrap();
    (tmp, dir)
}

/// Width and height from the IHDR chunk, read by hand, after checking the PNG signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 33, "too short for a PNG: {} bytes", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is not IHDR");
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// Checks the image: size, and that it is a drawing rather than a blank page: plenty of
/// non-white pixels, and curve colours in both the top (loss) and bottom (dev) halves.
fn check_drawing(path: &Path, (w, h): (u32, u32)) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(png_size(&bytes), (w, h));
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (w, h));
    let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    let fraction = non_white as f64 / (w * h) as f64;
    assert!(fraction > 0.02 && fraction < 0.6, "non-white fraction {fraction}: blank or flooded image");
    // The curves' colours: blue (loss, accuracy) and orange (macro-F1, drawn over accuracy).
    let curve = |p: &image::Rgb<u8>| p.0 == [31, 119, 180] || p.0 == [230, 120, 20];
    let top = img.enumerate_pixels().filter(|(_, y, p)| *y < h / 2 && curve(p)).count();
    let bottom = img.enumerate_pixels().filter(|(_, y, p)| *y >= h / 2 && curve(p)).count();
    assert!(top > 200 && bottom > 100, "curve pixels: top {top}, bottom {bottom}");
    // Text rendered (title, labels): dark pixels beyond the axes' lines.
    let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 80)).count();
    assert!(dark > 2000, "only {dark} dark pixels: is any text drawn?");
}

#[test]
fn plots_a_realistic_run_to_the_default_path() {
    let (_tmp, dir) = run_folder("loreft_glue", &realistic_log(true));
    let (ok, out, err) = reft(&["plot", dir.to_str().unwrap()]);
    assert!(ok, "reft plot failed: {err}");
    let png = dir.join("curves.png");
    assert!(out.contains(png.to_str().unwrap()), "{out}");
    assert!(out.contains("79 loss points, 3 epochs"), "{out}");
    check_drawing(&png, (1200, 900));
    // No temporary file left beside it.
    let names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    if let Ok(keep) = std::env::var("REFT_PLOT_SAMPLE") {
        std::fs::copy(&png, keep).unwrap();
    }
}

#[test]
fn out_and_size_options() {
    let (tmp, dir) = run_folder("run", &realistic_log(true));
    let png = tmp.path().join("elsewhere.png");
    let (ok, _, err) = reft(&["plot", dir.to_str().unwrap(), "--out", png.to_str().unwrap(), "--width", "800", "--height", "600"]);
    assert!(ok, "{err}");
    check_drawing(&png, (800, 600));
    assert!(!dir.join("curves.png").exists());

    let (ok, _, err) = reft(&["plot", dir.to_str().unwrap(), "--out", tmp.path().join("x.jpg").to_str().unwrap()]);
    assert!(!ok && err.contains(".png"), "{err}");
}

#[test]
fn a_run_without_dev_data_still_in_progress_plots() {
    // No dev set (dev: null), and the trainer is half-way through writing its last line.
    let log = realistic_log(false);
    let cut: String = log.lines().take(60).collect::<Vec<_>>().join("\n") + "\n{\"epoch\":2,\"exam";
    let (_tmp, dir) = run_folder("nodev", &cut);
    let (ok, out, err) = reft(&["plot", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(err.contains("metrics.jsonl:61") && err.contains("incomplete"), "{err}");
    assert!(out.contains("no dev metrics"), "{out}");
    check_drawing(&dir.join("curves.png"), (1200, 900));
}

#[test]
fn missing_folder_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no_such_run");
    let (ok, _, err) = reft(&["plot", missing.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("no_such_run") && err.contains("does not exist"), "{err}");
}

#[test]
fn missing_log_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, _, err) = reft(&["plot", tmp.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("metrics.jsonl") && err.contains("not found"), "{err}");
    assert!(!tmp.path().join("curves.png").exists());
}

#[test]
fn malformed_lines_are_errors_naming_file_and_line() {
    let good = realistic_log(true);
    let mut lines: Vec<&str> = good.lines().collect();
    lines[2] = "{\"type\":\"step\",\"step\":30,\"loss\":0.6"; // truncated JSON in the middle
    let (_tmp, dir) = run_folder("broken", &(lines.join("\n") + "\n"));
    let (ok, _, err) = reft(&["plot", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains(&format!("{}:3:", dir.join("metrics.jsonl").display())), "{err}");
    assert!(!dir.join("curves.png").exists());

    // Valid JSON but a record missing a field the plot needs.
    lines[2] = r#"{"type":"step","step":30,"epoch":1}"#;
    let (_tmp, dir) = run_folder("broken", &(lines.join("\n") + "\n"));
    let (ok, _, err) = reft(&["plot", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("metrics.jsonl:3:") && err.contains("\"loss\""), "{err}");

    lines[2] = r#"{"type":"epoch","step":30,"epoch":1,"train_loss":0.5,"dev":{"accuracy":"high"}}"#;
    let (_tmp, dir) = run_folder("broken", &(lines.join("\n") + "\n"));
    let (ok, _, err) = reft(&["plot", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("metrics.jsonl:3:") && err.contains("\"accuracy\""), "{err}");
}

#[test]
fn a_log_with_no_records_is_an_error() {
    for log in ["", "\n\n", "{\"type\":\"final\",\"step\":0,\"summary\":{}}\n"] {
        let (_tmp, dir) = run_folder("empty", log);
        let (ok, _, err) = reft(&["plot", dir.to_str().unwrap()]);
        assert!(!ok, "{log:?}");
        assert!(err.contains("metrics.jsonl") && err.contains("no step or epoch records"), "{log:?}: {err}");
    }
}

#[test]
fn a_one_epoch_run_is_one_epoch() {
    // The first epoch of a realistic run: steps 10..=260 and its epoch record.
    let first: String = realistic_log(true)
        .lines()
        .take_while(|l| !l.contains("\"epoch\":2"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(first.contains("\"type\":\"epoch\""), "{first}");
    let (_tmp, dir) = run_folder("short", &first);
    let (ok, out, err) = reft(&["plot", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains(", 1 epoch)"), "{out}");
}
