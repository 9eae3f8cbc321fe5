//! Charts as inline SVG (plotters' SVG backend; text is escaped by plotters): latency by
//! precision per target, accuracy change against speed-up, and latency percentile ladders.

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
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("median latency by precision (batch {min_batch})"),
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.3f64..3.3f64, 0f64..ymax.max(1e-6))?;
        chart
            .configure_mesh()
            .x_labels(4)
            .x_label_formatter(&|x| {
                PRECISIONS
                    .get(x.round() as usize)
                    .filter(|_| (x - x.round()).abs() < 1e-6)
                    .unwrap_or(&"")
                    .to_string()
            })
            .y_desc("ms")
            .draw()?;
        for (i, (label, points)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)).point_size(3))?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                });
        }
        if !series.is_empty() {
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
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "accuracy change vs speed-up (int8/best cells)",
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(xmin..xmax, ymin..ymax)?;
        chart
            .configure_mesh()
            .x_desc("speed-up over fp16 (×)")
            .y_desc("top-1 vs fp32 (points)")
            .draw()?;
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
        if !targets.is_empty() {
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

/// Latency percentile ladders (min, p50, p90, p95, p99, max) of up to eight cells.
pub fn latency_distribution(cells: &[CellSummary]) -> String {
    let ladders: Vec<(&CellSummary, [f64; 6])> = cells
        .iter()
        .filter_map(|c| Some((c, c.ladder_ms?)))
        .take(PALETTE.len())
        .collect();
    let ymax = ladders.iter().map(|(_, l)| l[4]).fold(0.0, f64::max) * 1.2;
    let labels = ["min", "p50", "p90", "p95", "p99"];
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("latency distribution (percentiles)", ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.2f64..4.2f64, 0f64..ymax.max(1e-6))?;
        chart
            .configure_mesh()
            .x_labels(5)
            .x_label_formatter(&|x| {
                labels
                    .get(x.round() as usize)
                    .filter(|_| (x - x.round()).abs() < 1e-6)
                    .unwrap_or(&"")
                    .to_string()
            })
            .y_desc("ms")
            .draw()?;
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
        if !ladders.is_empty() {
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
