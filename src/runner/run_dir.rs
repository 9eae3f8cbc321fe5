//! The run folder: made atomically, held by one writer at a time (a lock file naming the
//! holder's pid), and, on `--resume`, checked against the spec and the input files it was
//! started with.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::Utc;

use super::{RunOptions, MATRIX_COPY};
use crate::matrix::LoadedSpec;
use crate::results::read_results;
use crate::results::schema::Status;

/// Name of the lock file inside a run folder while a run writes to it.
pub const LOCK_FILE: &str = ".lock";
/// Name of the file holding the sha256 of every input file the run started with.
pub const INPUTS_FILE: &str = "inputs.json";

/// A run folder held by this process; the lock is removed when it is dropped.
#[derive(Debug)]
pub struct RunDir {
    /// The folder.
    pub dir: PathBuf,
    /// The run id.
    pub run_id: String,
    /// Keys recorded earlier that need not run again.
    pub done: HashSet<String>,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
    }
}

/// Why a run id cannot name a run folder, if it cannot.
pub fn run_id_problem(id: &str) -> Option<String> {
    if id.is_empty() || id == "." || id == ".." {
        return Some(format!("run id {id:?} is not a folder name"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Some(format!(
            "run id {id:?} has characters other than letters, digits, '.', '_' and '-' (it names one folder under --output)"
        ));
    }
    None
}

/// Takes the run folder's lock, or says who holds it. A lock left by a process that no longer
/// runs on this host is taken over.
fn lock(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(LOCK_FILE);
    let host = crate::results::schema::Environment::current().hostname;
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                writeln!(
                    f,
                    "pid {}\nhost {host}\nstarted {}",
                    std::process::id(),
                    Utc::now().to_rfc3339()
                )
                .and_then(|_| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let field = |k: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
                };
                let pid: Option<i32> = field("pid ").and_then(|p| p.parse().ok());
                let same_host = field("host ").is_none_or(|h| h == host);
                if let (Some(pid), true) = (pid, same_host) {
                    if !process_alive(pid) {
                        tracing::warn!(
                            "{}: taking over the lock of pid {pid}, which no longer runs",
                            path.display()
                        );
                        std::fs::remove_file(&path)
                            .with_context(|| format!("cannot remove {}", path.display()))?;
                        continue;
                    }
                }
                bail!(
                    "{}: another calibench is writing to this run folder ({})\nfix: wait for it to end; if no such process runs, delete {}",
                    dir.display(),
                    text.lines().collect::<Vec<_>>().join(", "),
                    path.display()
                );
            }
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
    bail!("{}: cannot take the run folder's lock", path.display())
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// sha256 of every input file the spec names (models, caches, evaluation data), keyed
/// `model:ID`, `cache:MODEL:ID`, `eval_inputs:ID`, …; unreadable files are left out (they are
/// reported elsewhere).
pub fn input_hashes(loaded: &LoadedSpec) -> BTreeMap<String, String> {
    let mut files: Vec<(String, &Path)> = Vec::new();
    for m in &loaded.spec.models {
        files.push((format!("model:{}", m.id), &m.path));
        for (kind, p) in [
            ("eval_inputs", &m.eval_inputs),
            ("eval_labels", &m.eval_labels),
            ("reference", &m.reference),
        ] {
            if let Some(p) = p {
                files.push((format!("{kind}:{}", m.id), p));
            }
        }
    }
    for c in &loaded.spec.caches {
        files.push((format!("cache:{}:{}", c.model, c.id), &c.path));
    }
    files
        .into_iter()
        .filter_map(|(k, p)| crate::hash::sha256_file(p).ok().map(|h| (k, h)))
        .collect()
}

/// Makes (or, with `--resume`, reopens) the run folder and takes its lock.
pub fn prepare(
    loaded: &LoadedSpec,
    opts: &RunOptions,
    hashes: &BTreeMap<String, String>,
) -> anyhow::Result<RunDir> {
    if let Some(dir) = &opts.resume {
        return resume(loaded, opts, dir, hashes);
    }
    if let Some(why) = opts.run_id.as_deref().and_then(run_id_problem) {
        bail!("{why}\nfix: pass --run-id with letters, digits, '.', '_' and '-' only");
    }
    std::fs::create_dir_all(&opts.output_dir)
        .with_context(|| format!("cannot create {}", opts.output_dir.display()))?;
    let base_id = opts.run_id.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            loaded.spec.name,
            Utc::now().format("%Y%m%d-%H%M%S")
        )
    });
    // create_dir (not check-then-create): of two runs asking for one folder, one gets it.
    let mut run_id = base_id.clone();
    let mut n = 2;
    let dir = loop {
        let dir = opts.output_dir.join(&run_id);
        match std::fs::create_dir(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if opts.run_id.is_some() {
                    bail!(
                        "{}: this run folder exists already\nfix: pass --resume {} to continue it, or choose another --run-id",
                        dir.display(),
                        dir.display()
                    );
                }
                run_id = format!("{base_id}-{n}");
                n += 1;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create run folder {}", dir.display()))
            }
        }
    };
    lock(&dir)?;
    let held = RunDir {
        dir,
        run_id,
        done: HashSet::new(),
    };
    std::fs::write(held.dir.join(MATRIX_COPY), &loaded.text)
        .with_context(|| format!("cannot write {}", held.dir.join(MATRIX_COPY).display()))?;
    let hashes = serde_json::to_string_pretty(hashes)?;
    std::fs::write(held.dir.join(INPUTS_FILE), hashes)
        .with_context(|| format!("cannot write {}", held.dir.join(INPUTS_FILE).display()))?;
    Ok(held)
}

fn resume(
    loaded: &LoadedSpec,
    opts: &RunOptions,
    dir: &Path,
    hashes: &BTreeMap<String, String>,
) -> anyhow::Result<RunDir> {
    if !dir.is_dir() {
        bail!(
            "{}: no such run folder\nfix: pass the folder an earlier `calibench run` printed (e.g. reports/<run-id>)",
            dir.display()
        );
    }
    lock(dir)?;
    let mut held = RunDir {
        dir: dir.to_path_buf(),
        run_id: String::new(),
        done: HashSet::new(),
    };
    let copy = std::fs::read(dir.join(MATRIX_COPY)).with_context(|| {
        format!(
            "{}: not a calibench run folder (no {MATRIX_COPY})",
            dir.display()
        )
    })?;
    let recorded_sha = crate::hash::sha256_bytes(&copy);
    if recorded_sha != loaded.sha256 && !opts.force {
        bail!(
            "{} was run with a different matrix spec than {} (sha256 {} vs {})\nfix: start a new run, or pass --force to resume anyway",
            dir.display(),
            loaded.path.display(),
            &recorded_sha[..12],
            &loaded.sha256[..12]
        );
    }
    let changed = changed_inputs(hashes, dir)?;
    if !changed.is_empty() && !opts.force {
        bail!(
            "{}: input files changed since this run started, so its records would mix two versions:\n  {}\nfix: start a new run, or pass --force to resume anyway",
            dir.display(),
            changed.join("\n  ")
        );
    }
    let previous = if dir.join(crate::results::store::RESULTS_FILE).is_file() {
        read_results(dir)?.records
    } else {
        Vec::new()
    };
    let done = previous
        .iter()
        .filter(|r| !(opts.retry_failed && r.status == Status::Failed))
        .map(|r| r.key.clone())
        .collect();
    let run_id = previous
        .first()
        .map(|r| r.run_id.clone())
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "run".into());
    held.run_id = run_id;
    held.done = done;
    Ok(held)
}

/// Inputs whose sha256 differs from the one recorded when the run started (`inputs.json`;
/// for run folders without it, the model and cache hashes in the records).
fn changed_inputs(now: &BTreeMap<String, String>, dir: &Path) -> anyhow::Result<Vec<String>> {
    let then: BTreeMap<String, String> = match std::fs::read_to_string(dir.join(INPUTS_FILE)) {
        Ok(text) => serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a calibench inputs file",
                dir.join(INPUTS_FILE).display()
            )
        })?,
        Err(_) if dir.join(crate::results::store::RESULTS_FILE).is_file() => {
            let mut m = BTreeMap::new();
            for r in read_results(dir)?.records {
                m.insert(format!("model:{}", r.cell.model), r.model.sha256.clone());
                if let Some(c) = &r.cache {
                    m.insert(format!("cache:{}:{}", r.cell.model, c.id), c.sha256.clone());
                }
            }
            m
        }
        Err(_) => BTreeMap::new(),
    };
    Ok(then
        .iter()
        .filter_map(|(k, old)| match now.get(k) {
            Some(new) if new == old => None,
            Some(new) => Some(format!(
                "{k}: sha256 {} then, {} now",
                &old[..12.min(old.len())],
                &new[..12]
            )),
            None => Some(format!("{k}: unreadable now")),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_single_folder_names() {
        for bad in ["", ".", "..", "../x", "a/b", "x y", "a\\b"] {
            assert!(run_id_problem(bad).is_some(), "{bad:?} accepted");
        }
        for good in ["nightly-20261201", "r.1_a"] {
            assert!(run_id_problem(good).is_none());
        }
    }

    #[test]
    fn a_live_lock_refuses_a_second_writer_and_a_dead_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        lock(dir.path()).unwrap();
        let err = lock(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        // A pid that cannot be running (beyond Linux's pid_max).
        let host = crate::results::schema::Environment::current().hostname;
        std::fs::write(
            dir.path().join(LOCK_FILE),
            format!("pid 2147483647\nhost {host}\n"),
        )
        .unwrap();
        lock(dir.path()).unwrap();
    }
}
