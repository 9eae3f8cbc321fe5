//! Calibration-cache speed: parsing a 50 000-tensor cache, and entropy calibration of the
//! demo model's calibration split (200 samples). onnxruntime's calibrator on the same data is
//! timed side by side by `python3 benches/entropy_vs_onnxruntime.py`.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use calibench::backend::reference;
use calibench::cache::calibrate::EngineActivations;
use calibench::cache::calibrate::{collect_ranges, Method};
use calibench::cache::CalibrationCache;
use calibench::model::data::Dataset;
use calibench::model::onnx::OnnxModel;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn big_cache_text(n: usize) -> String {
    let mut t = String::from("TRT-101401-EntropyCalibration2\n");
    for i in 0..n {
        let scale = (i as f32 + 1.0) / 1e5;
        writeln!(
            t,
            "/model/layer.{}/block.{}/Conv_output_0: {:08x}",
            i / 100,
            i % 100,
            scale.to_bits()
        )
        .unwrap();
    }
    t
}

fn parse(c: &mut Criterion) {
    let text = big_cache_text(50_000);
    c.bench_function("parse 50k-tensor cache", |b| {
        b.iter(|| CalibrationCache::parse(black_box(&text)).unwrap())
    });
    let cache = CalibrationCache::parse(&text).unwrap();
    c.bench_function("write 50k-tensor cache", |b| {
        b.iter(|| black_box(&cache).to_text())
    });
}

fn entropy(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits");
    let model = OnnxModel::load(&dir.join("digits_cnn.onnx")).unwrap();
    let data = Dataset::read(&dir.join("calib.npy"), &["input".into()]).unwrap();
    let tensors = model.quantizable_tensors();
    let mut group = c.benchmark_group("calibrate demo model (200 samples)");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(1));
    for method in [Method::Entropy, Method::MinMax, Method::Percentile(99.99)] {
        group.bench_function(method.to_string(), |b| {
            b.iter(|| {
                let mut source = EngineActivations::new(
                    &model,
                    tensors.clone(),
                    data.clone(),
                    200,
                    &reference::fp32_engine,
                )
                .unwrap();
                collect_ranges(&mut source, method).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, entropy);
criterion_main!(benches);
