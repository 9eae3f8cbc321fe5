//! `calibench cache …`: inspect, diff, import and describe calibration caches.

use std::path::Path;

use anyhow::Context;
use calibench::cache::diff::diff;
use calibench::cache::import::{read_any, to_trt, Detected};
use calibench::cache::inspect::{inspect, LARGE_AMAX};
use calibench::cache::provenance::{sidecar_path, Provenance};
use calibench::cache::{CalibrationCache, Calibrator};

use super::Outcome;
use crate::cli::{
    CacheCommand, CheckArgs, DiffArgs, ImportArgs, InspectArgs, ProvenanceArgs, ToQdqArgs,
};
use calibench::cache::coverage::{check, Verdict};
use calibench::matrix::Precision;
use calibench::model::onnx::OnnxModel;
use calibench::model::{precision, qdq};

pub fn cache(cmd: &CacheCommand) -> anyhow::Result<Outcome> {
    match cmd {
        CacheCommand::Inspect(a) => inspect_cmd(a),
        CacheCommand::Check(a) => check_cmd(a),
        CacheCommand::Diff(a) => diff_cmd(a),
        CacheCommand::ToQdq(a) => to_qdq_cmd(a),
        CacheCommand::Import(a) => import_cmd(a),
        CacheCommand::Provenance(a) => provenance_cmd(a),
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn inspect_cmd(args: &InspectArgs) -> anyhow::Result<Outcome> {
    let detected = read_any(&args.file)?;
    let provenance = Provenance::read_for(&args.file)?;
    let Detected::TensorRt(cache) = &detected else {
        let ranges = detected.ranges();
        if args.json {
            print_json(&serde_json::json!({
                "file": args.file,
                "format": detected.describe(),
                "tensors": ranges.len(),
                "ranges": ranges,
            }))?;
        } else {
            println!("file:     {}", args.file.display());
            println!("format:   {}", detected.describe());
            println!("tensors:  {}", ranges.len());
        }
        return Ok(Outcome::Ok);
    };
    let report = inspect(cache);
    if args.json {
        print_json(
            &serde_json::json!({ "file": args.file, "inspection": report, "provenance": provenance }),
        )?;
        return Ok(Outcome::Ok);
    }
    println!("file:        {}", args.file.display());
    println!(
        "header:      {}  (TensorRT {}, {})",
        report.header, report.tensorrt_version, report.calibrator
    );
    println!("tensors:     {}", report.tensors);
    match &report.ranges {
        Some(r) => println!(
            "ranges:      amax min {}  median {}  max {}  ({} finite positive scales; amax = scale × 127)",
            num(r.min_amax),
            num(r.median_amax),
            num(r.max_amax),
            r.count
        ),
        None => println!("ranges:      none usable (no finite positive scale)"),
    }
    for n in &report.notes {
        println!("note:        {n}");
    }
    match &provenance {
        Some(p) => {
            for (k, v) in p.fields() {
                println!("provenance:  {k} = {v}");
            }
        }
        None => println!(
            "provenance:  none ({} not found)",
            sidecar_path(&args.file).display()
        ),
    }
    if report.flagged.is_empty() {
        println!(
            "flags:       none (no zero, negative, NaN/Inf, denormal, or > {LARGE_AMAX} ranges)"
        );
    } else {
        println!(
            "flags:       {} entr(ies) worth a look:",
            report.flagged.len()
        );
        let width = report
            .flagged
            .iter()
            .map(|f| f.name.len())
            .max()
            .unwrap_or(0)
            .min(60);
        for f in &report.flagged {
            println!(
                "  {:<width$}  {}  {:<9} {}",
                f.name,
                f.bits,
                format!("{:?}", f.flag).to_lowercase(),
                f.flag.meaning()
            );
        }
    }
    Ok(Outcome::Ok)
}

/// A number in fixed notation where readable, scientific elsewhere.
fn num(v: f64) -> String {
    if v != 0.0 && !(1e-4..1e6).contains(&v.abs()) {
        format!("{v:.4e}")
    } else {
        format!("{v:.6}")
    }
}

fn read_trt(path: &Path) -> anyhow::Result<CalibrationCache> {
    Ok(CalibrationCache::read(path)?)
}

fn diff_cmd(args: &DiffArgs) -> anyhow::Result<Outcome> {
    let (a, b) = (read_trt(&args.a)?, read_trt(&args.b)?);
    let d = diff(&a, &b);
    let failed = args.fail_above.is_some_and(|t| d.summary.max_abs_log2 > t);
    if args.json {
        print_json(&d)?;
    } else {
        println!("A: {}  ({})", args.a.display(), d.header_a);
        println!("B: {}  ({})", args.b.display(), d.header_b);
        println!(
            "{} tensors in both ({} identical), {} only in A, {} only in B",
            d.summary.common,
            d.summary.identical,
            d.only_in_a.len(),
            d.only_in_b.len()
        );
        if d.summary.common == 0 {
            println!("warning: the caches share no tensor name: they belong to different models, or one model was re-exported with new names");
        }
        println!(
            "|log2(scale B / scale A)|: median {:.4}, max {:.4}  (1.0 = a factor of 2)",
            d.summary.median_abs_log2, d.summary.max_abs_log2
        );
        let shown: Vec<_> = d
            .tensors
            .iter()
            .filter(|t| t.log2_ratio != 0.0)
            .take(args.top)
            .collect();
        if !shown.is_empty() {
            let width = shown
                .iter()
                .map(|t| t.name.len())
                .max()
                .unwrap_or(0)
                .min(60);
            println!(
                "\n{:<width$}  {:>12}  {:>12}  {:>9}  {:>8}",
                "TENSOR", "AMAX A", "AMAX B", "B/A", "LOG2"
            );
            for t in shown {
                println!(
                    "{:<width$}  {:>12}  {:>12}  {:>9.4}  {:>+8.3}",
                    t.name,
                    num(f64::from(t.scale_a) * 127.0),
                    num(f64::from(t.scale_b) * 127.0),
                    t.ratio,
                    t.log2_ratio
                );
            }
        }
        for (label, names) in [("only in A", &d.only_in_a), ("only in B", &d.only_in_b)] {
            if !names.is_empty() {
                println!(
                    "\n{label} ({}): {}",
                    names.len(),
                    names
                        .iter()
                        .take(args.top)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        if let Some(t) = args.fail_above {
            println!(
                "\ngate: max |log2 ratio| {:.4} {} {t}: {}",
                d.summary.max_abs_log2,
                if failed { ">" } else { "<=" },
                if failed { "FAILED" } else { "passed" }
            );
        }
    }
    Ok(if failed { Outcome::Failed } else { Outcome::Ok })
}

fn import_cmd(args: &ImportArgs) -> anyhow::Result<Outcome> {
    let detected = read_any(&args.file)?;
    if let Detected::OnnxruntimeTable(_) = detected {
        eprintln!(
            "warning: {}: onnxruntime's table stores max(highest, lowest), not the largest magnitude; \
             tensors whose negative end is larger get a range that is too small. Import calibration.json instead where you have it.",
            args.file.display()
        );
    }
    let named = args
        .calibrator
        .as_ref()
        .map(|c| Calibrator::Other(c.clone()).normalized());
    let cache = match detected {
        // A TensorRT cache is re-tagged: its scales are kept bit for bit.
        Detected::TensorRt(mut cache) => {
            let from = cache.header.to_string();
            cache.header.version_code = args.trt_version.code();
            if let Some(c) = named {
                cache.header.calibrator = c;
            }
            eprintln!(
                "re-tagged {from} as {} (scales unchanged, bit for bit)",
                cache.header
            );
            cache
        }
        other => to_trt(
            &other.ranges(),
            args.trt_version,
            named.unwrap_or(Calibrator::EntropyCalibration2),
        ),
    };
    cache
        .write(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "wrote {} ({} tensors, header {})",
        args.output.display(),
        cache.entries.len(),
        cache.header
    );
    Ok(Outcome::Ok)
}

fn provenance_cmd(args: &ProvenanceArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        args.file.is_file(),
        "{}: no such cache file\nfix: pass the calibration cache the sidecar describes",
        args.file.display()
    );
    let mut p = Provenance::read_for(&args.file)?.unwrap_or_default();
    let sha = calibench::hash::sha256_file(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    if !args.set.is_empty() {
        for s in &args.set {
            p.set(s)?;
        }
        p.cache_sha256 = Some(sha.clone());
        let path = p.write_for(&args.file)?;
        eprintln!("wrote {}", path.display());
    } else if p.cache_sha256.as_deref().is_some_and(|s| s != sha) {
        eprintln!(
            "warning: {} describes a different version of the cache (sha256 differs); it is stale",
            sidecar_path(&args.file).display()
        );
    }
    if args.json {
        print_json(&p)?;
    } else {
        for (k, v) in p.fields() {
            println!("{k} = {v}");
        }
    }
    Ok(Outcome::Ok)
}

fn check_cmd(args: &CheckArgs) -> anyhow::Result<Outcome> {
    let cache = read_trt(&args.file)?;
    let model = OnnxModel::load(&args.model)?;
    let c = check(&cache, &model, args.trt_version);
    if args.json {
        print_json(&c)?;
    } else {
        println!("cache:    {}  ({})", args.file.display(), cache.header);
        println!("model:    {}", args.model.display());
        println!(
            "coverage: {} of {} tensors TensorRT would quantize have a scale",
            c.covered, c.quantizable
        );
        if !c.missing.is_empty() {
            println!("missing ({}):", c.missing.len());
            for m in &c.missing {
                println!(
                    "  {}  (made by {}, read by {})",
                    m.tensor,
                    m.produced_by.as_deref().unwrap_or("the graph input"),
                    if m.read_by.is_empty() {
                        "nothing".to_string()
                    } else {
                        m.read_by.join(", ")
                    }
                );
            }
        }
        if !c.unknown_entries.is_empty() {
            println!(
                "cache entries naming no tensor of the model ({}):",
                c.unknown_entries.len()
            );
            for n in c.unknown_entries.iter().take(20) {
                println!("  {n}");
            }
            if c.unknown_entries.len() > 20 {
                println!(
                    "  … and {} more (--json lists all)",
                    c.unknown_entries.len() - 20
                );
            }
        }
        if !c.ignored_entries.is_empty() {
            println!(
                "cache entries calibench ignores, never applies ({}):",
                c.ignored_entries.len()
            );
            for n in &c.ignored_entries {
                println!("  {n}");
            }
        }
        if c.internal_entries > 0 {
            println!(
                "TensorRT-internal entries: {} (no ONNX tensor by construction; ignored)",
                c.internal_entries
            );
        }
        if let (Some(t), Some(ok)) = (&c.target_version, c.version_ok) {
            println!(
                "version:  cache written by TensorRT {}, target {t}: {}",
                c.cache_version,
                if ok {
                    "accepted"
                } else {
                    "REJECTED (TensorRT recalibrates)"
                }
            );
        }
        println!("verdict:  {:?}: {}", c.verdict, c.fix);
    }
    Ok(if c.verdict == Verdict::Ok {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

fn to_qdq_cmd(args: &ToQdqArgs) -> anyhow::Result<Outcome> {
    let model = OnnxModel::load(&args.model)?;
    let cache = read_trt(&args.cache)?;
    let plan = precision::plan(&model, Precision::Int8, Some(&cache));
    let out = qdq::apply(&model, &plan);
    std::fs::write(&args.output, out.to_bytes())
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let counts = plan.layer_counts();
    eprintln!(
        "wrote {}: {} tensors quantized, {} layers int8 ({} with per-channel weights), {} left float",
        args.output.display(),
        plan.tensors.iter().filter(|(_, t)| matches!(t, precision::TensorPrecision::Int8(_))).count(),
        counts.get("int8").copied().unwrap_or(0),
        plan.int8_weight_nodes.len(),
        counts.get("fp32").copied().unwrap_or(0),
    );
    for t in &plan.uncovered {
        eprintln!("warning: {t} has no scale in the cache and stays float");
    }
    for (t, s) in &plan.unusable {
        eprintln!("warning: {t} has an unusable scale ({s}) and stays float");
    }
    Ok(Outcome::Ok)
}
