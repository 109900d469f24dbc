//! `reft plot SWEEP_DIR`: a sweep's trials from `sweep.jsonl`, one panel per swept key (the
//! dev metric of every trial against the key's value: numbers on a log axis when they span a
//! decade, other values side by side), and a last panel with test against trainable
//! parameters (the frontier), the configuration chosen by dev marked.

use super::plot::{plot_err, write_png_with, BLUE, FONT, GREY, ORANGE};
use anyhow::bail;
use plotters::prelude::*;
use plotters::style::FontStyle;
use reft_core::sweep::{self, Direction, TrialRecord};
use std::path::{Path, PathBuf};

/// One swept key's values over the trials, as numbers or as labels.
enum Axis {
    Numbers { log: bool },
    Labels(Vec<String>),
}

fn value_of(record: &TrialRecord, key: &str) -> Option<String> {
    // A sweep over several recipes: the recipe's file stem.
    if key == sweep::spec::RECIPE_KEY {
        return record.recipe.as_ref().map(|r| Path::new(r).file_stem().map_or(r.clone(), |s| s.to_string_lossy().into_owned()));
    }
    record.overrides.iter().find_map(|o| o.strip_prefix(&format!("{key}=")).map(|v| v.trim_matches('"').to_string()))
}

fn axis(values: &[String]) -> Axis {
    let nums: Option<Vec<f64>> = values.iter().map(|v| v.parse::<f64>().ok()).collect();
    match nums {
        Some(n) if !n.is_empty() => {
            let (lo, hi) = n.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
            Axis::Numbers { log: lo > 0.0 && hi / lo >= 10.0 }
        }
        _ => {
            let mut labels: Vec<String> = values.to_vec();
            labels.sort();
            labels.dedup();
            Axis::Labels(labels)
        }
    }
}

pub fn run(dir: &Path, out: Option<PathBuf>, size: (u32, u32)) -> anyhow::Result<()> {
    let records = sweep::record::read(dir)?;
    if records.is_empty() {
        bail!("{}: no finished trials in {} yet", dir.display(), sweep::RECORDS_FILE);
    }
    let mut keys: Vec<String> = records.iter().flat_map(|r| r.overrides.iter().filter_map(|o| o.split_once('=').map(|(k, _)| k.to_string()))).collect();
    if records.iter().any(|r| r.recipe.is_some()) {
        keys.push(sweep::spec::RECIPE_KEY.to_string());
    }
    keys.sort();
    keys.dedup();
    let direction = sweep::direction(&records);
    let ranked = sweep::rank(&records, direction);
    let best = ranked.first().map(|r| r.config);
    let out = out.unwrap_or_else(|| dir.join("sweep.png"));
    if !out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        bail!("--out must name a .png file (got {})", out.display());
    }
    let title = format!("{} ({} trials)", dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), records.len());
    write_png_with(&out, |tmp| draw(tmp, &title, &records, &keys, direction, best, size))?;
    println!("wrote {} ({} trials, {} swept key{})", out.display(), records.len(), keys.len(), if keys.len() == 1 { "" } else { "s" });
    Ok(())
}

fn draw(path: &Path, title: &str, records: &[TrialRecord], keys: &[String], direction: Direction, best: Option<usize>, (w, h): (u32, u32)) -> anyhow::Result<()> {
    let k = (w as f64 / 1200.0).min(h as f64 / 900.0).max(0.4);
    let px = |v: f64| (v * k).round().max(1.0);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let body = root.margin(px(12.0) as i32, px(10.0) as i32, px(10.0) as i32, px(10.0) as i32).titled(title, (FONT, px(28.0), FontStyle::Bold)).map_err(plot_err)?;
    let panels = keys.len() + 1;
    let cols = if panels <= 1 { 1 } else { 2 };
    let rows = panels.div_ceil(cols);
    let areas = body.split_evenly((rows, cols));
    let (metric, scale) = match direction {
        Direction::Higher => ("dev accuracy (%)", 100.0),
        Direction::Lower => ("dev response loss", 1.0),
    };
    let dev: Vec<f64> = records.iter().map(|r| scale * r.dev).collect();
    let (ylo, yhi) = span(&dev);
    let colour = |r: &TrialRecord| if Some(r.config) == best { ORANGE } else { BLUE };
    for (area, key) in areas.iter().zip(keys) {
        let values: Vec<Option<String>> = records.iter().map(|r| value_of(r, key)).collect();
        let present: Vec<String> = values.iter().flatten().cloned().collect();
        match axis(&present) {
            Axis::Numbers { log } => {
                let xs: Vec<f64> = present.iter().map(|v| v.parse().unwrap_or(0.0)).collect();
                let (xlo, xhi) = if log { log_span(&xs) } else { span(&xs) };
                let label = format!("{key}{}", if log { " (log)" } else { "" });
                let points = records.iter().zip(&values).filter_map(|(r, v)| Some((v.as_ref()?.parse::<f64>().ok()?, scale * r.dev, colour(r))));
                if log {
                    let mut chart = panel(area, &px)
                        .build_cartesian_2d((xlo..xhi).log_scale(), ylo..yhi)
                        .map_err(plot_err)?;
                    chart.configure_mesh().x_desc(label).y_desc(metric).label_style((FONT, px(14.0))).draw().map_err(plot_err)?;
                    chart.draw_series(points.map(|(x, y, c)| Circle::new((x, y), px(5.0) as i32, c.filled()))).map_err(plot_err)?;
                } else {
                    let mut chart = panel(area, &px)
                        .build_cartesian_2d(xlo..xhi, ylo..yhi)
                        .map_err(plot_err)?;
                    chart.configure_mesh().x_desc(label).y_desc(metric).label_style((FONT, px(14.0))).draw().map_err(plot_err)?;
                    chart.draw_series(points.map(|(x, y, c)| Circle::new((x, y), px(5.0) as i32, c.filled()))).map_err(plot_err)?;
                }
            }
            Axis::Labels(labels) => {
                let n = labels.len();
                let mut chart = panel(area, &px)
                    .build_cartesian_2d(-0.5..(n as f64 - 0.5), ylo..yhi)
                    .map_err(plot_err)?;
                let names = labels.clone();
                chart
                    .configure_mesh()
                    .x_labels(n)
                    .x_label_formatter(&move |x| names.get(x.round() as usize).filter(|_| (x - x.round()).abs() < 1e-6).cloned().unwrap_or_default())
                    .x_desc(key.as_str())
                    .y_desc(metric)
                    .label_style((FONT, px(14.0)))
                    .draw()
                    .map_err(plot_err)?;
                let points = records.iter().zip(&values).filter_map(|(r, v)| {
                    let v = v.as_ref()?;
                    Some((labels.iter().position(|l| l == v)? as f64, scale * r.dev, colour(r)))
                });
                chart.draw_series(points.map(|(x, y, c)| Circle::new((x, y), px(5.0) as i32, c.filled()))).map_err(plot_err)?;
            }
        }
    }
    // The frontier: test against trainable parameters (log), every trial; the chosen one orange.
    if let Some(area) = areas.get(keys.len()) {
        let with_test: Vec<&TrialRecord> = records.iter().filter(|r| r.test.is_some()).collect();
        if !with_test.is_empty() {
            let params: Vec<f64> = with_test.iter().map(|r| r.trainable_parameters as f64).collect();
            let tests: Vec<f64> = with_test.iter().map(|r| scale * r.test.unwrap_or(0.0)).collect();
            let (xlo, xhi) = log_span(&params);
            let (tlo, thi) = span(&tests);
            let mut chart = panel(area, &px)
                .build_cartesian_2d((xlo..xhi).log_scale(), tlo..thi)
                .map_err(plot_err)?;
            let test_metric = metric.replacen("dev", "test", 1);
            chart.configure_mesh().x_desc("trainable parameters (log)").y_desc(test_metric).label_style((FONT, px(14.0))).draw().map_err(plot_err)?;
            chart
                .draw_series(with_test.iter().map(|r| Circle::new((r.trainable_parameters as f64, scale * r.test.unwrap_or(0.0)), px(5.0) as i32, colour(r).filled())))
                .map_err(plot_err)?;
            chart
                .draw_series(std::iter::once(Text::new("orange: the configuration chosen by dev", (xlo, thi), (FONT, px(13.0)).into_font().color(&GREY))))
                .map_err(plot_err)?;
        }
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// One panel's chart frame: margins and room for the axis labels.
fn panel<'a, 'b>(area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>, px: &dyn Fn(f64) -> f64) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut b = ChartBuilder::on(area);
    b.margin(px(8.0) as i32).x_label_area_size(px(40.0) as u32).y_label_area_size(px(56.0) as u32);
    b
}

/// A range around positive `xs` for a log axis: a quarter beyond each end, a decade at least.
fn log_span(xs: &[f64]) -> (f64, f64) {
    let (lo, hi) = xs.iter().filter(|x| **x > 0.0).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    let (lo, hi) = (lo / 1.25, hi * 1.25);
    if hi / lo < 10.0 {
        let mid = (lo * hi).sqrt();
        return (mid / 10f64.sqrt(), mid * 10f64.sqrt());
    }
    (lo, hi)
}

/// A padded range around `xs` (never empty).
fn span(xs: &[f64]) -> (f64, f64) {
    let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs().max(1e-9) * 0.01);
    (lo - pad, hi + pad)
}
