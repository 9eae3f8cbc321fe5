//! Property-based fuzzing of everything that reads users' files: the cache parser, the
//! importers, the ONNX loader, and the Q/DQ and fp16 rewrites (with coverage) on what loads.
//! Inputs are mutations of real files: the caches of ../shared/fixtures/trt-caches (when
//! present) and of fixtures/digits, and the digits CNN. The property is "no panic"; errors
//! are fine.
//!
//! CI runs proptest's default 256 cases per target. The long run (4 targets × 250 000 = 10⁶
//! inputs, a few minutes on 2 cores):
//!
//! ```sh
//! PROPTEST_CASES=250000 cargo test --release --test fuzz
//! ```

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use calibench::cache::{import, CalibrationCache};
use calibench::matrix::Precision;
use calibench::model::onnx::{pb, OnnxModel};
use calibench::model::{fp16, precision, qdq};
use proptest::prelude::*;

mod common;

/// The real files mutations start from.
struct Seeds {
    caches: Vec<Vec<u8>>,
    model: Vec<u8>,
    cache: CalibrationCache,
}

fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut files: Vec<PathBuf> = ["entropy", "minmax", "calibench-entropy"]
            .iter()
            .map(|m| PathBuf::from(common::digits(&format!("digits_cnn.{m}.cache"))))
            .collect();
        if let Some(dir) = calibench::corpus::trt_caches() {
            let mut corpus: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "cache"))
                .collect();
            corpus.sort();
            files.extend(corpus);
        }
        let model = std::fs::read(common::digits("digits_cnn.onnx")).unwrap();
        let cache =
            CalibrationCache::read(Path::new(&common::digits("digits_cnn.entropy.cache"))).unwrap();
        Seeds {
            caches: files.iter().map(|f| std::fs::read(f).unwrap()).collect(),
            model,
            cache,
        }
    })
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Repeat(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    Just(b'\n'),
                    Just(b':'),
                    Just(b' '),
                    Just(b'-'),
                    Just(0xff)
                ],
                1..12
            )
        )
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Repeat(i, n)),
    ]
}

fn mutate(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Flip(i, x) if !b.is_empty() => {
                let i = i % b.len();
                b[i] ^= x | 1;
            }
            Edit::Flip(..) => {}
            Edit::Insert(i, bytes) => {
                let i = at(*i, b.len());
                b.splice(i..i, bytes.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = at(*i, b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Edit::Truncate(i) => {
                let i = at(*i, b.len());
                b.truncate(i);
            }
            Edit::Repeat(i, n) => {
                let i = at(*i, b.len());
                let end = (i + n).min(b.len());
                let part = b[i..end].to_vec();
                b.splice(i..i, part);
            }
        }
    }
    b
}

/// Everything calibench does with a model a user hands it, before running it.
fn rewrite_all(model: &OnnxModel, cache: &CalibrationCache) {
    let _ = model.inputs();
    let _ = model.outputs();
    let _ = calibench::cache::coverage::check(cache, model, None);
    for p in [Precision::Fp16, Precision::Int8, Precision::Best] {
        let plan = precision::plan(model, p, Some(cache));
        let q = qdq::apply(model, &plan);
        let _ = fp16::apply(&q);
    }
    let _ = fp16::apply(model);
}

/// A structural edit of a decoded model: the places exporters and hand edits get wrong.
#[derive(Debug, Clone)]
enum ModelEdit {
    Dims(usize, Vec<i64>),
    DataType(usize, i32),
    DropInitializer(usize),
    OpType(usize, &'static str),
    RenameInput(usize, usize),
    DropNodeInputs(usize),
    TruncateRaw(usize, usize),
}

fn model_edit() -> impl Strategy<Value = ModelEdit> {
    let dim = prop_oneof![Just(0i64), Just(-1), Just(1), 2i64..64, Just(i64::MAX)];
    prop_oneof![
        (any::<usize>(), prop::collection::vec(dim, 0..5)).prop_map(|(i, d)| ModelEdit::Dims(i, d)),
        (any::<usize>(), 0i32..17).prop_map(|(i, t)| ModelEdit::DataType(i, t)),
        any::<usize>().prop_map(ModelEdit::DropInitializer),
        (
            any::<usize>(),
            prop::sample::select(vec![
                "Conv",
                "Gemm",
                "MatMul",
                "Relu",
                "Reshape",
                "QuantizeLinear",
                "Shape",
                "Unknown"
            ])
        )
            .prop_map(|(i, op)| ModelEdit::OpType(i, op)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| ModelEdit::RenameInput(a, b)),
        any::<usize>().prop_map(ModelEdit::DropNodeInputs),
        (any::<usize>(), any::<usize>()).prop_map(|(i, n)| ModelEdit::TruncateRaw(i, n)),
    ]
}

fn apply_edit(g: &mut pb::GraphProto, e: &ModelEdit) {
    let inits = g.initializer.len();
    let nodes = g.node.len();
    match e {
        ModelEdit::Dims(i, d) if inits > 0 => g.initializer[i % inits].dims = d.clone(),
        ModelEdit::DataType(i, t) if inits > 0 => g.initializer[i % inits].data_type = *t,
        ModelEdit::DropInitializer(i) if inits > 0 => {
            g.initializer.remove(i % inits);
        }
        ModelEdit::OpType(i, op) if nodes > 0 => g.node[i % nodes].op_type = op.to_string(),
        ModelEdit::RenameInput(a, b) if nodes > 0 => {
            let names: Vec<String> = g.node.iter().flat_map(|n| n.output.clone()).collect();
            let n = &mut g.node[a % nodes];
            if !n.input.is_empty() && !names.is_empty() {
                let slot = b % n.input.len();
                n.input[slot] = names[b % names.len()].clone();
            }
        }
        ModelEdit::DropNodeInputs(i) if nodes > 0 => g.node[i % nodes].input.clear(),
        ModelEdit::TruncateRaw(i, n) if inits > 0 => {
            let raw = &mut g.initializer[i % inits].raw_data;
            let keep = n % (raw.len() + 1);
            raw.truncate(keep);
        }
        _ => {}
    }
}

proptest! {
    #[test]
    fn cache_parser_and_importers_never_panic(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let s = seeds();
        let bytes = mutate(&s.caches[seed.index(s.caches.len())], &edits);
        let parsed = CalibrationCache::parse_bytes(&bytes);
        if let Ok(c) = &parsed {
            // What parses also writes and parses back.
            let again = CalibrationCache::parse(&c.to_text());
            prop_assert!(again.is_ok(), "{:?}", again.err());
        }
        let _ = import::detect(&bytes);
    }

    #[test]
    fn onnx_loader_never_panics(edits in prop::collection::vec(edit(), 1..4)) {
        let s = seeds();
        let bytes = mutate(&s.model, &edits);
        if let Ok(m) = OnnxModel::from_bytes(Path::new("fuzz.onnx"), &bytes) {
            rewrite_all(&m, &s.cache);
        }
    }

    #[test]
    fn rewrites_never_panic_on_structural_edits(
        edits in prop::collection::vec(model_edit(), 1..5),
    ) {
        let s = seeds();
        let mut m = OnnxModel::from_bytes(Path::new("fuzz.onnx"), &s.model).unwrap();
        for e in &edits {
            apply_edit(m.graph_mut(), e);
        }
        rewrite_all(&m, &s.cache);
        // What the rewrites see must also survive a save and a reload.
        let _ = OnnxModel::from_bytes(Path::new("fuzz.onnx"), &m.to_bytes());
    }

    #[test]
    fn caches_with_mutated_names_and_scales_rewrite_without_panic(
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let s = seeds();
        let bytes = mutate(&s.caches[0], &edits);
        if let Ok(c) = CalibrationCache::parse_bytes(&bytes) {
            let m = OnnxModel::from_bytes(Path::new("fuzz.onnx"), &s.model).unwrap();
            rewrite_all(&m, &c);
        }
    }
}
