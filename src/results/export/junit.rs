//! JUnit XML export (quick-junit): one test case per cell, failing with the gate's reason, so
//! CI systems show calibench cells next to unit tests.

use std::io::Write;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::Exporter;
use crate::results::schema::{Record, Status};

/// Writes a JUnit report.
pub struct JunitExporter;

impl Exporter for JunitExporter {
    fn export(&self, records: &[Record], out: &mut dyn Write) -> anyhow::Result<()> {
        let name = records.first().map_or("calibench".to_string(), |r| {
            format!("calibench {}", r.matrix.name)
        });
        let mut report = Report::new(name.clone());
        let mut suite = TestSuite::new(name);
        for r in records {
            let mut status = match r.status {
                Status::Ok => TestCaseStatus::success(),
                Status::Failed => TestCaseStatus::non_success(NonSuccessKind::Failure),
                Status::Skipped => TestCaseStatus::skipped(),
            };
            if let Some(e) = &r.error {
                status.set_message(e.message.lines().next().unwrap_or_default().to_string());
                status.set_type(e.phase.clone());
                status.set_description(e.message.clone());
            }
            let mut case = TestCase::new(r.key.clone(), status);
            case.set_classname(format!("{}.{}", r.matrix.name, r.cell.model));
            let took = (r.finished_at - r.started_at)
                .to_std()
                .unwrap_or(Duration::ZERO);
            case.set_time(took);
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
        report.serialize(out)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::schema::tests_support::sample;

    #[test]
    fn failures_carry_the_reason_and_skips_are_skipped() {
        let mut skipped = sample("c", Status::Skipped);
        skipped.error = Some(crate::results::schema::CellError {
            phase: "setup".into(),
            message: "GPU name~A100 is not present".into(),
        });
        let records = vec![
            sample("a", Status::Ok),
            sample("b<&>", Status::Failed),
            skipped,
        ];
        let mut out = Vec::new();
        JunitExporter.export(&records, &mut out).unwrap();
        let xml = String::from_utf8(out).unwrap();
        assert!(
            xml.contains("tests=\"3\"")
                && xml.contains("failures=\"1\"")
                && xml.contains("skipped=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains("<failure message=\"boom, &quot;quoted&quot;\" type=\"build\""),
            "{xml}"
        );
        assert!(
            xml.contains("b&lt;&amp;&gt;/c1/cpu/int8/mock/b4"),
            "names are escaped: {xml}"
        );
        assert!(
            xml.contains("<skipped message=\"GPU name~A100 is not present\""),
            "{xml}"
        );
    }
}
