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
    if half {
        reference::hgemm(
            m, n, k, &a, lda, &b16, n, bias, case.lo, case.hi, &mut want, ldc,
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
    for isa in isas() {
        let mut c = vec![0.0; m * n];
        sgemm(isa, m, n, k, &a, k, &bp, Bias::None, 0.0, 6.0, &mut c, n).unwrap();
        assert!(c[..n].iter().all(|x| x.is_nan()), "{isa}: {c:?}");
        assert!(c[n..].iter().all(|&x| x == 3.0), "{isa}: {c:?}");
    }
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
