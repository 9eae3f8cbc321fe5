//! The results store: `<run dir>/results.jsonl`, one record per line, appended and synced to
//! disk as each cell finishes, so a crash loses at most the cell that was running.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::schema::Record;

/// Name of the results file inside a run folder.
pub const RESULTS_FILE: &str = "results.jsonl";

/// Why results could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a named file.
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line that is not a record.
    #[error("{path}:{line}: not a calibench record: {message}\nfix: the file was edited or written by another tool; remove that line or point at the run folder calibench made")]
    BadRecord {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// No results where some were expected.
    #[error("{0}: no results.jsonl here\nfix: pass a run folder made by `calibench run` (e.g. reports/<run-id>) or its results.jsonl")]
    NotARun(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Accepts a run folder or a results file and returns the results file's path.
pub fn results_path(run: &Path) -> Result<PathBuf, StoreError> {
    let path = if run.is_dir() {
        run.join(RESULTS_FILE)
    } else {
        run.to_path_buf()
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(StoreError::NotARun(run.to_path_buf()))
    }
}

/// Appends records to a run's results file, each one flushed and synced before returning.
#[derive(Debug)]
pub struct ResultsWriter {
    file: File,
    path: PathBuf,
}

impl ResultsWriter {
    /// Opens (creating if needed) `<run_dir>/results.jsonl` for appending. A last line cut
    /// short by a crash is removed first, so the file stays one record per line.
    pub fn open(run_dir: &Path) -> Result<ResultsWriter, StoreError> {
        std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
        let path = run_dir.join(RESULTS_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        if len > 0 {
            let keep = complete_prefix_len(&mut file).map_err(io(&path))?;
            if keep != len {
                tracing::warn!(
                    "{}: dropping an incomplete last line ({} bytes) left by an interrupted run",
                    path.display(),
                    len - keep
                );
                file.set_len(keep).map_err(io(&path))?;
                file.sync_data().map_err(io(&path))?;
            }
        }
        Ok(ResultsWriter { file, path })
    }

    /// Path of the results file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as a line, then flushes and syncs it to disk.
    pub fn append(&mut self, record: &Record) -> Result<(), StoreError> {
        let mut line = serde_json::to_vec(record).map_err(|e| StoreError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(io(&self.path))?;
        self.file.flush().map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))
    }
}

/// Length of the file up to and including its last newline.
fn complete_prefix_len(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let mut pos = len;
    let mut buf = [0u8; 4096];
    while pos > 0 {
        let start = pos.saturating_sub(buf.len() as u64);
        let n = (pos - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        pos = start;
    }
    Ok(0)
}

/// Records read from a results file.
#[derive(Debug, Default)]
pub struct ReadResults {
    /// Every complete record, in file order.
    pub records: Vec<Record>,
    /// Whether a last line cut short by an interrupted write was ignored.
    pub dropped_partial_tail: bool,
}

/// Reads every record of a run folder or results file. A malformed line is an error naming
/// the line, except an unterminated last line (an interrupted write), which is ignored.
pub fn read_results(run: &Path) -> Result<ReadResults, StoreError> {
    let path = results_path(run)?;
    let file = File::open(&path).map_err(io(&path))?;
    let mut reader = BufReader::new(file);
    let mut out = ReadResults::default();
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(io(&path))?;
        if n == 0 {
            break;
        }
        number += 1;
        let complete = line.ends_with('\n');
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(text) {
            Ok(r) => out.records.push(r),
            Err(_) if !complete => out.dropped_partial_tail = true,
            Err(e) => {
                return Err(StoreError::BadRecord {
                    path,
                    line: number,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::schema::{tests_support::sample, Status};

    #[test]
    fn append_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ResultsWriter::open(dir.path()).unwrap();
        w.append(&sample("a", Status::Ok)).unwrap();
        w.append(&sample("b", Status::Failed)).unwrap();
        drop(w);
        let r = read_results(dir.path()).unwrap();
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.records[1].status, Status::Failed);
        assert!(!r.dropped_partial_tail);
    }

    #[test]
    fn interrupted_tail_is_dropped_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ResultsWriter::open(dir.path()).unwrap();
        w.append(&sample("a", Status::Ok)).unwrap();
        drop(w);
        let path = dir.path().join(RESULTS_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"schema\":1,\"run_id\":\"r").unwrap();
        drop(f);
        let r = read_results(dir.path()).unwrap();
        assert_eq!(r.records.len(), 1);
        assert!(r.dropped_partial_tail);
        let mut w = ResultsWriter::open(dir.path()).unwrap();
        w.append(&sample("b", Status::Ok)).unwrap();
        let r = read_results(dir.path()).unwrap();
        assert_eq!(r.records.len(), 2);
        assert!(!r.dropped_partial_tail);
    }

    #[test]
    fn garbage_line_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESULTS_FILE);
        let good = serde_json::to_string(&sample("a", Status::Ok)).unwrap();
        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = read_results(&path).unwrap_err().to_string();
        assert!(err.contains("results.jsonl:2"), "{err}");
    }

    #[test]
    fn missing_run_is_clear() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_results(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no results.jsonl"), "{err}");
    }
}
