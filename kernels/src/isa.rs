//! Instruction-set levels and their run-time detection.

use crate::error::KernelError;

/// The environment variable that pins the instruction set (see [`isa_from_env`]).
pub const ENV_VAR: &str = "STUDENT_KERNELS";

/// An instruction-set level a kernel can run at.
///
/// Levels are ordered within one architecture: a higher level needs every feature of the
/// lower ones of its architecture, so forcing any lower level always works.
/// [`Isa::Portable`] is plain Rust and runs everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust loops, left to the compiler's auto-vectorizer.
    Portable,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// [`Isa::Avx2`] plus AVX-512 F, BW and VL.
    Avx512,
    /// [`Isa::Avx512`] plus AVX-512 VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// aarch64 baseline Advanced SIMD.
    Neon,
    /// [`Isa::Neon`] plus the dot-product extension (`sdot`).
    NeonDotprod,
    /// [`Isa::NeonDotprod`] plus half-precision arithmetic (FEAT_FP16) and the f16
    /// multiply-add into f32 (FEAT_FHM, `fmlal`): [`hgemm`](crate::hgemm) multiplies its
    /// f16 weights by activations rounded to f16, summing in f32.
    NeonFp16,
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 7] = [
        Isa::Portable,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Vnni,
        Isa::Neon,
        Isa::NeonDotprod,
        Isa::NeonFp16,
    ];

    /// The level's name, as [`Isa::from_name`] and `STUDENT_KERNELS` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon-dotprod",
            Isa::NeonFp16 => "neon-fp16",
        }
    }

    /// The level called `name` (exact, lowercase), if any.
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// Whether this CPU runs the level (detected at run time, cached by std).
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2 => has_avx2(),
            Isa::Avx512 => has_avx512(),
            Isa::Avx512Vnni => has_avx512() && has_avx512vnni(),
            Isa::Neon => has_neon(),
            Isa::NeonDotprod => has_neon() && has_dotprod(),
            Isa::NeonFp16 => has_neon() && has_dotprod() && has_fp16_fhm(),
        }
    }

    /// The highest level this CPU runs.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Portable)
    }

    /// Every level this CPU runs, lowest first; always starts with [`Isa::Portable`].
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// `Ok(self)` if the CPU runs this level, else [`KernelError::IsaUnavailable`].
    pub(crate) fn require(self) -> Result<Isa, KernelError> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(self.unavailable())
        }
    }

    /// The error for a level this CPU lacks. Out of line: every kernel entry point checks
    /// its level, and none expects to fail, so one copy of this path serves them all.
    #[cold]
    #[inline(never)]
    fn unavailable(self) -> KernelError {
        KernelError::IsaUnavailable {
            requested: self,
            best: Isa::best(),
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The level to use: [`Isa::best`], unless `STUDENT_KERNELS` names one.
///
/// An empty or unset variable means "best". A known name this CPU cannot run is
/// [`KernelError::IsaUnavailable`]; an unknown name is [`KernelError::UnknownIsa`].
pub fn isa_from_env() -> Result<Isa, KernelError> {
    match std::env::var(ENV_VAR) {
        Ok(name) if !name.trim().is_empty() => {
            let name = name.trim();
            let isa = Isa::from_name(name).ok_or(KernelError::UnknownIsa {
                name: name.to_string(),
            })?;
            isa.require()
        }
        _ => Ok(Isa::best()),
    }
}

/// The names of every level, comma-separated, for error messages.
pub(crate) fn all_names() -> String {
    Isa::ALL.map(Isa::name).join(", ")
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
}

#[cfg(target_arch = "x86_64")]
fn has_avx512vnni() -> bool {
    is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512vnni() -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn has_neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

#[cfg(target_arch = "aarch64")]
fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// Half-precision arithmetic (`fp16`) and `fmlal` (`fhm`). Cores may have the first
/// without the second: qemu's Cortex-A76 model does, and so `scripts/test-aarch64.sh`
/// checks that it gets [`Isa::NeonDotprod`] as its best level.
#[cfg(target_arch = "aarch64")]
fn has_fp16_fhm() -> bool {
    std::arch::is_aarch64_feature_detected!("fp16")
        && std::arch::is_aarch64_feature_detected!("fhm")
}

#[cfg(not(target_arch = "aarch64"))]
fn has_neon() -> bool {
    false
}

#[cfg(not(target_arch = "aarch64"))]
fn has_dotprod() -> bool {
    false
}

#[cfg(not(target_arch = "aarch64"))]
fn has_fp16_fhm() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name("AVX2"), None);
        assert_eq!(Isa::from_name("sse"), None);
        assert_eq!(
            all_names(),
            "portable, avx2, avx512, avx512vnni, neon, neon-dotprod, neon-fp16"
        );
    }

    #[test]
    fn available_is_sorted_starts_portable_and_ends_with_best() {
        let available = Isa::available();
        assert_eq!(available[0], Isa::Portable);
        assert!(available.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(available.last(), Some(&Isa::best()));
    }

    #[test]
    fn higher_levels_imply_lower_ones() {
        if Isa::Avx512Vnni.is_available() {
            assert!(Isa::Avx512.is_available());
        }
        if Isa::Avx512.is_available() {
            assert!(Isa::Avx2.is_available());
        }
        if Isa::NeonFp16.is_available() {
            assert!(Isa::NeonDotprod.is_available());
        }
        if Isa::NeonDotprod.is_available() {
            assert!(Isa::Neon.is_available());
        }
    }
}
