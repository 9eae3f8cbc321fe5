//! Markdown export: a summary table for `$GITHUB_STEP_SUMMARY` and pull requests.

use std::io::Write;

use super::Exporter;
use crate::results::schema::{Record, Status};

/// Writes a Markdown summary.
pub struct MarkdownExporter;

/// Makes text safe inside a Markdown table cell.
pub fn md_cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\n', " ")
}

impl Exporter for MarkdownExporter {
    fn export(&self, records: &[Record], out: &mut dyn Write) -> anyhow::Result<()> {
        let count = |s: Status| records.iter().filter(|r| r.status == s).count();
        let name = records.first().map_or("", |r| r.matrix.name.as_str());
        writeln!(out, "### calibench: {}", md_cell(name))?;
        writeln!(
            out,
            "\n{} cells: **{} ok**, **{} failed**, {} skipped\n",
            records.len(),
            count(Status::Ok),
            count(Status::Failed),
            count(Status::Skipped)
        )?;
        writeln!(
            out,
            "| cell | status | top-1 | cosine | median ms | p99 ms | end-to-end median ms | note |"
        )?;
        writeln!(
            out,
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
        )?;
        for r in records {
            let acc = r.accuracy.as_ref().and_then(|a| a.outputs.first());
            let top1 = acc
                .and_then(|o| o.top1_accuracy)
                .map_or("-".into(), |t| format!("{:.2}%", t * 100.0));
            let cosine = acc.map_or("-".into(), |o| format!("{:.5}", o.cosine));
            let (median, p99) = r.latency.as_ref().map_or(("-".into(), "-".into()), |l| {
                (format!("{:.3}", l.median_ms), format!("{:.3}", l.p99_ms))
            });
            let end_to_end = r
                .end_to_end
                .as_ref()
                .map_or("-".into(), |l| format!("{:.3}", l.median_ms));
            let status = match r.status {
                Status::Ok => "✅ ok",
                Status::Failed => "❌ failed",
                Status::Skipped => "⏭ skipped",
            };
            let note = r.error.as_ref().map_or(String::new(), |e| {
                format!("[{}] {}", e.phase, e.message.lines().next().unwrap_or(""))
            });
            writeln!(
                out,
                "| `{}` | {status} | {top1} | {cosine} | {median} | {p99} | {end_to_end} | {} |",
                md_cell(&r.key),
                md_cell(&note)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::schema::tests_support::sample;

    #[test]
    fn table_rows_and_escaping() {
        let mut bad = sample("x|y", Status::Failed);
        bad.error.as_mut().unwrap().message = "tensor <script>|a\nsecond line".into();
        let mut out = Vec::new();
        MarkdownExporter
            .export(&[sample("a", Status::Ok), bad], &mut out)
            .unwrap();
        let md = String::from_utf8(out).unwrap();
        assert!(
            md.contains("2 cells: **1 ok**, **1 failed**, 0 skipped"),
            "{md}"
        );
        assert!(md.contains("`x\\|y/c1/cpu/int8/mock/b4`"), "{md}");
        assert!(md.contains("tensor &lt;script&gt;\\|a"), "{md}");
        assert!(!md.contains("second line"), "first line only: {md}");
        assert_eq!(md.lines().filter(|l| l.starts_with("| `")).count(), 2);
    }

    #[test]
    fn gpu_cells_show_end_to_end_beside_compute_time() {
        let mut gpu = sample("g", Status::Ok);
        let mut e2e = gpu.latency.clone().unwrap();
        e2e.median_ms = 0.4567;
        gpu.end_to_end = Some(e2e);
        let mut out = Vec::new();
        MarkdownExporter.export(&[gpu], &mut out).unwrap();
        let md = String::from_utf8(out).unwrap();
        assert!(md.contains("end-to-end median ms"), "{md}");
        let row = md.lines().find(|l| l.starts_with("| `g")).unwrap();
        assert!(row.contains("| 0.457 |"), "{row}");
    }
}
