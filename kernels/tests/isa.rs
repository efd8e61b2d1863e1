//! Instruction-set selection: detection, names and `STUDENT_KERNELS`.

use student_kernels::{ENV_VAR, Isa, KernelError, isa_from_env};

/// Set `STUDENT_EXPECT_BEST` (one name) on a machine known to run that level and none
/// above it: detection that finds a level the CPU lacks (which would crash on its first
/// instruction) or misses the best one fails here. `scripts/test-aarch64.sh` sets it for
/// qemu's CPU models, one of which has fp16 arithmetic but not `fmlal`.
#[test]
fn detection_finds_the_expected_best_level() {
    let Ok(name) = std::env::var("STUDENT_EXPECT_BEST") else {
        eprintln!(
            "STUDENT_EXPECT_BEST unset: nothing expected (best here: {})",
            Isa::best()
        );
        return;
    };
    let want = Isa::from_name(name.trim())
        .unwrap_or_else(|| panic!("STUDENT_EXPECT_BEST: unknown level {name:?}"));
    assert_eq!(Isa::best(), want, "detected {:?}", Isa::available());
}

/// Set `STUDENT_EXPECT_ISA` (comma-separated names) on a machine known to run those
/// levels, so that broken detection fails the tests instead of silently falling back.
#[test]
fn detection_finds_the_expected_levels() {
    let Ok(expected) = std::env::var("STUDENT_EXPECT_ISA") else {
        eprintln!(
            "STUDENT_EXPECT_ISA unset: nothing expected (best here: {})",
            Isa::best()
        );
        return;
    };
    for name in expected.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let isa = Isa::from_name(name)
            .unwrap_or_else(|| panic!("STUDENT_EXPECT_ISA: unknown level {name:?}"));
        assert!(
            isa.is_available(),
            "expected {isa} on this machine; detected {:?}",
            Isa::available()
        );
    }
}

/// One test owns the variable: no other test in this binary reads the environment.
#[test]
fn env_var_picks_the_level() {
    let set = |value: &str| {
        // SAFETY: this is the only test in this binary that touches the environment.
        unsafe { std::env::set_var(ENV_VAR, value) }
    };

    // SAFETY: as above.
    unsafe { std::env::remove_var(ENV_VAR) };
    assert_eq!(isa_from_env(), Ok(Isa::best()));
    set("");
    assert_eq!(isa_from_env(), Ok(Isa::best()));
    set("portable");
    assert_eq!(isa_from_env(), Ok(Isa::Portable));
    for isa in Isa::available() {
        set(isa.name());
        assert_eq!(isa_from_env(), Ok(isa));
    }

    let missing = Isa::ALL
        .into_iter()
        .find(|isa| !isa.is_available())
        .unwrap();
    set(missing.name());
    assert_eq!(
        isa_from_env(),
        Err(KernelError::IsaUnavailable {
            requested: missing,
            best: Isa::best()
        })
    );

    set("sse9");
    let err = isa_from_env().unwrap_err();
    assert_eq!(
        err,
        KernelError::UnknownIsa {
            name: "sse9".to_string()
        }
    );
    assert_eq!(
        err.to_string(),
        "unknown instruction set \"sse9\" in STUDENT_KERNELS: expected one of portable, avx2, \
         avx512, avx512vnni, neon, neon-dotprod, neon-fp16"
    );
    // SAFETY: as above.
    unsafe { std::env::remove_var(ENV_VAR) };
}

#[test]
fn unavailable_level_message_names_both_levels() {
    let err = KernelError::IsaUnavailable {
        requested: Isa::NeonDotprod,
        best: Isa::Avx2,
    };
    assert_eq!(
        err.to_string(),
        "instruction set neon-dotprod is not available on this cpu (best here: avx2)"
    );
}
