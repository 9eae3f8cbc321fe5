//! `calibench check`: one model and (optionally) one cache, the way trtexec and Polygraphy are
//! used, without writing a matrix spec. It builds the one-model spec from the flags, runs it
//! like `run` (record, report, summary in the run folder) and prints the verdict.

use std::path::{Path, PathBuf};

use anyhow::Context;
use calibench::matrix::spec::{Axes, CacheSpec, InputSpec, ModelSpec, ToleranceSpec};
use calibench::matrix::{BackendKind, Precision, Spec};

use super::run::{execute, Which};
use super::Outcome;
use crate::cli::OneShotArgs;

/// A spec id from a file name: its stem, with characters ids do not take replaced by `-`.
fn id_of(path: &Path, fallback: &str) -> String {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(fallback);
    let id = calibench::matrix::spec::to_id_chars(stem, '-');
    if id.is_empty() {
        fallback.to_string()
    } else {
        id
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
}

/// The precisions the flags ask for, fp32 first (the baseline every verdict is judged against).
/// `--int8 --fp16` together is trtexec's "either, whichever is faster": `best`.
fn precisions(args: &OneShotArgs) -> Vec<Precision> {
    let mut p = vec![Precision::Fp32];
    if args.fp16 {
        p.push(Precision::Fp16);
    }
    if args.best || (args.int8 && args.fp16) {
        p.push(Precision::Best);
    }
    if args.int8 && !args.fp16 {
        p.push(Precision::Int8);
    }
    p
}

/// The gates: with --atol/--rtol, Polygraphy's elementwise test at those; else defaults a
/// user of any model can trust without knowing its output scale: fp32 and fp16 within 1e-3 /
/// 1e-2 at the 99th percentile, and int8/best judged by cosine similarity (≥ 0.99), top-1
/// drop (≤ 1 point, with labels) and the median element (within 10 %).
fn tolerance_of(args: &OneShotArgs) -> anyhow::Result<ToleranceSpec> {
    let text = if args.exec.atol.is_some() || args.exec.rtol.is_some() {
        String::new()
    } else {
        "atol = 1e-3\nrtol = 1e-2\ncheck = \"quantile=0.99\"\nmin_cosine = 0.999\nmax_top1_drop = 0.01\n\
         [precision.int8]\natol = 0.0\nrtol = 0.1\ncheck = \"median\"\nmin_cosine = 0.99\n\
         [precision.best]\natol = 0.0\nrtol = 0.1\ncheck = \"median\"\nmin_cosine = 0.99\n"
            .to_string()
    };
    let mut t: ToleranceSpec = toml::from_str(&text)?;
    t.all.atol = args.exec.atol.or(t.all.atol);
    t.all.rtol = args.exec.rtol.or(t.all.rtol);
    Ok(t)
}

/// A spec with nothing but its name: every other setting at its default.
fn minimal_spec(model_id: &str) -> anyhow::Result<Spec> {
    Ok(toml::from_str(&format!(
        "version = 1\nname = \"check-{model_id}\"\n[axes]\nprecisions = [\"fp32\"]\nbackends = [\"reference\"]\n"
    ))?)
}

/// The spec as TOML without empty tables and settings left at their defaults.
fn spec_toml(spec: &Spec) -> anyhow::Result<String> {
    let mut v = toml::Value::try_from(spec).context("cannot write the spec as TOML")?;
    fn prune(v: &mut toml::Value) -> bool {
        match v {
            toml::Value::Table(t) => {
                t.retain(|_, x| !prune(x));
                t.is_empty()
            }
            toml::Value::Array(a) => {
                a.iter_mut().for_each(|x| {
                    prune(x);
                });
                a.is_empty()
            }
            _ => false,
        }
    }
    let defaults = toml::Value::try_from(minimal_spec("m")?)?;
    if let Some(t) = v.as_table_mut() {
        for section in ["mock", "gate", "cross_check", "latency"] {
            if t.get(section) == defaults.get(section) {
                t.remove(section);
            }
        }
    }
    prune(&mut v);
    Ok(toml::to_string(&v)?)
}

/// The one-model spec the flags describe (paths absolute).
pub fn spec_of(args: &OneShotArgs) -> anyhow::Result<Spec> {
    let model_id = id_of(&args.onnx, "model");
    let precisions = precisions(args);
    let quantized = precisions
        .iter()
        .any(|p| matches!(p, Precision::Int8 | Precision::Best));
    if quantized && args.calib.is_none() {
        anyhow::bail!(
            "--int8/--best need a calibration cache\nfix: pass --calib FILE, or make one: calibench calibrate -m {} -d CALIB.npy -o {}.cache",
            args.onnx.display(),
            model_id
        );
    }
    if args.calib.is_some() && !quantized {
        anyhow::bail!(
            "--calib is used by int8 and best engines only\nfix: add --int8 (or --best, or --int8 --fp16)"
        );
    }
    if args.reference.is_some() && args.eval.is_none() {
        anyhow::bail!(
            "--reference holds outputs for evaluation inputs\nfix: pass the inputs they were computed from with --eval"
        );
    }
    let inputs = args
        .shapes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(name, shape)| (name, InputSpec { shape }))
        .collect();
    let batch = args.batch.unwrap_or_else(|| {
        args.shapes
            .as_ref()
            .and_then(|s| s.values().next())
            .and_then(|d| d.first().copied())
            .unwrap_or(1)
    });
    let device = args.device.clone().unwrap_or_else(|| match args.backend {
        BackendKind::Cuda | BackendKind::Tensorrt => "0".to_string(),
        _ => "cpu".to_string(),
    });
    let tolerance = tolerance_of(args)?;
    let model = ModelSpec {
        id: model_id.clone(),
        path: absolute(&args.onnx)?,
        eval_inputs: args.eval.as_deref().map(absolute).transpose()?,
        eval_labels: args.labels.as_deref().map(absolute).transpose()?,
        reference: args.reference.as_deref().map(absolute).transpose()?,
        tolerance,
        reference_backend: BackendKind::Reference,
        inputs,
    };
    let caches = match &args.calib {
        Some(c) => vec![CacheSpec {
            id: id_of(c, "cache"),
            model: model_id.clone(),
            path: absolute(c)?,
        }],
        None => Vec::new(),
    };
    let mut spec = minimal_spec(&model_id)?;
    spec.description = Some("made by calibench check".into());
    spec.axes = Axes {
        precisions,
        backends: vec![args.backend],
        devices: vec![device],
        batch_sizes: vec![batch],
    };
    spec.models = vec![model];
    spec.caches = caches;
    Ok(spec)
}

pub fn check(args: &OneShotArgs) -> anyhow::Result<Outcome> {
    let spec = spec_of(args)?;
    let text = spec_toml(&spec)?;
    if args.print_spec {
        print!("{text}");
        return Ok(Outcome::Ok);
    }
    // The spec is kept as a file (and copied into the run folder) like any other matrix.
    let dir = args.exec.output.join(".cache").join("check");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{}.toml", spec.name));
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    let loaded = Spec::load(&path)?;
    execute(
        loaded,
        &args.exec,
        Which {
            filter: Default::default(),
            shard: None,
            run_id: None,
            resume: None,
            retry_failed: false,
            force: false,
            verdict_lines: true,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_file_names() {
        assert_eq!(
            id_of(Path::new("/m/resnet50 v1.onnx"), "model"),
            "resnet50-v1"
        );
        assert_eq!(id_of(Path::new("yolo.int8.cache"), "cache"), "yolo.int8");
    }
}
