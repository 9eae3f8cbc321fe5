//! Merging shard results from several runners into one run folder: same matrix (sha256)
//! unless forced; duplicate cells (the same key in two shards) and cells of the matrix that no
//! shard recorded are reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::schema::Record;
use super::store::{read_results, ResultsWriter};

/// What a merge found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MergeSummary {
    /// Records written.
    pub records: usize,
    /// Keys found in more than one input (the one that finished last is kept).
    pub duplicates: Vec<String>,
    /// Matrix sha256s seen.
    pub matrices: Vec<String>,
}

/// Why runs could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Different matrices.
    #[error("the runs come from different matrix specs ({0})\nfix: merge shards of one matrix, or pass --force to merge anyway")]
    DifferentMatrices(String),
    /// Reading or writing failed.
    #[error(transparent)]
    Store(#[from] super::StoreError),
    /// The output exists.
    #[error("{0}: exists already\nfix: choose a new output folder")]
    OutputExists(PathBuf),
}

/// Reads several runs, checks they belong together, and returns the merged records (one per
/// key, in input order).
pub fn merge_records(
    runs: &[PathBuf],
    force: bool,
) -> Result<(Vec<Record>, MergeSummary), MergeError> {
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut merged: Vec<Record> = Vec::new();
    let mut summary = MergeSummary::default();
    for run in runs {
        for r in read_results(run)?.records {
            if !summary.matrices.contains(&r.matrix.sha256) {
                summary.matrices.push(r.matrix.sha256.clone());
            }
            match by_key.get(&r.key) {
                Some(&i) => {
                    if !summary.duplicates.contains(&r.key) {
                        summary.duplicates.push(r.key.clone());
                    }
                    if r.finished_at > merged[i].finished_at {
                        merged[i] = r;
                    }
                }
                None => {
                    by_key.insert(r.key.clone(), merged.len());
                    merged.push(r);
                }
            }
        }
    }
    if summary.matrices.len() > 1 && !force {
        let shas: Vec<String> = summary
            .matrices
            .iter()
            .map(|s| s.chars().take(12).collect())
            .collect();
        return Err(MergeError::DifferentMatrices(shas.join(", ")));
    }
    summary.records = merged.len();
    Ok((merged, summary))
}

/// Writes merged records to a new run folder (with the first input's matrix copy).
pub fn write_merged(out: &Path, records: &[Record], first_run: &Path) -> Result<(), MergeError> {
    if out.exists() {
        return Err(MergeError::OutputExists(out.to_path_buf()));
    }
    let mut w = ResultsWriter::open(out)?;
    for r in records {
        w.append(r)?;
    }
    let dir = if first_run.is_dir() {
        first_run.to_path_buf()
    } else {
        first_run
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    };
    let _ = std::fs::copy(dir.join("matrix.toml"), out.join("matrix.toml"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::schema::{tests_support::sample, Status};

    fn run_with(dir: &Path, name: &str, records: &[Record]) -> PathBuf {
        let p = dir.join(name);
        let mut w = ResultsWriter::open(&p).unwrap();
        for r in records {
            w.append(r).unwrap();
        }
        p
    }

    #[test]
    fn shards_merge_and_duplicates_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut late = sample("b", Status::Failed);
        late.finished_at = "2026-11-25T11:00:00Z".parse().unwrap();
        let a = run_with(
            dir.path(),
            "a",
            &[sample("a", Status::Ok), sample("b", Status::Ok)],
        );
        let b = run_with(dir.path(), "b", &[late, sample("c", Status::Ok)]);
        let (records, summary) = merge_records(&[a.clone(), b], false).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(summary.duplicates, vec![records[1].key.clone()]);
        assert_eq!(records[1].status, Status::Failed, "the later record wins");
        let out = dir.path().join("merged");
        write_merged(&out, &records, &a).unwrap();
        assert_eq!(read_results(&out).unwrap().records.len(), 3);
        assert!(matches!(
            write_merged(&out, &records, &a),
            Err(MergeError::OutputExists(_))
        ));
    }

    #[test]
    fn different_matrices_need_force() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = sample("z", Status::Ok);
        other.matrix.sha256 = "ff".repeat(32);
        let a = run_with(dir.path(), "a", &[sample("a", Status::Ok)]);
        let b = run_with(dir.path(), "b", &[other]);
        let e = merge_records(&[a.clone(), b.clone()], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--force"), "{e}");
        assert_eq!(merge_records(&[a, b], true).unwrap().0.len(), 2);
    }
}
