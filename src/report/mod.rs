//! Reports: the one-file HTML portability report, its Markdown summary, and the baseline
//! gate. This module reads records only.

pub mod baseline;
pub mod caches;
pub mod charts;
pub mod html;
pub mod json;
pub mod layers;
pub mod portability;

pub use baseline::{compare, BaselineReport, Thresholds};
pub use html::{render_html, render_markdown, ReportOptions};
pub use json::{verdicts_json, verdicts_json_of};
pub use portability::{analyze, Analysis, Verdict};
