//! Native libraries that python3's packages ship (onnxruntime's, PyTorch's nvidia-cudnn), found
//! without importing the packages: an import of onnxruntime alone takes half a second.

use std::path::PathBuf;

/// The directory of python3's package `module` (e.g. `onnxruntime`, `nvidia.cudnn`); the
/// reason where python3 cannot be run or has no such package.
pub fn package_dir(module: &str) -> Result<PathBuf, String> {
    let script = format!(
        "import importlib.util as u\ntry:\n    s = u.find_spec({module:?})\nexcept ModuleNotFoundError:\n    s = None\nprint(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .map_err(|e| format!("python3 could not be run to find {module} ({e})"))?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || dir.is_empty() {
        return Err(format!("python3 has no {module} package"));
    }
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_python3_lacks_is_named() {
        let err = package_dir("calibench_no_such_package.sub").unwrap_err();
        assert!(err.contains("calibench_no_such_package.sub"), "{err}");
    }
}
