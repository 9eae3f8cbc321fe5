//! Progress of a run: a bar on a terminal, one line per finished cell elsewhere (CI logs).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use crate::matrix::Cell;
use crate::results::schema::Record;

/// A run's progress display.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
}

impl Progress {
    pub fn new(total: usize, enabled: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (enabled && terminal).then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} cells  eta {eta}  {msg}",
                )
                .expect("valid template"),
            );
            bar
        });
        Progress {
            bar,
            lines: enabled && !terminal,
        }
    }

    pub fn start(&self, cell: &Cell) {
        if let Some(bar) = &self.bar {
            bar.set_message(cell.key());
        }
    }

    pub fn finish_cell(&self, done: usize, total: usize, record: &Record) {
        let mut what = record.status.to_string();
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
        let line = format!("[{done}/{total}] {}  {what}", record.key);
        if let Some(bar) = &self.bar {
            bar.println(line);
            bar.inc(1);
        } else if self.lines {
            eprintln!("{line}");
        }
    }

    pub fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
