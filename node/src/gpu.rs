//! GPU detection at start-up: NVML first (model, VRAM, UUID per device), then
//! `nvidia-smi` where the NVML library cannot be loaded, or GPUs declared as
//! simulated for machines without any (`simulated:2xH100-80GB`). Simulated
//! GPUs carry `simulated: true` into offers and the ledger's provider record.

use std::collections::BTreeMap;
use std::process::Command;
use std::str::FromStr;

use agora_protocol::GpuSpec;
use agora_protocol::limits::{MAX_GPU_KINDS, MAX_GPU_MODEL_LEN, MAX_GPUS_PER_KIND};

use crate::error::Error;

/// Prefix of the simulated-GPU declaration in `gpus`.
pub const SIMULATED_PREFIX: &str = "simulated:";
/// Prefix of every simulated GPU's id, so no job mistakes one for a real device.
pub const SIMULATED_ID_PREFIX: &str = "SIM-";
/// `nvidia-smi`'s query for the fallback path.
const NVIDIA_SMI_ARGS: [&str; 2] = ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"];

/// One GPU this node can lease out.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Gpu {
    pub index: u32,
    /// The device UUID (`GPU-…`), or `SIM-MODEL-N` for a simulated GPU.
    pub id: String,
    pub model: String,
    pub vram_mib: u32,
    pub simulated: bool,
}

/// Where the GPU list comes from (`gpus` in config.toml, `--gpus` on the command line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuSource {
    /// This node leases nothing: a buyer, validator or relay.
    None,
    /// NVML, then nvidia-smi; no GPU found means no provider.
    Auto,
    /// Declared GPUs that exist only in software, as (count, model, VRAM MiB).
    Simulated(Vec<(u32, String, u32)>),
}

impl FromStr for GpuSource {
    type Err = Error;

    fn from_str(s: &str) -> Result<GpuSource, Error> {
        let bad = |reason: String| Error::Gpu(format!("gpus {s:?}: {reason}"));
        match s.trim() {
            "" | "none" => return Ok(GpuSource::None),
            "auto" => return Ok(GpuSource::Auto),
            _ => {}
        }
        let Some(list) = s.trim().strip_prefix(SIMULATED_PREFIX) else {
            return Err(bad("expected none, auto or simulated:COUNTxMODEL-VRAMGB (e.g. simulated:2xH100-80GB)".into()));
        };
        let mut kinds = Vec::new();
        for item in list.split(',') {
            let (count, rest) = item.split_once('x').ok_or_else(|| bad(format!("{item:?} lacks COUNTx")))?;
            let count: u32 = count.parse().map_err(|_| bad(format!("{count:?} is not a GPU count")))?;
            let (model, vram) = rest.rsplit_once('-').ok_or_else(|| bad(format!("{rest:?} lacks -VRAMGB")))?;
            let gib: u32 = vram
                .strip_suffix("GB")
                .and_then(|g| g.parse().ok())
                .ok_or_else(|| bad(format!("{vram:?} is not a VRAM size like 80GB")))?;
            if count == 0 || count > MAX_GPUS_PER_KIND {
                return Err(bad(format!("count must be 1 to {MAX_GPUS_PER_KIND}")));
            }
            if model.is_empty() || model.len() > MAX_GPU_MODEL_LEN {
                return Err(bad(format!("model must be 1 to {MAX_GPU_MODEL_LEN} bytes")));
            }
            let vram_mib = gib.checked_mul(1024).filter(|v| *v > 0).ok_or_else(|| bad("VRAM out of range".into()))?;
            kinds.push((count, model.to_string(), vram_mib));
        }
        if kinds.len() > MAX_GPU_KINDS {
            return Err(bad(format!("at most {MAX_GPU_KINDS} GPU kinds")));
        }
        Ok(GpuSource::Simulated(kinds))
    }
}

/// What detection found and how.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Detection {
    pub gpus: Vec<Gpu>,
    /// `nvml`, `nvidia-smi`, `simulated` or `none`.
    pub method: &'static str,
    /// Why nothing was found, when `gpus` is empty.
    pub note: Option<String>,
}

impl Detection {
    /// The GPUs grouped into the kinds a provider registers and offers.
    pub fn specs(&self) -> Vec<GpuSpec> {
        specs(&self.gpus)
    }
}

/// Finds this node's GPUs. Never fails: a machine without GPUs is a non-provider.
pub fn detect(source: &GpuSource) -> Detection {
    match source {
        GpuSource::None => Detection { gpus: Vec::new(), method: "none", note: Some("gpus = \"none\"".into()) },
        GpuSource::Simulated(kinds) => Detection { gpus: simulated(kinds), method: "simulated", note: None },
        GpuSource::Auto => match nvml() {
            Ok(gpus) if !gpus.is_empty() => Detection { gpus, method: "nvml", note: None },
            nvml_result => {
                let nvml_note = nvml_result.err().unwrap_or_else(|| "no devices".into());
                match nvidia_smi() {
                    Ok(gpus) if !gpus.is_empty() => Detection { gpus, method: "nvidia-smi", note: None },
                    smi => {
                        let smi_note = smi.err().unwrap_or_else(|| "no devices".into());
                        let note = format!("no NVIDIA GPU found (NVML: {nvml_note}; nvidia-smi: {smi_note})");
                        Detection { gpus: Vec::new(), method: "none", note: Some(note) }
                    }
                }
            }
        },
    }
}

fn simulated(kinds: &[(u32, String, u32)]) -> Vec<Gpu> {
    let mut gpus = Vec::new();
    for (count, model, vram_mib) in kinds {
        for n in 0..*count {
            gpus.push(Gpu {
                index: gpus.len() as u32,
                id: format!("{SIMULATED_ID_PREFIX}{model}-{n}"),
                model: model.clone(),
                vram_mib: *vram_mib,
                simulated: true,
            });
        }
    }
    gpus
}

fn model_name(name: &str) -> String {
    let mut model: String = name.trim().chars().filter(|c| !c.is_control()).collect();
    while model.len() > MAX_GPU_MODEL_LEN {
        model.pop();
    }
    if model.is_empty() { "unknown".into() } else { model }
}

fn nvml() -> Result<Vec<Gpu>, String> {
    let nvml = nvml_wrapper::Nvml::init().map_err(|e| e.to_string())?;
    let count = nvml.device_count().map_err(|e| e.to_string())?;
    let mut gpus = Vec::new();
    for index in 0..count {
        let device = nvml.device_by_index(index).map_err(|e| format!("device {index}: {e}"))?;
        let name = device.name().map_err(|e| format!("device {index} name: {e}"))?;
        let uuid = device.uuid().map_err(|e| format!("device {index} uuid: {e}"))?;
        let memory = device.memory_info().map_err(|e| format!("device {index} memory: {e}"))?;
        let vram_mib = u32::try_from(memory.total / (1024 * 1024)).unwrap_or(u32::MAX);
        gpus.push(Gpu { index, id: uuid, model: model_name(&name), vram_mib, simulated: false });
    }
    Ok(gpus)
}

fn nvidia_smi() -> Result<Vec<Gpu>, String> {
    let out = Command::new("nvidia-smi").args(NVIDIA_SMI_ARGS).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("exit {}: {}", out.status, err.lines().next().unwrap_or("")));
    }
    parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`.
pub fn parse_nvidia_smi(text: &str) -> Result<Vec<Gpu>, String> {
    let mut gpus = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [index, uuid, name, memory] = fields[..] else {
            return Err(format!("unexpected nvidia-smi line {line:?}"));
        };
        let index = index.parse().map_err(|_| format!("bad GPU index in {line:?}"))?;
        let vram_mib = memory.parse().map_err(|_| format!("bad memory size in {line:?}"))?;
        if uuid.is_empty() {
            return Err(format!("no UUID in {line:?}"));
        }
        gpus.push(Gpu { index, id: uuid.to_string(), model: model_name(name), vram_mib, simulated: false });
    }
    Ok(gpus)
}

/// Groups GPUs into kinds (model, VRAM, simulated) with counts, within the protocol's limits.
pub fn specs(gpus: &[Gpu]) -> Vec<GpuSpec> {
    let mut kinds: BTreeMap<(String, u32, bool), u32> = BTreeMap::new();
    for g in gpus {
        *kinds.entry((g.model.clone(), g.vram_mib, g.simulated)).or_default() += 1;
    }
    kinds
        .into_iter()
        .take(MAX_GPU_KINDS)
        .map(|((model, vram_mib, simulated), count)| GpuSpec {
            model,
            vram_mib,
            count: count.min(MAX_GPUS_PER_KIND),
            simulated,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_declarations_parse_and_are_labelled() {
        let src: GpuSource = "simulated:2xH100-80GB,1xRTX-4090-24GB".parse().unwrap();
        let d = detect(&src);
        assert_eq!(d.method, "simulated");
        assert_eq!(d.gpus.len(), 3);
        assert!(d.gpus.iter().all(|g| g.simulated && g.id.starts_with(SIMULATED_ID_PREFIX)));
        assert_eq!(d.gpus[2].model, "RTX-4090");
        assert_eq!(d.gpus[2].vram_mib, 24 * 1024);
        let specs = d.specs();
        assert_eq!(specs.len(), 2);
        let h100 = specs.iter().find(|s| s.model == "H100").unwrap();
        assert_eq!((h100.count, h100.vram_mib, h100.simulated), (2, 81_920, true));
    }

    #[test]
    fn bad_declarations_are_clear_errors() {
        for bad in ["simulated:", "simulated:2H100-80GB", "simulated:0xH100-80GB", "simulated:2xH100", "gpu", "x"] {
            let err = bad.parse::<GpuSource>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
        assert_eq!("none".parse::<GpuSource>().unwrap(), GpuSource::None);
        assert_eq!("auto".parse::<GpuSource>().unwrap(), GpuSource::Auto);
    }

    #[test]
    fn nvidia_smi_output_parses() {
        let text = "0, GPU-5d2b6f1e-aaaa-bbbb-cccc-0123456789ab, NVIDIA H100 80GB HBM3, 81559\n\
                    1, GPU-6e3c7a2f-aaaa-bbbb-cccc-0123456789ab, NVIDIA H100 80GB HBM3, 81559\n";
        let gpus = parse_nvidia_smi(text).unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[1].index, 1);
        assert_eq!(gpus[0].model, "NVIDIA H100 80GB HBM3");
        assert!(!gpus[0].simulated);
        assert_eq!(specs(&gpus)[0].count, 2);
        assert!(parse_nvidia_smi("0, GPU-x, H100").is_err());
        assert!(parse_nvidia_smi("zero, GPU-x, H100, 80").is_err());
    }

    #[test]
    fn auto_without_a_gpu_is_a_non_provider_with_a_reason() {
        // This machine (and CI) has no NVIDIA driver; on a GPU host this
        // finds the devices instead, which is also correct.
        let d = detect(&GpuSource::Auto);
        if d.gpus.is_empty() {
            assert_eq!(d.method, "none");
            assert!(d.note.unwrap().contains("no NVIDIA GPU found"));
        } else {
            assert!(d.gpus.iter().all(|g| !g.simulated));
        }
    }
}
