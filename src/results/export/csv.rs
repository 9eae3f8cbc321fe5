//! CSV export: one row per cell with flat columns, for spreadsheets and pandas.

use std::io::Write;

use serde::Serialize;

use super::Exporter;
use crate::measure::accuracy::OutputMetrics;
use crate::results::schema::Record;

/// Writes one CSV row per record.
pub struct CsvExporter;

/// The flat row; column names are the field names.
#[derive(Serialize)]
struct Row<'a> {
    run_id: &'a str,
    matrix: &'a str,
    matrix_sha256: &'a str,
    key: &'a str,
    model: &'a str,
    cache: &'a str,
    device: &'a str,
    precision: &'a str,
    backend: &'a str,
    batch: usize,
    status: String,
    error_phase: Option<&'a str>,
    error: Option<&'a str>,
    model_sha256: &'a str,
    cache_sha256: Option<&'a str>,
    gpu_name: Option<&'a str>,
    gpu_uuid: Option<&'a str>,
    engine_build_s: Option<f64>,
    engine_cached: Option<bool>,
    latency_clock: Option<&'a str>,
    iterations: Option<u64>,
    min_ms: Option<f64>,
    mean_ms: Option<f64>,
    median_ms: Option<f64>,
    p90_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    std_ms: Option<f64>,
    inferences_per_s: Option<f64>,
    samples_per_s: Option<f64>,
    /// GPU engines: end-to-end (copies + compute + sync) median and p99.
    end_to_end_median_ms: Option<f64>,
    end_to_end_p99_ms: Option<f64>,
    accuracy_passed: Option<bool>,
    accuracy_reason: Option<&'a str>,
    accuracy_samples: Option<usize>,
    /// Accuracy metrics, the worst over the model's outputs (lowest top-1, agreement, cosine
    /// and SNR; largest differences).
    top1_accuracy: Option<f64>,
    reference_top1_accuracy: Option<f64>,
    top1_agreement: Option<f64>,
    cosine: Option<f64>,
    max_abs: Option<f64>,
    mean_abs: Option<f64>,
    rel_l2: Option<f64>,
    snr_db: Option<f64>,
    calibench_version: &'a str,
    git_commit: &'a str,
    started_at: String,
    finished_at: String,
}

impl<'a> Row<'a> {
    fn of(r: &'a Record) -> Row<'a> {
        let lat = r.latency.as_ref();
        Row {
            run_id: &r.run_id,
            matrix: &r.matrix.name,
            matrix_sha256: &r.matrix.sha256,
            key: &r.key,
            model: &r.cell.model,
            cache: r.cell.cache.as_deref().unwrap_or(""),
            device: &r.cell.device,
            precision: r.cell.precision.as_str(),
            backend: r.cell.backend.as_str(),
            batch: r.cell.batch,
            status: r.status.to_string(),
            error_phase: r.error.as_ref().map(|e| e.phase.as_str()),
            error: r.error.as_ref().map(|e| e.message.as_str()),
            model_sha256: &r.model.sha256,
            cache_sha256: r.cache.as_ref().map(|c| c.sha256.as_str()),
            gpu_name: r.gpu.as_ref().map(|g| g.name.as_str()),
            gpu_uuid: r.gpu.as_ref().map(|g| g.uuid.as_str()),
            engine_build_s: r.engine.as_ref().map(|e| e.build_s),
            engine_cached: r.engine.as_ref().map(|e| e.cached),
            latency_clock: lat.map(|l| l.clock.as_str()),
            iterations: lat.map(|l| l.iterations),
            min_ms: lat.map(|l| l.min_ms),
            mean_ms: lat.map(|l| l.mean_ms),
            median_ms: lat.map(|l| l.median_ms),
            p90_ms: lat.map(|l| l.p90_ms),
            p95_ms: lat.map(|l| l.p95_ms),
            p99_ms: lat.map(|l| l.p99_ms),
            max_ms: lat.map(|l| l.max_ms),
            std_ms: lat.map(|l| l.std_ms),
            inferences_per_s: lat.map(|l| l.inferences_per_s),
            samples_per_s: lat.map(|l| l.samples_per_s),
            end_to_end_median_ms: r.end_to_end.as_ref().map(|l| l.median_ms),
            end_to_end_p99_ms: r.end_to_end.as_ref().map(|l| l.p99_ms),
            accuracy_passed: r.accuracy.as_ref().map(|a| a.passed),
            accuracy_reason: r.accuracy.as_ref().and_then(|a| a.reason.as_deref()),
            accuracy_samples: r.accuracy.as_ref().map(|a| a.samples),
            top1_accuracy: worst(r, |o| o.top1_accuracy, f64::min),
            reference_top1_accuracy: worst(r, |o| o.reference_top1_accuracy, f64::min),
            top1_agreement: worst(r, |o| o.top1_agreement, f64::min),
            cosine: worst(r, |o| Some(o.cosine), f64::min),
            max_abs: worst(r, |o| Some(o.max_abs), f64::max),
            mean_abs: worst(r, |o| Some(o.mean_abs), f64::max),
            rel_l2: worst(r, |o| Some(o.rel_l2), f64::max),
            snr_db: worst(r, |o| o.snr_db, f64::min),
            calibench_version: &r.calibench.version,
            git_commit: &r.calibench.git_commit,
            started_at: r.started_at.to_rfc3339(),
            finished_at: r.finished_at.to_rfc3339(),
        }
    }
}

/// One metric over a record's outputs, folded with `pick` (min or max): the worst of them.
fn worst(
    r: &Record,
    metric: impl Fn(&OutputMetrics) -> Option<f64>,
    pick: fn(f64, f64) -> f64,
) -> Option<f64> {
    r.accuracy
        .as_ref()?
        .outputs
        .iter()
        .filter_map(metric)
        .reduce(pick)
}

impl Exporter for CsvExporter {
    fn export(&self, records: &[Record], out: &mut dyn Write) -> anyhow::Result<()> {
        let mut w = ::csv::Writer::from_writer(out);
        for r in records {
            w.serialize(Row::of(r))?;
        }
        w.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::schema::{tests_support::sample, Status};

    #[test]
    fn one_row_per_cell_with_header() {
        let records = vec![sample("a", Status::Ok), sample("b", Status::Failed)];
        let mut out = Vec::new();
        CsvExporter.export(&records, &mut out).unwrap();
        let mut rd = ::csv::Reader::from_reader(out.as_slice());
        let headers = rd.headers().unwrap().clone();
        assert_eq!(&headers[0], "run_id");
        let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
        let rows: Vec<::csv::StringRecord> = rd.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[0][col("key")], "a/c1/cpu/int8/mock/b4");
        assert_eq!(&rows[0][col("p99_ms")], "0.4");
        assert_eq!(&rows[0][col("error")], "");
        assert_eq!(&rows[1][col("status")], "failed");
        // The quote inside the error message survives CSV quoting.
        assert_eq!(&rows[1][col("error")], "boom, \"quoted\"");
    }
}
