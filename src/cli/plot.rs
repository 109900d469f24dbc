//! `reft plot RUN_DIR`: draw a run's training-loss and dev-accuracy curves from its
//! `metrics.jsonl` into a PNG (pure Rust; the font is embedded, so no system font is needed).
//! A sweep folder goes to plot_sweep.rs.

use anyhow::{anyhow, bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;
use reft_core::task::metrics::TaskMetrics;
use reft_core::train::Record;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Run folder written by `reft train` (holds metrics.jsonl), or a sweep folder written
    /// by `reft sweep` (holds sweep.jsonl: dev metric against each swept key). Several sweep
    /// folders: one frontier, test against trainable parameters, a colour per method.
    #[arg(required = true, num_args = 1.., value_name = "RUN_DIR")]
    run_dirs: Vec<PathBuf>,
    /// PNG to write (default: RUN_DIR/curves.png; a sweep: SWEEP_DIR/sweep.png; several
    /// sweeps: frontier.png).
    #[arg(long, value_name = "FILE.png")]
    out: Option<PathBuf>,
    /// Image width in pixels.
    #[arg(long, default_value_t = 1200)]
    width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 900)]
    height: u32,
}

/// A `step` record: the loss of one update (written every `log_every` updates).
struct StepPoint {
    step: u64,
    loss: f64,
}

/// An `epoch` record.
struct EpochPoint {
    /// Updates done when the epoch ended.
    step: u64,
    /// 1-based.
    epoch: u64,
    train_loss: f64,
    /// (accuracy, macro-F1) on the dev set, when the recipe has one.
    dev: Option<(f64, f64)>,
    best: bool,
}

struct Log {
    steps: Vec<StepPoint>,
    epochs: Vec<EpochPoint>,
    /// From the `final` record's summary, when the run finished.
    final_best_epoch: Option<u64>,
}

impl Log {
    /// The best epoch: the finished run's summary says; otherwise the last epoch that was
    /// flagged best when it ended (the trainer flags each new best).
    fn best_epoch(&self) -> Option<u64> {
        self.final_best_epoch.or_else(|| self.epochs.iter().rev().find(|e| e.best).map(|e| e.epoch))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(200..=10_000).contains(&args.width) || !(200..=10_000).contains(&args.height) {
        bail!("--width and --height must be between 200 and 10000 pixels (got {}x{})", args.width, args.height);
    }
    if args.run_dirs.len() > 1 {
        return super::plot_frontier::run(&args.run_dirs, args.out.clone(), (args.width, args.height));
    }
    let dir = &args.run_dirs[0];
    if !dir.exists() {
        bail!("run folder {} does not exist", dir.display());
    }
    if !dir.is_dir() {
        bail!("{} is not a folder: give the run folder that `reft train` wrote", dir.display());
    }
    if dir.join(reft_core::sweep::RECORDS_FILE).is_file() {
        return super::plot_sweep::run(dir, args.out.clone(), (args.width, args.height));
    }
    let log_path = dir.join("metrics.jsonl");
    let log = read_log(&log_path)?;

    let out = args.out.clone().unwrap_or_else(|| dir.join("curves.png"));
    if !out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        bail!("--out must name a .png file (got {})", out.display());
    }
    let title = std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());

    write_png(&out, &title, &log, (args.width, args.height))?;
    let dev_epochs = log.epochs.iter().filter(|e| e.dev.is_some()).count();
    println!(
        "wrote {} ({} loss points, {} epoch{}{})",
        out.display(),
        log.steps.len(),
        log.epochs.len(),
        if log.epochs.len() == 1 { "" } else { "s" },
        if dev_epochs == 0 && !log.epochs.is_empty() { ", no dev metrics" } else { "" }
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reading metrics.jsonl

fn read_log(path: &Path) -> anyhow::Result<Log> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} not found: {} is not a `reft train` run folder, or its run has not started",
            path.display(),
            path.parent().unwrap_or(Path::new(".")).display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut log = Log { steps: vec![], epochs: vec![], final_best_epoch: None };
    for (i, line) in lines.iter().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            // A run that is still training may be half-way through appending its last line.
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {
                eprintln!("warning: {at}: ignoring an incomplete last line (is the run still writing?)");
                continue;
            }
            Err(e) => {
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg);
                bail!("{at}: not valid JSON: {msg} (column {})", e.column())
            }
        };
        if !v.is_object() {
            bail!("{at}: expected a JSON object, found {}", short(&v));
        }
        let kind = v.get("type").and_then(Value::as_str).ok_or_else(|| anyhow!("{at}: record has no \"type\" string"))?;
        match kind {
            "step" | "epoch" => {}
            // Only the best epoch is drawn from the summary, and a run without one still plots.
            "final" => {
                log.final_best_epoch = v.pointer("/summary/best_epoch").and_then(Value::as_u64);
                continue;
            }
            _ => continue, // a record type this version does not draw
        }
        // The trainer's own record types (reft_core::train::Record), read back by name.
        let record: Record = serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            // serde quotes names with backticks; the messages here quote JSON keys as JSON does.
            let msg = e.inner().to_string().replace('`', "\"");
            if path == "." || path.is_empty() {
                anyhow!("{at}: {msg}")
            } else {
                anyhow!("{at}: in \"{path}\": {msg}")
            }
        })?;
        match record {
            Record::Step(r) => log.steps.push(StepPoint { step: r.step as u64, loss: r.loss }),
            Record::Epoch(r) => log.epochs.push(EpochPoint {
                step: r.step as u64,
                epoch: r.epoch as u64,
                train_loss: r.train_loss,
                // A causal-LM run's eval metrics (loss, perplexity) have no accuracy to draw.
                dev: match r.dev {
                    Some(TaskMetrics::Classification(m)) => Some((m.accuracy, m.macro_f1)),
                    _ => None,
                },
                best: r.best,
            }),
            Record::Final(_) => {}
        }
    }
    if log.steps.is_empty() && log.epochs.is_empty() {
        bail!(
            "{} has no step or epoch records yet (a step record is written every 10 updates): nothing to plot",
            path.display()
        );
    }
    // The log is in order; sort anyway (keeping the later of two records for the same point)
    // so a hand-edited or concatenated log still draws as lines rather than zig-zags.
    log.steps.reverse();
    log.steps.sort_by_key(|s| s.step);
    log.steps.dedup_by_key(|s| s.step);
    log.epochs.reverse();
    log.epochs.sort_by_key(|e| e.epoch);
    log.epochs.dedup_by_key(|e| e.epoch);
    Ok(log)
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// Decimals for the labels of an axis spanning `span`, at least `min`: enough that ticks
/// about a tenth of the span apart print differently (a short run's loss axis spans a few
/// hundredths, where two decimals printed "0.69" on every tick).
fn decimals_for(span: f64, min: usize) -> usize {
    if !(span.is_finite() && span > 0.0) {
        return min;
    }
    let step = span / 10.0;
    ((-step.log10()).ceil().max(0.0) as usize).clamp(min, 6)
}

/// Centred moving average: the mean of the `half` values either side and the value itself
/// (fewer at the ends), so the line does not lag behind the points.
fn moving_average(values: &[f64], half: usize) -> Vec<f64> {
    (0..values.len())
        .map(|i| {
            let window = &values[i.saturating_sub(half)..(i + half + 1).min(values.len())];
            window.iter().sum::<f64>() / window.len() as f64
        })
        .collect()
}

/// A y range around `values` with some headroom, clamped to `[lo, hi]`.
fn y_range(values: impl Iterator<Item = f64>, lo: f64, hi: f64, min_span: f64) -> (f64, f64) {
    let (mut a, mut b) = values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !a.is_finite() {
        return (lo.max(0.0), hi.min(1.0));
    }
    if b - a < min_span {
        let mid = (a + b) / 2.0;
        a = mid - min_span / 2.0;
        b = mid + min_span / 2.0;
    }
    let pad = (b - a) * 0.08;
    ((a - pad).max(lo), (b + pad).min(hi))
}

// ---------------------------------------------------------------------------------------
// Drawing

pub(super) const FONT: &str = "sans-serif";
pub(super) const BLUE: RGBColor = RGBColor(31, 119, 180);
pub(super) const ORANGE: RGBColor = RGBColor(230, 120, 20);
const GREEN: RGBColor = RGBColor(30, 150, 60);
pub(super) const GREY: RGBColor = RGBColor(140, 140, 140);

fn register_fonts() -> anyhow::Result<()> {
    plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow!("the embedded DejaVu Sans font did not load"))?;
    plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
        .map_err(|_| anyhow!("the embedded DejaVu Sans Bold font did not load"))?;
    Ok(())
}

/// Draw into a temporary PNG beside `out`, then rename it over `out`, so a reader never sees
/// a half-written image.
fn write_png(out: &Path, title: &str, log: &Log, size: (u32, u32)) -> anyhow::Result<()> {
    write_png_with(out, |tmp| draw(tmp, title, log, size))
}

/// Run `draw` into a temporary PNG beside `out`, then rename it over `out`.
pub(super) fn write_png_with(out: &Path, draw: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    register_fonts()?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!("cannot write {}: folder {} does not exist", out.display(), parent.display());
    }
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.{}.tmp.png", std::process::id()));
    let result = draw(&tmp).and_then(|()| {
        std::fs::rename(&tmp, out).with_context(|| format!("moving {} to {}", tmp.display(), out.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("drawing {}", out.display()))
}

fn draw(path: &Path, title: &str, log: &Log, (w, h): (u32, u32)) -> anyhow::Result<()> {
    // Sizes are tuned for 1200×900 and scale with the image.
    let k = (w as f64 / 1200.0).min(h as f64 / 900.0).max(0.4);
    let px = |v: f64| (v * k).round().max(1.0);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let body = root.margin(px(12.0) as i32, 0, 0, 0).titled(title, (FONT, px(30.0), FontStyle::Bold)).map_err(plot_err)?;
    let body = body.margin(0, px(10.0) as i32, px(10.0) as i32, px(20.0) as i32);
    let (top, bottom) = body.split_vertically(((h as f64) * 0.52) as u32);
    draw_loss(&top, log, &px)?;
    draw_dev(&bottom, log, &px)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

pub(super) fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("{e}")
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Panel 1: loss against update, raw points plus a moving average, epoch ends marked.
/// The series legend, in the same style on both panels.
fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>,
    position: SeriesLabelPosition,
    px: &dyn Fn(f64) -> f64,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, px(14.0)))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .margin(px(12.0))
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

fn draw_loss(area: &Area, log: &Log, px: &dyn Fn(f64) -> f64) -> anyhow::Result<()> {
    // Without step records (a very short run) fall back to each epoch's mean loss.
    let (raw, raw_label): (Vec<(f64, f64)>, String) = if log.steps.is_empty() {
        (log.epochs.iter().map(|e| (e.step as f64, e.train_loss)).collect(), "epoch mean loss".into())
    } else {
        let every = log.steps[0].step.max(1);
        (log.steps.iter().map(|s| (s.step as f64, s.loss)).collect(), format!("loss (logged every {every} updates)"))
    };
    let x_max = raw.iter().map(|p| p.0).chain(log.epochs.iter().map(|e| e.step as f64)).fold(1.0, f64::max);
    let max_loss = raw.iter().map(|p| p.1).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let (mut y0, y1) = y_range(raw.iter().map(|p| p.1), 0.0, f64::INFINITY, 1e-3);
    if y0 < 0.5 * max_loss {
        y0 = 0.0; // start at zero unless that would squash the curve
    }
    // Room at the top for the legend.
    let y1 = y1 + (y1 - y0) * 0.25;

    let mut chart = ChartBuilder::on(area)
        .caption("training loss", (FONT, px(22.0)))
        .margin(px(8.0))
        .x_label_area_size(px(50.0))
        .y_label_area_size(px(75.0))
        .build_cartesian_2d(0.0..x_max, y0..y1)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("update")
        .y_desc("loss")
        .label_style((FONT, px(15.0)))
        .axis_desc_style((FONT, px(18.0)))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .y_label_formatter(&|y| format!("{y:.*}", decimals_for(y1 - y0, 2)))
        .draw()
        .map_err(plot_err)?;

    // Epoch ends: dashed verticals (the best epoch's in green), "epoch N" over each span.
    let best = log.best_epoch();
    let plot_w = chart.plotting_area().dim_in_pixel().0 as f64;
    let mut prev = 0.0;
    for e in &log.epochs {
        let x = e.step as f64;
        let colour = if Some(e.epoch) == best { GREEN } else { GREY };
        chart
            .draw_series(DashedLineSeries::new([(x, y0), (x, y1)], px(6.0) as u32, px(4.0) as u32, colour.stroke_width(px(1.5) as u32)))
            .map_err(plot_err)?;
        let label = if Some(e.epoch) == best { format!("epoch {} (best)", e.epoch) } else { format!("epoch {}", e.epoch) };
        let span_px = (x - prev) / x_max * plot_w;
        if span_px > px(9.0) * label.len() as f64 {
            let style = TextStyle::from((FONT, px(14.0)).into_font()).color(&colour).pos(Pos::new(HPos::Center, VPos::Bottom));
            chart.plotting_area().draw(&Text::new(label, ((prev + x) / 2.0, y0 + (y1 - y0) * 0.02), style)).map_err(plot_err)?;
        }
        prev = x;
    }
    if !log.epochs.is_empty() {
        chart
            .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
            .map_err(plot_err)?
            .label("end of epoch (green: best)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + px(20.0) as i32, y)], GREY.stroke_width(2)));
    }

    // Raw points, light; a faint line through them helps the eye.
    chart.draw_series(LineSeries::new(raw.iter().copied(), BLUE.mix(0.2))).map_err(plot_err)?;
    let r = px(2.5) as i32;
    chart
        .draw_series(raw.iter().map(|&p| Circle::new(p, r, BLUE.mix(0.35).filled())))
        .map_err(plot_err)?
        .label(raw_label)
        .legend(move |(x, y)| Circle::new((x + 10, y), r, BLUE.mix(0.35).filled()));

    // Centred moving average over about a tenth of the points (at least 5).
    if raw.len() >= 5 {
        let half = (raw.len() / 20).max(2);
        let window = 2 * half + 1;
        let values: Vec<f64> = raw.iter().map(|p| p.1).collect();
        let smooth: Vec<(f64, f64)> = raw.iter().map(|p| p.0).zip(moving_average(&values, half)).collect();
        chart
            .draw_series(LineSeries::new(smooth, BLUE.stroke_width(px(2.5) as u32)))
            .map_err(plot_err)?
            .label(format!("moving average of {window} points"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + px(20.0) as i32, y)], BLUE.stroke_width(px(2.5) as u32)));
    }

    draw_legend(&mut chart, SeriesLabelPosition::UpperRight, px)
}

/// Panel 2: dev accuracy and macro-F1 per epoch with the best epoch marked (or, for a recipe
/// without dev data, the per-epoch train loss the trainer then picks the best epoch by).
fn draw_dev(area: &Area, log: &Log, px: &dyn Fn(f64) -> f64) -> anyhow::Result<()> {
    let has_dev = log.epochs.iter().any(|e| e.dev.is_some());
    let caption = if has_dev { "dev accuracy and macro-F1 per epoch" } else { "train loss per epoch (no dev metrics in the log)" };
    let n = log.epochs.iter().map(|e| e.epoch).max().unwrap_or(1).max(1);
    if log.epochs.is_empty() {
        let style = TextStyle::from((FONT, px(20.0)).into_font()).color(&GREY).pos(Pos::new(HPos::Center, VPos::Center));
        let (w, h) = area.dim_in_pixel();
        area.draw(&Text::new("no epoch has finished yet", (w as i32 / 2, h as i32 / 2), style)).map_err(plot_err)?;
        return Ok(());
    }
    // (name, colour, points)
    type Series = (&'static str, RGBColor, Vec<(f64, f64)>);
    let series: Vec<Series> = if has_dev {
        let pts = |f: fn((f64, f64)) -> f64| log.epochs.iter().filter_map(|e| e.dev.map(|d| (e.epoch as f64, f(d)))).collect();
        vec![("accuracy", BLUE, pts(|d| d.0)), ("macro-F1", ORANGE, pts(|d| d.1))]
    } else {
        vec![("train loss", BLUE, log.epochs.iter().map(|e| (e.epoch as f64, e.train_loss)).collect())]
    };
    let (y0, y1) = if has_dev {
        y_range(series.iter().flat_map(|s| s.2.iter().map(|p| p.1)), 0.0, 1.0, 0.04)
    } else {
        y_range(series[0].2.iter().map(|p| p.1), 0.0, f64::INFINITY, 1e-3)
    };
    // A band at the top for the best-epoch note.
    let y1 = y1 + (y1 - y0) * 0.12;
    let percent = has_dev;

    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, px(22.0)))
        .margin(px(8.0))
        .x_label_area_size(px(50.0))
        .y_label_area_size(px(75.0))
        .build_cartesian_2d(0.5..n as f64 + 0.5, y0..y1)
        .map_err(plot_err)?;
    let x_fmt = |x: &f64| if (x - x.round()).abs() < 1e-9 && *x >= 1.0 { format!("{}", x.round() as u64) } else { String::new() };
    let y_fmt = |y: &f64| if percent { format!("{:.*}%", decimals_for((y1 - y0) * 100.0, 1), y * 100.0) } else { format!("{y:.*}", decimals_for(y1 - y0, 3)) };
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(if has_dev { "dev score" } else { "loss" })
        .x_labels((n as usize + 1).min(21))
        .label_style((FONT, px(15.0)))
        .axis_desc_style((FONT, px(18.0)))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .draw()
        .map_err(plot_err)?;

    let r = px(4.0) as i32;
    for (i, (name, colour, pts)) in series.iter().enumerate() {
        let colour = *colour;
        chart.draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(px(2.5) as u32))).map_err(plot_err)?;
        let marker = move |p: (f64, f64)| -> DynElement<'static, BitMapBackend, (f64, f64)> {
            if i == 0 {
                Circle::new(p, r, colour.filled()).into_dyn()
            } else {
                TriangleMarker::new(p, r + 1, colour.filled()).into_dyn()
            }
        };
        chart
            .draw_series(pts.iter().map(|&p| marker(p)))
            .map_err(plot_err)?
            .label(*name)
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new([(0, 0), (px(20.0) as i32, 0)], colour.stroke_width(px(2.5) as u32))
                    + Circle::new((px(10.0) as i32, 0), r, colour.filled())
            });
    }

    // The best epoch: a green ring around its first series' point, a dashed vertical and a note.
    if let Some(best) = log.best_epoch() {
        if let Some(&(bx, by)) = series[0].2.iter().find(|p| p.0 as u64 == best) {
            chart
                .draw_series(DashedLineSeries::new([(bx, y0), (bx, y1)], px(6.0) as u32, px(4.0) as u32, GREEN.stroke_width(px(1.5) as u32)))
                .map_err(plot_err)?;
            let ring = px(10.0) as i32;
            chart
                .draw_series(std::iter::once(Circle::new((bx, by), ring, GREEN.stroke_width(px(3.0) as u32))))
                .map_err(plot_err)?
                .label("best epoch")
                .legend(move |(x, y)| Circle::new((x + 10, y), ring / 2 + 1, GREEN.stroke_width(2)));
            let note = if has_dev {
                let f1 = series[1].2.iter().find(|p| p.0 as u64 == best).map_or(f64::NAN, |p| p.1);
                format!("best: epoch {best}, accuracy {:.1}%, macro-F1 {:.1}%", by * 100.0, f1 * 100.0)
            } else {
                format!("best: epoch {best}, train loss {by:.4}")
            };
            // Put the note on the side of the vertical with more room.
            let left_half = bx - 0.5 < n as f64 / 2.0;
            let (dx, hpos) = if left_half { (0.08, HPos::Left) } else { (-0.08, HPos::Right) };
            let style = TextStyle::from((FONT, px(15.0)).into_font()).color(&GREEN).pos(Pos::new(hpos, VPos::Top));
            chart.plotting_area().draw(&Text::new(note, (bx + dx, y1 - (y1 - y0) * 0.02), style)).map_err(plot_err)?;
        }
    }

    draw_legend(&mut chart, SeriesLabelPosition::LowerRight, px)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_are_distinct_for_narrow_ranges() {
        // A 40-update run's loss between 0.690 and 0.696: ticks 0.0006 apart.
        for (y0, y1, min) in [(0.690, 0.696, 2), (0.5, 0.9, 2), (0.7843, 0.7851, 1), (0.0, 3.0, 3)] {
            let d = decimals_for(y1 - y0, min);
            let labels: Vec<String> = (0..=10).map(|i| format!("{:.*}", d, y0 + (y1 - y0) * i as f64 / 10.0)).collect();
            let mut unique = labels.clone();
            unique.dedup();
            assert_eq!(unique.len(), labels.len(), "{labels:?}");
            assert!(d >= min);
        }
    }

    #[test]
    fn moving_average_is_centred() {
        assert_eq!(moving_average(&[1.0, 2.0, 3.0, 7.0], 1), vec![1.5, 2.0, 4.0, 5.0]);
        assert_eq!(moving_average(&[5.0], 3), vec![5.0]);
    }

    #[test]
    fn y_range_pads_and_clamps() {
        let (a, b) = y_range([0.7, 0.8].into_iter(), 0.0, 1.0, 0.02);
        assert!(a < 0.7 && a > 0.6 && b > 0.8 && b < 0.9);
        let (a, b) = y_range([0.99, 1.0].into_iter(), 0.0, 1.0, 0.02);
        assert!(a < 0.99 && b == 1.0);
    }
}
