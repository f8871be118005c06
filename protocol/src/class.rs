//! GPU classes: the canonical key an exchange trades one kind of GPU under
//! (`H100-80GB`, `RTX4090-24GB`, `H100-80GB-SIM` for simulated ones). The
//! order book, offers and auctions all use it, so a buyer's `--model h100`
//! and a provider's NVML name ("NVIDIA H100 80GB HBM3") meet on one key.
//! Derived from a GPU spec by fixed rules, so every node derives the same.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::market::GpuSpec;

/// Longest class key.
pub const MAX_CLASS_LEN: usize = 32;

/// Words that name a vendor or product line, not a model.
const VENDOR_WORDS: [&str; 5] = ["NVIDIA", "GEFORCE", "TESLA", "QUADRO", "AMD"];
/// Product-line prefixes that are part of the model with the next word ("RTX 4090").
const JOINED_PREFIXES: [&str; 4] = ["RTX", "GTX", "TITAN", "RADEON"];

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GpuClass(String);

impl GpuClass {
    /// The class of a GPU: its model, its memory rounded to whole GB, and
    /// `-SIM` for simulated GPUs. None if the model name has no model in it.
    pub fn of(gpu: &GpuSpec) -> Option<GpuClass> {
        let model = model_key(&gpu.model)?;
        let gb = (u64::from(gpu.vram_mib) + 512) / 1024;
        let sim = if gpu.simulated { "-SIM" } else { "" };
        GpuClass::parse(&format!("{model}-{gb}GB{sim}")).ok()
    }

    /// A class key as written (`h100-80gb` is `H100-80GB`): 1 to 32 of
    /// A–Z, 0–9 and `-`, starting with a letter or digit.
    pub fn parse(text: &str) -> Result<GpuClass, Error> {
        let key = text.trim().to_ascii_uppercase();
        let ok = !key.is_empty()
            && key.len() <= MAX_CLASS_LEN
            && key.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
            && !key.starts_with('-');
        if !ok {
            return Err(Error::Invalid {
                what: "gpu class",
                reason: format!("{text:?}: use 1 to {MAX_CLASS_LEN} letters, digits and '-', e.g. H100-80GB"),
            });
        }
        Ok(GpuClass(key))
    }

    /// The smallest class key (for range scans).
    pub fn min() -> GpuClass {
        GpuClass(String::new())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this class is of simulated GPUs.
    pub fn is_simulated(&self) -> bool {
        self.0.ends_with("-SIM")
    }
}

impl fmt::Display for GpuClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The model part of a class from a marketing or NVML name: vendor words
/// dropped, then the first word that is not a memory size or form factor,
/// joined with the next for product lines (`RTX 4090` → `RTX4090`).
fn model_key(name: &str) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    let words: Vec<&str> = upper
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter(|w| !w.is_empty() && !VENDOR_WORDS.contains(w) && !is_detail(w))
        .collect();
    let first = *words.first()?;
    let key = match words.get(1) {
        Some(next) if JOINED_PREFIXES.contains(&first) => format!("{first}{next}"),
        _ => first.to_string(),
    };
    let key: String = key.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    (!key.is_empty()).then_some(key)
}

/// A word naming memory or a form factor rather than the model.
fn is_detail(word: &str) -> bool {
    let digits_then = |suffix: &str| {
        word.strip_suffix(suffix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    digits_then("GB")
        || digits_then("G")
        || ["PCIE", "SXM", "SXM2", "SXM4", "SXM5", "NVL", "HBM2", "HBM2E", "HBM3", "HBM3E", "SIM"].contains(&word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(model: &str, vram_mib: u32, simulated: bool) -> String {
        let gpu = GpuSpec { model: model.into(), vram_mib, count: 1, simulated };
        GpuClass::of(&gpu).map(|c| c.to_string()).unwrap_or_default()
    }

    #[test]
    fn nvml_and_marketing_names_meet_on_one_key() {
        assert_eq!(class("NVIDIA H100 80GB HBM3", 81_559, false), "H100-80GB");
        assert_eq!(class("H100", 81_920, false), "H100-80GB");
        assert_eq!(class("NVIDIA A100-SXM4-80GB", 81_920, false), "A100-80GB");
        assert_eq!(class("NVIDIA A100-PCIE-40GB", 40_960, false), "A100-40GB");
        assert_eq!(class("Tesla V100-SXM2-16GB", 16_160, false), "V100-16GB");
        assert_eq!(class("NVIDIA GeForce RTX 4090", 24_564, false), "RTX4090-24GB");
        assert_eq!(class("NVIDIA RTX A6000", 49_140, false), "RTXA6000-48GB");
        assert_eq!(class("H100", 81_920, true), "H100-80GB-SIM", "simulated GPUs are their own class");
        assert_eq!(class("NVIDIA", 1_024, false), "", "no model in the name");
    }

    #[test]
    fn class_keys_parse_case_insensitively_and_strictly() {
        assert_eq!(GpuClass::parse("h100-80gb").unwrap().as_str(), "H100-80GB");
        assert!(GpuClass::parse("H100-80GB-SIM").unwrap().is_simulated());
        for bad in ["", "-H100", "H100 80GB", "H100/80", &"X".repeat(33)] {
            assert!(GpuClass::parse(bad).is_err(), "{bad:?}");
        }
    }
}
