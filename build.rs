//! Build script: records the git commit calibench is built from, so every result names it.

use std::process::Command;

use sha2::{Digest, Sha256};

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    let commit = if dirty && commit != "unknown" {
        format!("{commit}-dirty")
    } else {
        commit
    };
    println!("cargo:rustc-env=CALIBENCH_GIT_COMMIT={commit}");
    for (var, file) in [
        ("CALIBENCH_CARGO_LOCK_SHA256", "Cargo.lock"),
        ("CALIBENCH_FLAKE_LOCK_SHA256", "flake.lock"),
    ] {
        let digest = std::fs::read(file)
            .map(|b| format!("{:x}", Sha256::digest(&b)))
            .unwrap_or_default();
        println!("cargo:rustc-env={var}={digest}");
        println!("cargo:rerun-if-changed={file}");
    }
    for p in [".git/HEAD", ".git/index", ".git/refs"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
