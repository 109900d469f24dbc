//! `reft plot SWEEP_DIR SWEEP_DIR…`: the frontier across sweeps. Test metric against trainable
//! parameters (log) for every trial, one colour per method: a record's recipe when its sweep
//! trained several, else the sweep folder's name. Each method's configuration chosen by mean
//! dev (never by test) is drawn large, at its mean test over its seeds, and named.

use super::plot::{plot_err, write_png_with, FONT, GREY};
use anyhow::bail;
use plotters::prelude::*;
use plotters::style::FontStyle;
use reft_core::sweep::{self, Direction, TrialRecord};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The trials of one method, from one or more sweeps.
struct Method {
    name: String,
    records: Vec<TrialRecord>,
}

/// The name a record's method goes by.
fn method_name(dir: &Path, r: &TrialRecord) -> String {
    match &r.recipe {
        Some(recipe) => Path::new(recipe).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| recipe.clone()),
        None => dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string()),
    }
}

pub fn run(dirs: &[PathBuf], out: Option<PathBuf>, size: (u32, u32)) -> anyhow::Result<()> {
    let mut methods: BTreeMap<String, Method> = BTreeMap::new();
    let mut direction = None;
    for dir in dirs {
        if !dir.join(sweep::RECORDS_FILE).is_file() {
            bail!("{} is not a sweep folder (no {}): several folders are plotted only as sweeps, together", dir.display(), sweep::RECORDS_FILE);
        }
        let records = sweep::record::read(dir)?;
        let d = sweep::direction(&records);
        if *direction.get_or_insert(d) != d {
            bail!("{} measures {:?} while an earlier folder measures {:?}: the sweeps are not comparable", dir.display(), d, direction.unwrap());
        }
        // Configurations are numbered per sweep: keep them apart across folders.
        for r in records {
            let name = method_name(dir, &r);
            let m = methods.entry(name.clone()).or_insert_with(|| Method { name, records: vec![] });
            m.records.push(TrialRecord { trial: format!("{}/{}", dir.display(), r.trial), config: r.config + 1_000_000 * dirs.iter().position(|x| x == dir).unwrap_or(0), ..r });
        }
    }
    let direction = direction.unwrap_or(Direction::Higher);
    let methods: Vec<Method> = methods.into_values().filter(|m| m.records.iter().any(|r| r.test.is_some())).collect();
    if methods.is_empty() {
        bail!("no finished trial with a test metric in {}", dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    let out = out.unwrap_or_else(|| PathBuf::from("frontier.png"));
    if !out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        bail!("--out must name a .png file (got {})", out.display());
    }
    let trials: usize = methods.iter().map(|m| m.records.len()).sum();
    write_png_with(&out, |tmp| draw(tmp, &methods, direction, size))?;
    println!("wrote {} ({trials} trials, {} methods)", out.display(), methods.len());
    for m in &methods {
        if let Some(best) = sweep::rank(&m.records, direction).first() {
            let pct = |x: f64| format!("{:.2}", 100.0 * x);
            println!(
                "  {:<24} chosen by dev: {} trainable, dev {}, test {} ({} seed(s))",
                m.name,
                best.trainable_parameters,
                pct(best.dev_mean),
                best.test_mean.map_or("—".into(), pct),
                best.seeds
            );
        }
    }
    Ok(())
}

fn draw(path: &Path, methods: &[Method], direction: Direction, (w, h): (u32, u32)) -> anyhow::Result<()> {
    let k = (w as f64 / 1200.0).min(h as f64 / 900.0).max(0.4);
    let px = |v: f64| (v * k).round().max(1.0);
    let scale = if direction == Direction::Higher { 100.0 } else { 1.0 };
    let metric = if direction == Direction::Higher { "test accuracy (%)" } else { "test response loss" };
    let all: Vec<&TrialRecord> = methods.iter().flat_map(|m| m.records.iter()).filter(|r| r.test.is_some()).collect();
    let (xlo, xhi) = span(all.iter().map(|r| r.trainable_parameters as f64), true);
    let (ylo, yhi) = span(all.iter().map(|r| scale * r.test.unwrap_or(0.0)), false);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let title = "test against trainable parameters: every trial; large: each method's choice by mean dev";
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, px(22.0), FontStyle::Bold))
        .margin(px(14.0) as i32)
        .x_label_area_size(px(48.0) as u32)
        .y_label_area_size(px(64.0) as u32)
        .build_cartesian_2d((xlo..xhi).log_scale(), ylo..yhi)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| super::format::thousands(x.round() as usize))
        .x_desc("trainable parameters (log)").y_desc(metric).label_style((FONT, px(15.0))).draw().map_err(plot_err)?;
    for (i, m) in methods.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let dots = m.records.iter().filter_map(|r| Some((r.trainable_parameters as f64, scale * r.test?)));
        chart
            .draw_series(dots.map(|p| Circle::new(p, px(4.0) as i32, colour.mix(0.55).filled())))
            .map_err(plot_err)?
            .label(m.name.clone())
            .legend(move |(x, y)| Circle::new((x, y), 6, colour.filled()));
        if let Some(best) = sweep::rank(&m.records, direction).first() {
            if let Some(t) = best.test_mean {
                let p = (best.trainable_parameters as f64, scale * t);
                chart.draw_series(std::iter::once(Circle::new(p, px(10.0) as i32, colour.filled()))).map_err(plot_err)?;
                chart
                    .draw_series(std::iter::once(Text::new(format!("{} {:.2}", m.name, scale * t), (p.0 * 1.08, p.1), (FONT, px(14.0)).into_font().color(&GREY))))
                    .map_err(plot_err)?;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, px(15.0)))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A padded range around `xs` (multiplicative on a log axis).
fn span(xs: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = xs.filter(|x| !log || *x > 0.0).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    if !lo.is_finite() {
        return if log { (1.0, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        return (lo / 1.6, hi * 2.5);
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs().max(1e-9) * 0.01);
    (lo - pad, hi + pad)
}
