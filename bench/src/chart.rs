//! The PNG chart of the Envoy benchmark: CPU per connection and connections per second
//! per case, bars at the median with min–max whiskers.
//!
//! plotters draws text through ab_glyph from a font file read at run time (whatever
//! `fc-match sans-serif` names), so nothing links against system font libraries; with no
//! font on the machine the chart is drawn without text.

use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::report::{CaseResult, Stat};

const FONT: &str = "sans-serif";

fn load_font() -> bool {
    let Some(path) = Command::new("fc-match")
        .args(["-f", "%{file}", "sans-serif"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .filter(|p| !p.is_empty())
    else {
        return false;
    };
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    // plotters keeps fonts for the life of the process.
    register_font(FONT, FontStyle::Normal, Box::leak(bytes.into_boxed_slice())).is_ok()
}

fn e<E: std::fmt::Debug>(err: E) -> anyhow::Error {
    anyhow!("drawing the chart: {err:?}")
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn panel(
    area: &Area<'_>,
    caption: &str,
    rows: &[(String, Stat, RGBColor)],
    text: bool,
    digits: usize,
) -> Result<()> {
    let max = rows.iter().map(|r| r.1.max).fold(0.0, f64::max) * 1.12;
    let n = rows.len() as f64;
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(12)
        .x_label_area_size(if text { 28 } else { 0 });
    if text {
        builder.caption(caption, (FONT, 18));
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..max.max(1.0), n..0.0)
        .map_err(e)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_y_mesh()
        .disable_y_axis()
        .y_labels(0)
        .light_line_style(WHITE)
        .x_label_formatter(&|x| format!("{x:.0}"));
    if text {
        mesh.x_label_style((FONT, 13));
    } else {
        mesh.x_labels(0);
    }
    mesh.draw().map_err(e)?;
    for (i, (label, s, color)) in rows.iter().enumerate() {
        let y = i as f64;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.12), (s.median, y + 0.88)],
                color.mix(0.55).filled(),
            )))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(s.min, y + 0.72), (s.max, y + 0.72)],
                BLACK.stroke_width(2),
            )))
            .map_err(e)?;
        if text {
            let value = format!("{label}: {:.*}", digits, s.median);
            chart
                .draw_series(std::iter::once(Text::new(
                    value,
                    (max * 0.01, y + 0.3),
                    (FONT, 14),
                )))
                .map_err(e)?;
        }
    }
    Ok(())
}

/// Draws the TCP cases of `results` into a PNG at `path`.
pub fn draw(path: &Path, title: &str, results: &[CaseResult]) -> Result<()> {
    let text = load_font();
    let root = BitMapBackend::new(path, (1280, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let root = if text {
        root.titled(title, (FONT, 22)).map_err(e)?
    } else {
        root
    };
    let (left, right) = root.split_horizontally(640);
    let color = |key: &str| match key {
        "a" | "h0" => RGBColor(120, 120, 120),
        "w" => RGBColor(90, 140, 200),
        "r1" | "r2" => RGBColor(230, 150, 40),
        _ => RGBColor(40, 160, 90),
    };
    let tcp: Vec<&CaseResult> = results.iter().filter(|r| !r.key.starts_with('h')).collect();
    let label = |r: &CaseResult| format!("({}) {}", r.key, r.label);
    let cpu: Vec<_> = tcp
        .iter()
        .map(|r| (label(r), r.cpu(), color(r.key)))
        .collect();
    let rate: Vec<_> = tcp
        .iter()
        .map(|r| (label(r), r.rate(), color(r.key)))
        .collect();
    panel(
        &left,
        "Envoy CPU per new mTLS connection (µs, lower is better)",
        &cpu,
        text,
        1,
    )?;
    panel(
        &right,
        "New mTLS connections per second (higher is better)",
        &rate,
        text,
        0,
    )?;
    root.present().map_err(e)?;
    Ok(())
}
