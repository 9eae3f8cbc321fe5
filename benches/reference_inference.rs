//! Reference-backend inference on the demo digits CNN at each precision, batch 1 and 32.
//! `python3 benches/onnxruntime_side_by_side.py` runs this bench and onnxruntime (CPU, one
//! thread) on the same model and inputs, and prints the ratio.

use std::path::Path;

use calibench::backend::reference::ReferenceBackend;
use calibench::backend::{Backend, BuildRequest};
use calibench::matrix::{BackendKind, Cell, Precision};
use calibench::model::data::Dataset;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits");
    let model = dir.join("digits_cnn.onnx");
    let cache = dir.join("digits_cnn.entropy.cache");
    let data = Dataset::read(&dir.join("eval_inputs.npy"), &["input".into()]).unwrap();
    let mut group = c.benchmark_group("reference");
    for batch in [1usize, 32] {
        let inputs = data.batch(0, batch, batch);
        for precision in Precision::ALL {
            let cell = Cell {
                model: "digits".into(),
                cache: precision.needs_cache().then(|| "entropy".into()),
                device: "cpu".into(),
                precision,
                backend: BackendKind::Reference,
                batch,
            };
            let request = BuildRequest {
                cell: &cell,
                model_path: &model,
                cache_path: precision.needs_cache().then_some(cache.as_path()),
                gpu_ordinal: None,
                input_shapes: &Default::default(),
            };
            let mut engine = ReferenceBackend.build(&request).unwrap();
            group.bench_with_input(
                BenchmarkId::new(precision.as_str(), batch),
                &inputs,
                |b, inputs| b.iter(|| engine.infer(inputs).unwrap()),
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
