//! Exporters: records out to other formats, one file per format behind [`Exporter`].

mod csv;
mod json;
mod junit;
mod markdown;

use std::io::Write;

use super::schema::Record;

pub use self::csv::CsvExporter;
pub use self::json::JsonExporter;
pub use self::junit::JunitExporter;
pub use self::markdown::{md_cell, MarkdownExporter};

/// Writes a run's records in one format.
pub trait Exporter {
    /// Writes `records` to `out`.
    fn export(&self, records: &[Record], out: &mut dyn Write) -> anyhow::Result<()>;
}

/// The formats `calibench export` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One row per cell, flat columns.
    Csv,
    /// A JSON array of the records, as stored.
    Json,
    /// JUnit XML: one test case per cell.
    Junit,
    /// A Markdown summary table (for $GITHUB_STEP_SUMMARY).
    Markdown,
}

impl ExportFormat {
    /// The format a file's extension names: .csv, .json, .xml (JUnit) or .md.
    pub fn from_path(path: &std::path::Path) -> anyhow::Result<ExportFormat> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") => Ok(ExportFormat::Csv),
            Some("json") => Ok(ExportFormat::Json),
            Some("xml") => Ok(ExportFormat::Junit),
            Some("md" | "markdown") => Ok(ExportFormat::Markdown),
            _ => anyhow::bail!(
                "{}: cannot tell the format from the extension\nfix: name the file .csv, .json, .xml (JUnit) or .md, or pass --format",
                path.display()
            ),
        }
    }

    /// The exporter for this format.
    pub fn exporter(self) -> Box<dyn Exporter> {
        match self {
            ExportFormat::Csv => Box::new(CsvExporter),
            ExportFormat::Json => Box::new(JsonExporter),
            ExportFormat::Junit => Box::new(JunitExporter),
            ExportFormat::Markdown => Box::new(MarkdownExporter),
        }
    }
}
