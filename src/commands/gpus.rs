//! `calibench gpus`: every GPU's identity, and a short telemetry capture on request.

use std::time::{Duration, Instant};

use calibench::gpu::cuda::{GpuContext, SpinKernel};
use calibench::gpu::nvml::inventory;
use calibench::gpu::telemetry::{self, RunningSampler};
use calibench::results::schema::{Stat, Telemetry};

use super::Outcome;
use crate::cli::GpusArgs;

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".to_string(), |v| v.to_string())
}

fn stat(s: &Option<Stat>, unit: &str) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.0}/{:.0}/{:.0} {unit}", s.min, s.median, s.max)
    })
}

pub fn gpus(args: &GpusArgs) -> anyhow::Result<Outcome> {
    let inv = inventory()?;
    let telemetry = match args.sample_ms {
        Some(ms) => Some(sample(
            &inv.gpus,
            Duration::from_millis(ms),
            Duration::from_millis(args.period_ms),
            args.busy,
        )?),
        None => None,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "inventory": inv, "telemetry": telemetry })
            )?
        );
        return Ok(Outcome::Ok);
    }
    println!(
        "driver {}  CUDA {}  ({} GPU(s))",
        inv.driver,
        inv.cuda_driver,
        inv.gpus.len()
    );
    for g in &inv.gpus {
        println!("\n[{}] {}  {}", g.index, g.name, g.uuid);
        println!(
            "    architecture {}  compute {}  memory {} MiB  PCI {}",
            opt(&g.architecture),
            opt(&g.compute_capability),
            opt(&g.memory_total_mib),
            opt(&g.pci_bus_id)
        );
        println!(
            "    serial {}  board {}  VBIOS {}",
            opt(&g.serial),
            opt(&g.board_part_number),
            opt(&g.vbios)
        );
        println!(
            "    clocks max SM {} / mem {} MHz, application SM {} / mem {} MHz  power limit {} W",
            opt(&g.max_sm_clock_mhz),
            opt(&g.max_mem_clock_mhz),
            opt(&g.app_sm_clock_mhz),
            opt(&g.app_mem_clock_mhz),
            opt(&g.power_limit_w)
        );
        println!(
            "    MIG {}  persistence {}  ECC {}",
            opt(&g.mig_mode),
            opt(&g.persistence_mode),
            opt(&g.ecc_enabled)
        );
        println!(
            "    identified by {}  SMs {}  integrated {}{}{}",
            g.identity_source.as_deref().unwrap_or("nvml"),
            opt(&g.sm_count),
            opt(&g.integrated),
            g.board
                .as_deref()
                .map(|b| format!("  board {b}"))
                .unwrap_or_default(),
            g.l4t_release
                .as_deref()
                .map(|l| format!("  L4T {l}"))
                .unwrap_or_default()
        );
        if let Some((_, t)) = telemetry
            .as_ref()
            .and_then(|t| t.iter().find(|(i, _)| *i == g.index))
        {
            println!(
                "    telemetry ({} samples every {} ms, min/median/max): SM {}  mem {}  power {}  temp {}  util {}",
                t.samples,
                t.period_ms,
                stat(&t.sm_clock_mhz, "MHz"),
                stat(&t.mem_clock_mhz, "MHz"),
                stat(&t.power_w, "W"),
                stat(&t.temperature_c, "°C"),
                stat(&t.utilization_pct, "%")
            );
            println!(
                "    reasons seen: {}{}",
                if t.reasons.is_empty() {
                    "none".to_string()
                } else {
                    t.reasons.join(", ")
                },
                if t.noisy {
                    format!("  NOISY: {}", t.noisy_because.join("; "))
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(Outcome::Ok)
}

/// Samples every GPU at once for `window`, optionally with a spin kernel keeping each busy.
fn sample(
    gpus: &[calibench::gpu::nvml::GpuInfo],
    window: Duration,
    period: Duration,
    busy: bool,
) -> anyhow::Result<Vec<(u32, Telemetry)>> {
    let samplers: Vec<(u32, Box<dyn RunningSampler>)> = gpus
        .iter()
        .map(|g| telemetry::start(g, period).map(|s| (g.index, s)))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    if busy {
        // CUDA orders devices fastest-first by default; with one GPU per index this matches NVML.
        let loads: Vec<(GpuContext, SpinKernel)> = (0..gpus.len())
            .map(|i| {
                let ctx = GpuContext::new(i)?;
                let k = SpinKernel::new(&ctx)?;
                Ok((ctx, k))
            })
            .collect::<Result<_, calibench::gpu::GpuError>>()?;
        while start.elapsed() < window {
            for (_, k) in &loads {
                k.enqueue_wide(2_000_000, 4096)?;
            }
            for (c, _) in &loads {
                c.synchronize()?;
            }
        }
    } else {
        std::thread::sleep(window);
    }
    samplers
        .into_iter()
        .map(|(i, s)| Ok((i, s.finish()?)))
        .collect()
}
