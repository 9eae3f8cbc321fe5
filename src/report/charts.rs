//! Charts as inline SVG (plotters' SVG backend; text is escaped by plotters): latency by
//! precision per target, accuracy change against speed-up, and latency percentile ladders.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::portability::CellSummary;

const PRECISIONS: [&str; 4] = ["fp32", "fp16", "int8", "best"];
const SIZE: (u32, u32) = (560, 320);
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Keeps chart labels short.
fn short(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n).collect::<String>())
    } else {
        s.to_string()
    }
}

fn finish(svg: String, ok: Result<(), String>) -> String {
    match ok {
        Ok(()) => svg,
        Err(e) => format!(
            "<p class=\"muted\">chart unavailable: {}</p>",
            tera::escape_html(&e)
        ),
    }
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// A chart's frame: caption, axes and their labels.
struct Frame<'a> {
    caption: String,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    /// Names of the integer x positions (a categorical axis), if any.
    categories: Option<&'a [&'a str]>,
    x_desc: &'a str,
    y_desc: &'a str,
}

/// Draws a frame, lets `draw` add the series, adds the legend when `draw` says there are
/// labelled series, and returns the SVG (or a note saying why there is none).
fn render(
    frame: Frame<'_>,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> Result<bool, Box<dyn std::error::Error>>,
) -> String {
    let mut svg = String::new();
    let drawn = (|| -> Drawn {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&frame.caption, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(frame.x.clone(), frame.y.clone())?;
        let category = |x: &f64| {
            frame
                .categories
                .and_then(|c| c.get(x.round() as usize))
                .filter(|_| (x - x.round()).abs() < 1e-6)
                .map_or(String::new(), |s| s.to_string())
        };
        let mut mesh = chart.configure_mesh();
        if let Some(c) = frame.categories {
            mesh.x_labels(c.len()).x_label_formatter(&category);
        }
        if !frame.x_desc.is_empty() {
            mesh.x_desc(frame.x_desc);
        }
        mesh.y_desc(frame.y_desc).draw()?;
        if draw(&mut chart)? {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 11))
                .draw()?;
        }
        root.present()?;
        Ok(())
    })()
    .map_err(|e| e.to_string());
    finish(svg, drawn)
}

/// Median latency (ms) at each precision, one line per model × cache × target (batch = the
/// smallest one present).
pub fn latency_by_precision(cells: &[CellSummary]) -> String {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let min_batch = cells.iter().map(|c| c.batch).min().unwrap_or(1);
    let quantized: Vec<&CellSummary> = cells
        .iter()
        .filter(|c| c.cache != "-" && c.batch == min_batch)
        .collect();
    let mut groups: Vec<(String, String, String)> = quantized
        .iter()
        .map(|c| (c.model.clone(), c.cache.clone(), c.target.clone()))
        .collect();
    groups.sort();
    groups.dedup();
    for (model, cache, target) in groups.into_iter().take(PALETTE.len()) {
        let points: Vec<(f64, f64)> = PRECISIONS
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                cells
                    .iter()
                    .find(|c| {
                        c.model == model
                            && c.target == target
                            && c.batch == min_batch
                            && c.precision == *p
                            && (c.cache == cache || c.cache == "-")
                    })
                    .and_then(|c| c.median_ms)
                    .map(|m| (i as f64, m))
            })
            .collect();
        if !points.is_empty() {
            series.push((
                format!(
                    "{} · {} · {}",
                    short(&model, 16),
                    short(&cache, 16),
                    short(&target, 28)
                ),
                points,
            ));
        }
    }
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0, f64::max)
        * 1.15;
    let frame = Frame {
        caption: format!("median latency by precision (batch {min_batch})"),
        x: -0.3..3.3,
        y: 0.0..ymax.max(1e-6),
        categories: Some(&PRECISIONS),
        x_desc: "",
        y_desc: "ms",
    };
    render(frame, |chart| {
        for (i, (label, points)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)).point_size(3))?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                });
        }
        Ok(!series.is_empty())
    })
}

/// Top-1 change against fp32 (points) against speed-up over fp16, one point per int8/best cell.
pub fn accuracy_vs_speedup(cells: &[CellSummary]) -> String {
    let points: Vec<(&CellSummary, f64, f64)> = cells
        .iter()
        .filter_map(|c| Some((c, c.speedup_vs_fp16?, c.delta_top1_vs_fp32?)))
        .filter(|(c, _, _)| c.cache != "-")
        .collect();
    let mut targets: Vec<&str> = points.iter().map(|(c, _, _)| c.target.as_str()).collect();
    targets.sort();
    targets.dedup();
    let (xmin, xmax) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), (_, x, _)| {
            (a.min(*x), b.max(*x))
        });
    let (ymin, ymax) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), (_, _, y)| {
            (a.min(*y), b.max(*y))
        });
    let (xmin, xmax) = if points.is_empty() {
        (0.5, 2.0)
    } else {
        ((xmin * 0.9).min(0.9), xmax * 1.1 + 0.05)
    };
    let (ymin, ymax) = if points.is_empty() {
        (-1.0, 1.0)
    } else {
        (ymin.min(0.0) - 0.5, ymax.max(0.0) + 0.5)
    };
    let frame = Frame {
        caption: "accuracy change vs speed-up (int8/best cells)".into(),
        x: xmin..xmax,
        y: ymin..ymax,
        categories: None,
        x_desc: "speed-up over fp16 (×)",
        y_desc: "top-1 vs fp32 (points)",
    };
    render(frame, |chart| {
        chart.draw_series(LineSeries::new(
            vec![(xmin, 0.0), (xmax, 0.0)],
            BLACK.mix(0.4),
        ))?;
        chart.draw_series(LineSeries::new(
            vec![(1.0, ymin), (1.0, ymax)],
            BLACK.mix(0.4),
        ))?;
        for (i, t) in targets.iter().enumerate().take(PALETTE.len()) {
            let color = PALETTE[i];
            let mine: Vec<(f64, f64)> = points
                .iter()
                .filter(|(c, _, _)| c.target == *t)
                .map(|(_, x, y)| (*x, *y))
                .collect();
            chart
                .draw_series(mine.into_iter().map(|p| Circle::new(p, 4, color.filled())))?
                .label(short(t, 40))
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, color.filled()));
        }
        Ok(!targets.is_empty())
    })
}

/// Latency percentile ladders (min, p50, p90, p95, p99, max) of up to eight cells.
pub fn latency_distribution(cells: &[CellSummary]) -> String {
    let ladders: Vec<(&CellSummary, [f64; 6])> = cells
        .iter()
        .filter_map(|c| Some((c, c.ladder_ms?)))
        .take(PALETTE.len())
        .collect();
    let ymax = ladders.iter().map(|(_, l)| l[4]).fold(0.0, f64::max) * 1.2;
    let labels = ["min", "p50", "p90", "p95", "p99"];
    let frame = Frame {
        caption: "latency distribution (percentiles)".into(),
        x: -0.2..4.2,
        y: 0.0..ymax.max(1e-6),
        categories: Some(&labels),
        x_desc: "",
        y_desc: "ms",
    };
    render(frame, |chart| {
        for (i, (c, l)) in ladders.iter().enumerate() {
            let color = PALETTE[i];
            let pts: Vec<(f64, f64)> = l[..5]
                .iter()
                .enumerate()
                .map(|(k, v)| (k as f64, *v))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)).point_size(3))?
                .label(short(
                    &format!("{} {} {}", c.model, c.precision, c.cache),
                    40,
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                });
        }
        Ok(!ladders.is_empty())
    })
}
