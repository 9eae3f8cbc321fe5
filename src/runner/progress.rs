//! Progress of a run: on a terminal, a bar for the run and a line per worker (one per GPU)
//! showing the cell it is on; elsewhere (CI logs), one line per finished cell, tagged with its
//! worker when there are several.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::matrix::Cell;
use crate::results::schema::Record;

/// A run's progress display.
pub struct Progress {
    bar: Option<ProgressBar>,
    workers: Vec<ProgressBar>,
    lines: bool,
}

impl Progress {
    /// A display for `total` cells run by the named workers.
    pub fn new(total: usize, enabled: bool, workers: &[String]) -> Progress {
        let terminal = crate::console::stderr_is_terminal();
        if !(enabled && terminal) {
            return Progress {
                bar: None,
                workers: Vec::new(),
                lines: enabled,
            };
        }
        // Drawn on calibench's own stderr, which criterion's silencing leaves alone.
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::term(
            crate::console::progress_term(),
            20,
        ));
        let bar = multi.add(ProgressBar::new(total as u64));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} cells  eta {eta}  {msg}",
            )
            .expect("valid template"),
        );
        let workers = if workers.len() > 1 {
            workers
                .iter()
                .map(|w| {
                    let line = multi.add(ProgressBar::new_spinner());
                    line.set_style(
                        ProgressStyle::with_template("  {prefix:<8} {msg}")
                            .expect("valid template"),
                    );
                    line.set_prefix(w.clone());
                    line
                })
                .collect()
        } else {
            Vec::new()
        };
        Progress {
            bar: Some(bar),
            workers,
            lines: false,
        }
    }

    /// A worker (by index) starts a cell.
    pub fn start(&self, cell: &Cell, worker: usize) {
        match self.workers.get(worker) {
            Some(line) => line.set_message(cell.key()),
            None => {
                if let Some(bar) = &self.bar {
                    bar.set_message(cell.key());
                }
            }
        }
    }

    pub fn finish_cell(&self, done: usize, total: usize, record: &Record, worker: Option<&str>) {
        use crate::console::{paint, stderr_colour, Tone};
        use crate::results::schema::Status;
        let tone = match (record.status, record.expected.is_some()) {
            (Status::Ok, _) => Tone::Good,
            (_, true) => Tone::Neutral,
            (Status::Failed, false) => Tone::Bad,
            (Status::Skipped, false) => Tone::Warn,
        };
        let mut what = paint(&record.status.to_string(), tone, stderr_colour());
        if let Some(o) = record.accuracy.as_ref().and_then(|a| a.outputs.first()) {
            if let (Some(t), Some(r)) = (o.top1_accuracy, o.reference_top1_accuracy) {
                what.push_str(&format!(
                    "  top-1 {:.2}% (fp32 {:.2}%)",
                    t * 100.0,
                    r * 100.0
                ));
            }
            what.push_str(&format!("  cosine {:.5}", o.cosine));
        }
        if let Some(l) = &record.latency {
            what.push_str(&format!(
                "  median {:.3} ms  p99 {:.3} ms",
                l.median_ms, l.p99_ms
            ));
        }
        if let Some(e) = &record.error {
            what.push_str(&format!(
                "  [{}] {}",
                e.phase,
                e.message.lines().next().unwrap_or("")
            ));
        }
        let line = match worker {
            Some(w) => format!("[{done}/{total} {w}] {}  {what}", record.key),
            None => format!("[{done}/{total}] {}  {what}", record.key),
        };
        if let Some(bar) = &self.bar {
            bar.println(line);
            bar.inc(1);
        } else if self.lines {
            crate::console::line(&line);
        }
    }

    pub fn done(&self) {
        for w in &self.workers {
            w.finish_and_clear();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
