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
    #[cfg(feature = "tensorrt")]
    tensorrt::compile_shim();
}

/// The TensorRT shim (cargo feature `tensorrt`): compiled against the user's headers.
#[cfg(feature = "tensorrt")]
mod tensorrt {
    use std::path::PathBuf;

    fn fail(message: &str) -> ! {
        panic!(
            "\n\ncalibench's `tensorrt` feature: {message}\n\
             Set TENSORRT_ROOT (a TensorRT install with include/NvInfer.h and include/NvOnnxParser.h) or \
             TENSORRT_INCLUDE_DIR, and CUDA_INCLUDE_DIR (the folder(s) with cuda_runtime_api.h and crt/host_defines.h, \
             ':'-separated), e.g.\n  TENSORRT_ROOT=/opt/TensorRT-10.14.1 CUDA_INCLUDE_DIR=/usr/local/cuda/include cargo build --release --features tensorrt\n\n"
        )
    }

    pub fn compile_shim() {
        for var in ["TENSORRT_ROOT", "TENSORRT_INCLUDE_DIR", "CUDA_INCLUDE_DIR"] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        println!("cargo:rerun-if-changed=src/backend/tensorrt/shim/calibench_trt.cpp");
        println!("cargo:rerun-if-changed=src/backend/tensorrt/shim/calibench_trt.h");
        let trt_include = std::env::var_os("TENSORRT_INCLUDE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("TENSORRT_ROOT").map(|r| PathBuf::from(r).join("include")))
            .unwrap_or_else(|| fail("TENSORRT_ROOT or TENSORRT_INCLUDE_DIR is not set"));
        for header in ["NvInfer.h", "NvOnnxParser.h"] {
            if !trt_include.join(header).is_file() {
                fail(&format!("{} has no {header}", trt_include.display()));
            }
        }
        let cuda = std::env::var("CUDA_INCLUDE_DIR")
            .unwrap_or_else(|_| fail("CUDA_INCLUDE_DIR is not set"));
        let cuda: Vec<PathBuf> = cuda
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        if !cuda.iter().any(|d| d.join("cuda_runtime_api.h").is_file()) {
            fail("no cuda_runtime_api.h in CUDA_INCLUDE_DIR");
        }
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .std("c++17")
            .file("src/backend/tensorrt/shim/calibench_trt.cpp")
            .include("src/backend/tensorrt/shim")
            // TensorRT's and CUDA's headers as system headers: their own warnings are not the
            // shim's (scripts/check-tensorrt-headers.sh checks the shim with -Werror this way).
            .flag("-isystem")
            .flag(trt_include.as_os_str())
            // TensorRT 10's calibrator classes are deprecated since 10.1; the shim uses them on purpose.
            .flag_if_supported("-Wno-deprecated-declarations")
            .warnings(true)
            .extra_warnings(true);
        for d in &cuda {
            build.flag("-isystem").flag(d.as_os_str());
        }
        build.compile("calibench_trt");
        println!("cargo:rustc-link-lib=dl");
    }
}
