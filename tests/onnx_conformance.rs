//! Conformance: onnx's own operator test cases run through the reference backend's engine
//! and match their reference outputs within the onnx backend tests' tolerances (rtol 1e-3,
//! atol 1e-7). Loading and comparison: `tests/common`.

mod common;

use calibench::backend::reference::ReferenceEngine;
use calibench::backend::Engine;
use calibench::matrix::Precision;
use calibench::model::precision;

fn run_case(case: &common::Case) -> Result<(), String> {
    let plan = precision::plan(&case.model, Precision::Fp32, None);
    let mut engine =
        ReferenceEngine::compile(&case.model, case.batch(), plan).map_err(|e| e.to_string())?;
    let outputs = engine.infer(&case.inputs).map_err(|e| e.to_string())?;
    common::compare(&outputs, &case.expected, 1e-7, 1e-3)
}

#[test]
fn onnx_node_cases_pass_on_the_reference_backend() {
    let cases = common::cases(&[common::PARAMETERS]);
    assert!(
        cases.len() >= 40,
        "fixtures/onnx-node holds {} cases",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = run_case(case) {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
