//! sgemm and hgemm at every available level against `reference`.

mod common;

use common::{Rng, SIZES, assert_close, isas, unavailable_isa};
use half::f16;
use proptest::prelude::*;
use student_kernels::{
    Bias, Isa, KernelError, hgemm, pack_b_f16, pack_b_f32, packed_len_f32, reference, sgemm,
};

/// Written into C before a call: every element outside the m x n region must keep it.
const SENTINEL: f32 = 7777.0;

struct Case {
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldc: usize,
    /// 0: none, 1: per row, 2: per column.
    bias: usize,
    lo: f32,
    hi: f32,
}

impl Case {
    /// A case with strides and epilogue derived from `variant`, so a sweep covers them all.
    fn new(m: usize, n: usize, k: usize, variant: usize) -> Case {
        let (lo, hi) = [
            (f32::NEG_INFINITY, f32::INFINITY),
            (0.0, f32::INFINITY),
            (0.0, 6.0),
            (-0.25, 0.5),
        ][variant % 4];
        Case {
            m,
            n,
            k,
            lda: k + variant % 3 * 5,
            ldc: n + variant % 5 * 3,
            bias: variant % 3,
            lo,
            hi,
        }
    }
}

/// Runs one case of sgemm (`half == false`) or hgemm at every level.
fn check(case: &Case, half: bool, seed: u64) {
    let Case {
        m, n, k, lda, ldc, ..
    } = *case;
    let mut rng = Rng::new(seed);
    // A's stride padding is NaN: a kernel that reads it fails the comparison.
    let mut a = vec![f32::NAN; (m - 1) * lda + k];
    for i in 0..m {
        a[i * lda..i * lda + k].copy_from_slice(&rng.f32s(k));
    }
    let b = rng.f32s(k * n);
    let b16: Vec<f16> = b.iter().map(|&x| f16::from_f32(x)).collect();
    let bias_values = rng.f32s(m.max(n));
    let bias = match case.bias {
        1 => Bias::PerRow(&bias_values[..m]),
        2 => Bias::PerCol(&bias_values[..n]),
        _ => Bias::None,
    };

    let c_len = (m - 1) * ldc + n + 5;
    let mut want = vec![SENTINEL; c_len];
    // What neon-fp16's hgemm computes: the activations rounded to f16 (none here is beyond
    // its range), then f32 arithmetic. A product of two halves is exact in f32, so the
    // kernel and this reference add the same terms and differ only in the order of f32
    // roundings, as every other level does: the same tolerance holds.
    let mut want_rounded = vec![SENTINEL; c_len];
    if half {
        reference::hgemm(
            m, n, k, &a, lda, &b16, n, bias, case.lo, case.hi, &mut want, ldc,
        );
        let a16 = rounded_to_f16(&a);
        reference::hgemm(
            m,
            n,
            k,
            &a16,
            lda,
            &b16,
            n,
            bias,
            case.lo,
            case.hi,
            &mut want_rounded,
            ldc,
        );
    } else {
        reference::sgemm(
            m, n, k, &a, lda, &b, n, bias, case.lo, case.hi, &mut want, ldc,
        );
    }

    let mut bp = vec![0.0; packed_len_f32(k, n)];
    pack_b_f32(&b, k, n, &mut bp).unwrap();
    let mut bp16 = vec![f16::ZERO; packed_len_f32(k, n)];
    pack_b_f16(&b16, k, n, &mut bp16).unwrap();

    for isa in isas() {
        let mut got = vec![SENTINEL; c_len];
        let result = if half {
            hgemm(
                isa, m, n, k, &a, lda, &bp16, bias, case.lo, case.hi, &mut got, ldc,
            )
        } else {
            sgemm(
                isa, m, n, k, &a, lda, &bp, bias, case.lo, case.hi, &mut got, ldc,
            )
        };
        result.unwrap();
        let what = format!(
            "{isa} {} m={m} n={n} k={k} lda={lda} ldc={ldc} bias={} clamp={}..{}",
            if half { "hgemm" } else { "sgemm" },
            case.bias,
            case.lo,
            case.hi
        );
        let want = if half && isa == Isa::NeonFp16 {
            &want_rounded
        } else {
            &want
        };
        for i in 0..m {
            let row = i * ldc..i * ldc + n;
            assert_close(&got[row.clone()], &want[row], k, &what);
        }
        let outside = (0..c_len).filter(|&x| x >= (m - 1) * ldc + n || x % ldc >= n);
        for x in outside {
            assert_eq!(got[x], SENTINEL, "{what}: wrote outside C at {x}");
        }
    }
}

/// Each value rounded to the nearest f16 (ties to even) and widened back.
fn rounded_to_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

#[test]
fn sgemm_matches_reference_over_the_size_grid() {
    let mut variant = 0;
    for m in SIZES {
        for n in SIZES {
            for k in SIZES {
                check(&Case::new(m, n, k, variant), false, variant as u64);
                variant += 1;
            }
        }
    }
}

#[test]
fn hgemm_matches_reference_over_the_size_grid() {
    let mut variant = 0;
    for m in SIZES {
        for n in SIZES {
            for k in SIZES {
                check(&Case::new(m, n, k, variant), true, variant as u64);
                variant += 1;
            }
        }
    }
}

#[test]
fn model_shapes_match_reference() {
    // A conv as im2col (16 channels x 72 taps x 196 positions), a stem conv, and dense
    // layers at batch 1 and 32.
    let shapes = [
        (16, 196, 72),
        (8, 784, 9),
        (1, 64, 3136),
        (32, 64, 3136),
        (1, 10, 64),
    ];
    for (variant, (m, n, k)) in shapes.into_iter().enumerate() {
        check(&Case::new(m, n, k, variant), false, 100 + variant as u64);
        check(&Case::new(m, n, k, variant + 1), true, 200 + variant as u64);
    }
}

#[test]
fn zero_k_gives_the_clamped_bias() {
    let bias = [-1.0, 0.5, 9.0];
    for isa in isas() {
        let mut c = [SENTINEL; 6];
        sgemm(
            isa,
            2,
            3,
            0,
            &[],
            0,
            &[],
            Bias::PerCol(&bias),
            0.0,
            6.0,
            &mut c,
            3,
        )
        .unwrap();
        assert_eq!(c, [0.0, 0.5, 6.0, 0.0, 0.5, 6.0], "{isa}");
    }
}

#[test]
fn nan_passes_the_clamp() {
    let (m, n, k) = (2, 20, 3);
    let a = [1.0, f32::NAN, 1.0, 1.0, 1.0, 1.0];
    let b = vec![1.0; k * n];
    let mut bp = vec![0.0; packed_len_f32(k, n)];
    pack_b_f32(&b, k, n, &mut bp).unwrap();
    let mut bp16 = vec![f16::ZERO; packed_len_f32(k, n)];
    pack_b_f16(&vec![f16::ONE; k * n], k, n, &mut bp16).unwrap();
    for isa in isas() {
        let mut c = vec![0.0; m * n];
        sgemm(isa, m, n, k, &a, k, &bp, Bias::None, 0.0, 6.0, &mut c, n).unwrap();
        assert!(c[..n].iter().all(|x| x.is_nan()), "{isa}: {c:?}");
        assert!(c[n..].iter().all(|&x| x == 3.0), "{isa}: {c:?}");
        let mut c = vec![0.0; m * n];
        hgemm(isa, m, n, k, &a, k, &bp16, Bias::None, 0.0, 6.0, &mut c, n).unwrap();
        assert!(c[..n].iter().all(|x| x.is_nan()), "{isa} hgemm: {c:?}");
        assert!(c[n..].iter().all(|&x| x == 3.0), "{isa} hgemm: {c:?}");
    }
}

/// Activations beyond f16's range would become infinities at neon-fp16: the rows holding
/// them are multiplied in f32 instead, at every level. Rows 1 and 6 of 9 (one in each
/// block of 4 rows; the last row is a block of its own) are scaled by 2^17, so that most
/// of their values exceed 65504; scaling by a power of two is exact, so the scaled rows
/// of C are the unscaled reference times 2^17, to the f32 tolerance.
#[test]
fn hgemm_activations_beyond_f16_are_multiplied_in_f32() {
    let (m, n, k) = (9, 40, 37);
    let scale = (1u32 << 17) as f32;
    let mut rng = Rng::new(17);
    let a = rng.f32s(m * k);
    let mut big = a.clone();
    for row in [1, 6] {
        for v in &mut big[row * k..][..k] {
            *v *= scale;
        }
    }
    let b16: Vec<f16> = rng.f32s(k * n).into_iter().map(f16::from_f32).collect();
    let mut bp16 = vec![f16::ZERO; packed_len_f32(k, n)];
    pack_b_f16(&b16, k, n, &mut bp16).unwrap();
    let no_clamp = (f32::NEG_INFINITY, f32::INFINITY);
    let mut want = vec![0.0; m * n];
    reference::hgemm(
        m,
        n,
        k,
        &a,
        k,
        &b16,
        n,
        Bias::None,
        no_clamp.0,
        no_clamp.1,
        &mut want,
        n,
    );
    for isa in isas() {
        let mut got = vec![0.0; m * n];
        hgemm(
            isa,
            m,
            n,
            k,
            &big,
            k,
            &bp16,
            Bias::None,
            no_clamp.0,
            no_clamp.1,
            &mut got,
            n,
        )
        .unwrap();
        for row in [1, 6] {
            let unscaled: Vec<f32> = got[row * n..][..n].iter().map(|v| v / scale).collect();
            let what = format!("{isa} hgemm, row {row} scaled by 2^17");
            assert_close(&unscaled, &want[row * n..][..n], k, &what);
        }
    }
}

/// Forcing a level through the `isa` argument (where `STUDENT_KERNELS` ends up, see
/// tests/isa.rs) works for every level up to the best, and only neon-fp16 rounds hgemm's
/// activations: on a CPU with neon-fp16, forcing neon-dotprod or lower gives f32
/// arithmetic again. Every activation here is `v`, `2v` or `4v` with `v` just under
/// 1 + 2^-11, which f16 rounds down to 1 (2v to 2, 4v to 4), so with positive weights the
/// two references differ, everywhere, by many times the tolerance.
#[test]
fn every_lower_level_can_be_forced() {
    let best = Isa::best();
    let lower: Vec<Isa> = Isa::ALL
        .into_iter()
        .filter(|&isa| isa <= best && (isa == Isa::Portable || same_family(isa, best)))
        .collect();
    assert_eq!(
        lower,
        isas(),
        "every level up to the best must be available"
    );

    let (m, n, k) = (5, 20, 48);
    let v = 1.0 + 2f32.powi(-11) - 2f32.powi(-20);
    let a: Vec<f32> = (0..m * k).map(|i| v * (1 << (i % 3)) as f32).collect();
    let b16: Vec<f16> = (0..k * n)
        .map(|i| f16::from_f32((1 + i % 4) as f32 / 4.0))
        .collect();
    let mut bp16 = vec![f16::ZERO; packed_len_f32(k, n)];
    pack_b_f16(&b16, k, n, &mut bp16).unwrap();
    let run_reference = |a: &[f32]| {
        let mut c = vec![0.0; m * n];
        reference::hgemm(m, n, k, a, k, &b16, n, Bias::None, -9e9, 9e9, &mut c, n);
        c
    };
    let want = run_reference(&a);
    let want_rounded = run_reference(&rounded_to_f16(&a));
    for (i, (x, y)) in want.iter().zip(&want_rounded).enumerate() {
        let tolerance = 1e-5 * y.abs() + 1e-5 * k as f32;
        assert!(
            (x - y).abs() > 4.0 * tolerance,
            "references too close at {i}: {x} {y}"
        );
    }
    for isa in lower {
        let mut got = vec![0.0; m * n];
        hgemm(
            isa,
            m,
            n,
            k,
            &a,
            k,
            &bp16,
            Bias::None,
            -9e9,
            9e9,
            &mut got,
            n,
        )
        .unwrap();
        let want = if isa == Isa::NeonFp16 {
            &want_rounded
        } else {
            &want
        };
        assert_close(&got, want, k, &format!("{isa} forced (best {best})"));
    }
}

/// Whether two SIMD levels belong to one architecture.
fn same_family(a: Isa, b: Isa) -> bool {
    let arm = |isa: Isa| matches!(isa, Isa::Neon | Isa::NeonDotprod | Isa::NeonFp16);
    a != Isa::Portable && b != Isa::Portable && arm(a) == arm(b)
}

#[test]
fn bad_arguments_are_errors_not_crashes() {
    let (m, n, k) = (3, 5, 4);
    let a = vec![1.0; m * k];
    let bp = vec![1.0; packed_len_f32(k, n)];
    let mut c = vec![0.0; m * n];
    let isa = Isa::Portable;
    let run = |a: &[f32], lda, bp: &[f32], bias, c: &mut [f32], ldc| {
        sgemm(isa, m, n, k, a, lda, bp, bias, 0.0, 1.0, c, ldc)
    };

    let err = run(&a[1..], k, &bp, Bias::None, &mut c, n).unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "a",
            needed: 12,
            got: 11
        }
    );
    let err = run(&a, k, &bp[1..], Bias::None, &mut c, n).unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "packed b",
            needed: 64,
            got: 63
        }
    );
    let err = run(&a, k, &bp, Bias::None, &mut c[1..], n).unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "c",
            needed: 15,
            got: 14
        }
    );
    let err = run(&a, k - 1, &bp, Bias::None, &mut c, n).unwrap_err();
    assert_eq!(
        err,
        KernelError::StrideTooSmall {
            what: "a",
            stride: 3,
            width: 4
        }
    );
    let err = run(&a, k, &bp, Bias::PerRow(&[0.0; 2]), &mut c, n).unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "bias (per row)",
            needed: 3,
            got: 2
        }
    );
    let err = run(&a, k, &bp, Bias::PerCol(&[0.0; 4]), &mut c, n).unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "bias (per column)",
            needed: 5,
            got: 4
        }
    );
    assert!(c.iter().all(|&x| x == 0.0), "a refused call wrote C");

    let missing = unavailable_isa();
    let err = sgemm(
        missing,
        m,
        n,
        k,
        &a,
        k,
        &bp,
        Bias::None,
        0.0,
        1.0,
        &mut c,
        n,
    )
    .unwrap_err();
    assert_eq!(
        err,
        KernelError::IsaUnavailable {
            requested: missing,
            best: Isa::best()
        }
    );
    let bp16 = vec![f16::ONE; packed_len_f32(k, n)];
    let err = hgemm(
        missing,
        m,
        n,
        k,
        &a,
        k,
        &bp16,
        Bias::None,
        0.0,
        1.0,
        &mut c,
        n,
    )
    .unwrap_err();
    assert!(matches!(err, KernelError::IsaUnavailable { .. }));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_shapes_match_reference(
        m in 1usize..40, n in 1usize..80, k in 1usize..300, variant in 0usize..60, seed: u64,
        half: bool,
    ) {
        check(&Case::new(m, n, k, variant), half, seed);
    }
}
