//! Matrix expansion speed: a 10 000-cell matrix expanded, filtered and sharded.

use std::fmt::Write;
use std::path::Path;

use calibench::matrix::{expand, select, Filter, Shard, Spec};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

/// 10 models × (fp32 + fp16 + 24 caches × {int8, best}) × 4 GPUs × 5 batches = 10 000 cells.
fn big_spec() -> Spec {
    let mut t = String::from(
        "version = 1\nname = \"big\"\n[axes]\nprecisions = [\"fp32\", \"fp16\", \"int8\", \"best\"]\n\
         backends = [\"cuda\"]\ndevices = [\"0\", \"1\", \"name~H100\", \"GPU-0000\"]\nbatch_sizes = [1, 2, 4, 8, 16]\n",
    );
    for m in 0..10 {
        writeln!(t, "[[models]]\nid = \"model{m}\"\npath = \"m{m}.onnx\"").unwrap();
        for c in 0..24 {
            writeln!(
                t,
                "[[caches]]\nid = \"m{m}-cache{c}\"\nmodel = \"model{m}\"\npath = \"c.cache\""
            )
            .unwrap();
        }
    }
    Spec::parse_str(&t, Path::new("big.toml")).expect("valid spec")
}

fn bench(c: &mut Criterion) {
    let spec = big_spec();
    assert_eq!(expand(&spec).len(), 10_000);
    c.bench_function("expand 10k cells", |b| b.iter(|| expand(black_box(&spec))));
    let filter = Filter::parse("precision=int8,batch=8,model=model*").unwrap();
    c.bench_function("expand + filter 10k cells", |b| {
        b.iter(|| select(black_box(&spec), &filter, None))
    });
    let shard = Shard { index: 3, count: 8 };
    c.bench_function("expand + shard 3/8 of 10k cells", |b| {
        b.iter(|| select(black_box(&spec), &Filter::default(), Some(shard)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
