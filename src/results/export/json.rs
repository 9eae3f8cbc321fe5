//! JSON export: the records as a pretty-printed array.

use std::io::Write;

use super::Exporter;
use crate::results::schema::Record;

/// Writes records as a JSON array.
pub struct JsonExporter;

impl Exporter for JsonExporter {
    fn export(&self, records: &[Record], out: &mut dyn Write) -> anyhow::Result<()> {
        serde_json::to_writer_pretty(&mut *out, records)?;
        out.write_all(b"\n")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::schema::{tests_support::sample, Status};

    #[test]
    fn json_export_reads_back() {
        let records = vec![sample("a", Status::Ok), sample("b", Status::Failed)];
        let mut out = Vec::new();
        JsonExporter.export(&records, &mut out).unwrap();
        let back: Vec<Record> = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, records);
    }
}
