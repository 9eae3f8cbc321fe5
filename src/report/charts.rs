//! Charts as inline SVG (plotters' SVG backend; text is escaped by plotters): latency by
//! precision per target, accuracy change against speed-up, and latency percentile ladders.
//! Legends are HTML below each chart (never over the data), every point carries a tooltip
//! (an SVG `<title>`), and gate thresholds are drawn as dashed lines.

use plotters::coord::types::RangedCoordf64;
use std::collections::BTreeMap;

use plotters::prelude::*;

use super::portability::CellSummary;

const PRECISIONS: [&str; 4] = ["fp32", "fp16", "int8", "best"];
const SIZE: (u32, u32) = (640, 360);
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

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
    /// The x axis holds log2 values, labelled as powers of two (batch sizes).
    log2_x: bool,
    x_desc: &'a str,
    y_desc: &'a str,
}

/// What a chart's `draw` reports back: its legend entries and one tooltip per drawn point (in
/// the order the points were drawn).
#[derive(Default)]
struct Drawing {
    legend: Vec<(String, RGBColor, bool)>,
    tips: Vec<String>,
}

/// Adds `tips` as `<title>` elements to the SVG's circles, in order.
fn with_tooltips(svg: &str, tips: &[String]) -> String {
    let mut out = String::with_capacity(svg.len() + tips.len() * 64);
    let mut rest = svg;
    let mut tips = tips.iter();
    while let Some(i) = rest.find("<circle") {
        let Some(end) = rest[i..].find("/>") else {
            break;
        };
        let Some(tip) = tips.next() else { break };
        out.push_str(&rest[..i + end]);
        out.push_str("><title>");
        out.push_str(&tera::escape_html(tip));
        out.push_str("</title></circle>");
        rest = &rest[i + end + 2..];
    }
    out.push_str(rest);
    out
}

/// The legend as HTML: a swatch (line or dot) and the full label of each series.
fn legend_html(entries: &[(String, RGBColor, bool)]) -> String {
    if entries.is_empty() {
        return String::new();
    }
    let items: Vec<String> = entries
        .iter()
        .map(|(label, RGBColor(r, g, b), dot)| {
            format!(
                "<li><span class=\"swatch{}\" style=\"background:rgb({r},{g},{b})\"></span>{}</li>",
                if *dot { " dot" } else { "" },
                tera::escape_html(label)
            )
        })
        .collect();
    format!("<ul class=\"legend\">{}</ul>", items.join(""))
}

/// Draws a frame, lets `draw` add the series, and returns the SVG with its tooltips and HTML
/// legend (or a note saying why there is none).
fn render(
    frame: Frame<'_>,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> Result<Drawing, Box<dyn std::error::Error>>,
) -> String {
    let mut svg = String::new();
    let mut drawing = Drawing::default();
    let drawn = (|| -> Drawn {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&frame.caption, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(frame.x.clone(), frame.y.clone())?;
        let category = |x: &f64| {
            frame
                .categories
                .and_then(|c| c.get(x.round() as usize))
                .filter(|_| (x - x.round()).abs() < 1e-6)
                .map_or(String::new(), |s| s.to_string())
        };
        let mut mesh = chart.configure_mesh();
        mesh.label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .light_line_style(BLACK.mix(0.05));
        let pow2 = |x: &f64| {
            if (x - x.round()).abs() < 1e-6 {
                format!("{}", x.round().exp2())
            } else {
                String::new()
            }
        };
        if let Some(c) = frame.categories {
            mesh.x_labels(c.len()).x_label_formatter(&category);
        } else if frame.log2_x {
            let span = (frame.x.end - frame.x.start).ceil() as usize;
            mesh.x_labels(span + 1).x_label_formatter(&pow2);
        }
        if !frame.x_desc.is_empty() {
            mesh.x_desc(frame.x_desc);
        }
        mesh.y_desc(frame.y_desc).draw()?;
        drawing = draw(&mut chart)?;
        root.present()?;
        Ok(())
    })()
    .map_err(|e| e.to_string());
    match drawn {
        Ok(()) => format!(
            "{}{}",
            with_tooltips(&svg, &drawing.tips),
            legend_html(&drawing.legend)
        ),
        Err(e) => finish(String::new(), Err(e)),
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
            series.push((format!("{model} · {cache} · {target}"), points));
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
        log2_x: false,
        x_desc: "",
        y_desc: "ms",
    };
    render(frame, |chart| {
        let mut d = Drawing::default();
        for (i, (label, points)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
            d.tips.extend(
                points
                    .iter()
                    .map(|(x, y)| format!("{label}: {} {y:.4} ms", PRECISIONS[*x as usize])),
            );
            d.legend.push((label.clone(), color, false));
        }
        Ok(d)
    })
}

/// Top-1 change against fp32 (points) against speed-up over fp16, one point per int8/best cell.
pub fn accuracy_vs_speedup(cells: &[CellSummary]) -> String {
    let points: Vec<(&CellSummary, f64, f64)> = cells
        .iter()
        .filter_map(|c| Some((c, c.speedup_vs_fp16?, c.delta_top1_vs_fp32?)))
        // The reference backend simulates fp16 and int8: its "speed-ups" mean nothing.
        .filter(|(c, _, _)| c.cache != "-" && c.backend != "reference")
        .collect();
    // The strictest top-1 gate among the cells, drawn as a line.
    let gate = points
        .iter()
        .filter_map(|(c, _, _)| c.thresholds.max_top1_drop)
        .fold(None, |m: Option<f64>, g| Some(m.map_or(g, |m| m.min(g))))
        .map(|g| -g * 100.0);
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
        (
            ymin.min(gate.unwrap_or(0.0)).min(0.0) - 0.5,
            ymax.max(0.0) + 0.5,
        )
    };
    let frame = Frame {
        caption: "accuracy change vs speed-up (int8/best cells)".into(),
        x: xmin..xmax,
        y: ymin..ymax,
        categories: None,
        log2_x: false,
        x_desc: "speed-up over fp16 (×)",
        y_desc: "top-1 vs fp32 (points)",
    };
    render(frame, |chart| {
        let mut d = Drawing::default();
        chart.draw_series(LineSeries::new(
            vec![(xmin, 0.0), (xmax, 0.0)],
            BLACK.mix(0.4),
        ))?;
        chart.draw_series(LineSeries::new(
            vec![(1.0, ymin), (1.0, ymax)],
            BLACK.mix(0.4),
        ))?;
        if let Some(g) = gate {
            chart.draw_series(DashedLineSeries::new(
                vec![(xmin, g), (xmax, g)],
                6,
                4,
                PALETTE[3].stroke_width(2),
            ))?;
            d.legend.push((
                format!("accuracy gate: top-1 drop ≤ {:.2} points", -g),
                PALETTE[3],
                false,
            ));
        }
        for (i, t) in targets.iter().enumerate().take(PALETTE.len()) {
            let color = PALETTE[i];
            let mine: Vec<&(&CellSummary, f64, f64)> =
                points.iter().filter(|(c, _, _)| c.target == *t).collect();
            chart.draw_series(
                mine.iter()
                    .map(|(_, x, y)| Circle::new((*x, *y), 5, color.filled())),
            )?;
            d.tips.extend(mine.iter().map(|(c, x, y)| {
                format!(
                    "{}: {x:.2}× fp16 speed, top-1 {y:+.2} points vs fp32",
                    c.key
                )
            }));
            d.legend.push((t.to_string(), color, true));
        }
        Ok(d)
    })
}

/// Percentiles a latency ladder (min, p50, p90, p95, p99, max) stands for.
const LADDER_PCT: [f64; 6] = [0.0, 50.0, 90.0, 95.0, 99.0, 100.0];

/// Per model, the latency CDF of its cells at the smallest batch (from each cell's recorded
/// percentiles: min, p50, p90, p95, p99, max), up to ten cells, taken round-robin over targets.
pub fn latency_cdfs(cells: &[CellSummary]) -> Vec<String> {
    let mut by_model: BTreeMap<&str, Vec<&CellSummary>> = BTreeMap::new();
    for c in cells.iter().filter(|c| c.ladder_ms.is_some()) {
        by_model.entry(c.model.as_str()).or_default().push(c);
    }
    by_model
        .into_iter()
        .map(|(model, mine)| {
            let batch = mine.iter().map(|c| c.batch).min().unwrap_or(1);
            let mut by_target: BTreeMap<&str, Vec<&CellSummary>> = BTreeMap::new();
            for c in mine.into_iter().filter(|c| c.batch == batch) {
                by_target.entry(c.target.as_str()).or_default().push(c);
            }
            let chosen = round_robin(by_target.into_values().collect(), PALETTE.len());
            let xmax = chosen
                .iter()
                .filter_map(|c| c.ladder_ms.map(|l| l[5]))
                .fold(0.0, f64::max)
                * 1.05;
            let frame = Frame {
                caption: format!("latency CDF — {model} (batch {batch})"),
                x: 0.0..xmax.max(1e-6),
                y: 0.0..100.0,
                categories: None,
                log2_x: false,
                x_desc: "latency (ms)",
                y_desc: "percentile",
            };
            render(frame, |chart| {
                let mut d = Drawing::default();
                for (i, c) in chosen.iter().enumerate() {
                    let color = PALETTE[i % PALETTE.len()];
                    let l = c.ladder_ms.expect("filtered above");
                    let pts: Vec<(f64, f64)> = l.iter().copied().zip(LADDER_PCT).collect();
                    chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
                    chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
                    d.tips.extend(
                        pts.iter()
                            .map(|(ms, pct)| format!("{}: p{pct:.0} {ms:.4} ms", c.key)),
                    );
                    d.legend.push((c.key.clone(), color, false));
                }
                Ok(d)
            })
        })
        .collect()
}

/// Up to `n` items, taken in turn from each group.
fn round_robin<T: Copy>(groups: Vec<Vec<T>>, n: usize) -> Vec<T> {
    let mut out = Vec::new();
    let longest = groups.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..longest {
        for g in &groups {
            if let Some(x) = g.get(round) {
                if out.len() < n {
                    out.push(*x);
                }
            }
        }
    }
    out
}

/// Per model and target, throughput (samples/s) against batch size, one line per precision
/// and cache, for models run at two or more batch sizes.
pub fn throughput_by_batch(cells: &[CellSummary]) -> Vec<String> {
    let mut groups: BTreeMap<(&str, &str), Vec<&CellSummary>> = BTreeMap::new();
    for c in cells.iter().filter(|c| c.samples_per_s.is_some()) {
        groups
            .entry((c.model.as_str(), c.target.as_str()))
            .or_default()
            .push(c);
    }
    groups
        .into_iter()
        .filter_map(|((model, target), mine)| {
            let mut batches: Vec<usize> = mine.iter().map(|c| c.batch).collect();
            batches.sort_unstable();
            batches.dedup();
            if batches.len() < 2 {
                return None;
            }
            // (precision order, precision, cache) → (log2 batch, samples/s) points
            type Series<'a> = BTreeMap<(usize, &'a str, &'a str), Vec<(f64, f64)>>;
            let mut series: Series = BTreeMap::new();
            for c in &mine {
                let order = PRECISIONS
                    .iter()
                    .position(|p| *p == c.precision)
                    .unwrap_or(9);
                series
                    .entry((order, c.precision.as_str(), c.cache.as_str()))
                    .or_default()
                    .push((
                        (c.batch as f64).log2(),
                        c.samples_per_s.expect("filtered above"),
                    ));
            }
            let ymax = mine
                .iter()
                .filter_map(|c| c.samples_per_s)
                .fold(0.0, f64::max)
                * 1.1;
            let (lo, hi) = (
                (batches[0] as f64).log2(),
                (*batches.last().expect("two or more") as f64).log2(),
            );
            let frame = Frame {
                caption: format!("throughput vs batch — {model} on {target}"),
                x: lo - 0.3..hi + 0.3,
                y: 0.0..ymax.max(1e-6),
                categories: None,
                log2_x: true,
                x_desc: "batch size (log scale)",
                y_desc: "samples/s",
            };
            Some(render(frame, |chart| {
                let mut d = Drawing::default();
                for (i, ((_, precision, cache), mut pts)) in
                    series.into_iter().take(PALETTE.len()).enumerate()
                {
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let color = PALETTE[i % PALETTE.len()];
                    let label = if cache == "-" {
                        precision.to_string()
                    } else {
                        format!("{precision} · {cache}")
                    };
                    chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
                    chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
                    d.tips.extend(pts.iter().map(|(x, y)| {
                        format!("{label} at batch {}: {y:.0} samples/s", x.exp2().round())
                    }));
                    d.legend.push((label, color, false));
                }
                Ok(d)
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_gets_its_tooltip_escaped() {
        let svg = r#"<svg><circle cx="1" cy="2" r="4"/><line/><circle cx="3" cy="4" r="4"/></svg>"#;
        let out = with_tooltips(svg, &["a <b>".to_string(), "c".to_string()]);
        assert_eq!(
            out,
            r#"<svg><circle cx="1" cy="2" r="4"><title>a &lt;b&gt;</title></circle><line/><circle cx="3" cy="4" r="4"><title>c</title></circle></svg>"#
        );
    }

    #[test]
    fn throughput_charts_need_two_batch_sizes_and_cdfs_come_per_model() {
        use crate::results::schema::{tests_support::sample, Status};
        let mut records = Vec::new();
        for (model, batch) in [("a", 1), ("a", 8), ("b", 1)] {
            let mut r = sample(model, Status::Ok);
            r.cell.batch = batch;
            r.key = r.cell.key();
            records.push(r);
        }
        let cells = super::super::portability::analyze(&records).cells;
        let throughput = throughput_by_batch(&cells);
        assert_eq!(throughput.len(), 1, "only model a runs at two batch sizes");
        assert!(throughput[0].contains("throughput vs batch — a on cpu · mock"));
        assert_eq!(
            throughput[0].matches("<title>").count(),
            2,
            "a tooltip per point"
        );
        let cdfs = latency_cdfs(&cells);
        assert_eq!(cdfs.len(), 2, "one CDF per model");
        assert!(cdfs[0].contains("p99 0.4000 ms"), "percentiles as tooltips");
    }

    #[test]
    fn legends_are_html_beside_the_chart() {
        let html = legend_html(&[("m · c · cpu".into(), PALETTE[0], true)]);
        assert!(html.starts_with("<ul class=\"legend\">"), "{html}");
        assert!(
            html.contains("swatch dot") && html.contains("rgb(31,119,180)"),
            "{html}"
        );
        assert_eq!(legend_html(&[]), "");
    }
}
