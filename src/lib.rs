//! calibench: can a TensorRT INT8 calibration cache made on one GPU be reused on another,
//! and at what cost in accuracy and latency?
//!
//! A matrix spec ([`matrix`]) crosses models × caches × devices × precisions × backends ×
//! batch sizes into cells; the [`runner`] builds each cell's engine through a
//! [`backend::Backend`], measures it ([`measure`]) and appends a record to the
//! [`results`] store.

pub mod backend;
pub mod cache;
pub mod console;
pub mod gpu;
pub mod hash;
pub mod matrix;
pub mod measure;
pub mod model;
pub mod report;
pub mod results;
pub mod runner;

/// The third-party test corpus beside the checkout (`../shared/fixtures`), for tests.
#[doc(hidden)]
pub mod corpus {
    use std::path::{Path, PathBuf};

    /// Tells the person running the tests that one was skipped and why. Written to the
    /// process's stderr directly, which libtest does not capture, so it shows in `cargo test`.
    pub fn say_skipped(why: &str) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{why}");
    }

    /// `../shared/fixtures/trt-caches` when present. When it is absent the caller's test is
    /// skipped with a line on stderr saying so, unless `CALIBENCH_REQUIRE_CORPUS=1` (set by
    /// `.ci/run`), which makes its absence a failure.
    pub fn trt_caches() -> Option<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/trt-caches");
        if dir.is_dir() {
            return Some(dir);
        }
        if std::env::var("CALIBENCH_REQUIRE_CORPUS").is_ok_and(|v| v == "1") {
            panic!(
                "CALIBENCH_REQUIRE_CORPUS=1, but the third-party corpus {} is absent",
                dir.display()
            );
        }
        say_skipped(&format!(
            "skipped: the third-party corpus {} is absent (a clone outside the usual layout); set CALIBENCH_REQUIRE_CORPUS=1 to make that a failure",
            dir.display()
        ));
        None
    }
}
