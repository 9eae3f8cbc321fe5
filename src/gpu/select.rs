//! Matching the matrix's device entries (`all`, an index, a UUID, `name~H100`) to the GPUs
//! present.

use super::nvml::GpuInfo;
use crate::matrix::DeviceSelector;

/// The GPUs a selector picks, in index order (none for `cpu`).
pub fn resolve<'a>(selector: &DeviceSelector, gpus: &'a [GpuInfo]) -> Vec<&'a GpuInfo> {
    gpus.iter()
        .filter(|g| match selector {
            DeviceSelector::Cpu => false,
            DeviceSelector::AllGpus => true,
            DeviceSelector::Index(i) => g.index == *i,
            DeviceSelector::Uuid(u) => {
                g.uuid.eq_ignore_ascii_case(u) || g.uuid.starts_with(u.as_str())
            }
            DeviceSelector::NameContains(p) => g.name.to_lowercase().contains(&p.to_lowercase()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus() -> Vec<GpuInfo> {
        vec![
            GpuInfo {
                index: 0,
                name: "NVIDIA H100 80GB HBM3".into(),
                uuid: "GPU-3f2a-0000".into(),
                ..Default::default()
            },
            GpuInfo {
                index: 1,
                name: "NVIDIA L4".into(),
                uuid: "GPU-9b1c-1111".into(),
                ..Default::default()
            },
        ]
    }

    fn pick(s: &str) -> Vec<u32> {
        let g = gpus();
        resolve(&s.parse().unwrap(), &g)
            .iter()
            .map(|g| g.index)
            .collect()
    }

    #[test]
    fn selectors() {
        assert_eq!(pick("all"), vec![0, 1]);
        assert_eq!(pick("1"), vec![1]);
        assert_eq!(pick("7"), Vec::<u32>::new());
        assert_eq!(pick("GPU-9b1c-1111"), vec![1]);
        assert_eq!(pick("GPU-3f2a"), vec![0], "a UUID prefix selects");
        assert_eq!(pick("name~h100"), vec![0], "name patterns ignore case");
        assert_eq!(pick("name~A100"), Vec::<u32>::new());
        assert_eq!(pick("cpu"), Vec::<u32>::new());
    }
}
