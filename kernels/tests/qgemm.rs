//! qgemm_u8s8 and qgemm_s8u8 at every available level: bit-identical to `reference`.

mod common;

use common::{Rng, SIZES, isas, unavailable_isa};
use proptest::prelude::*;
use student_kernels::{
    Isa, KernelError, pack_b_s8, pack_b_u8, packed_len_q8, qgemm_s8u8, qgemm_u8s8, reference,
};

const SENTINEL: i32 = 0x5a5a_5a5a;

/// How the operands are filled.
#[derive(Clone, Copy, Debug)]
enum Values {
    Random,
    /// Every product at its most negative: u8 255 times i8 -128.
    Extreme,
    /// 0/255 and -128/127 alternating, so sums cancel and saturate nowhere.
    Alternating,
}

struct Case {
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldc: usize,
    values: Values,
}

impl Case {
    fn new(m: usize, n: usize, k: usize, variant: usize, values: Values) -> Case {
        Case {
            m,
            n,
            k,
            lda: k + variant % 3 * 3,
            ldc: n + variant % 4 * 5,
            values,
        }
    }
}

/// `(unsigned, signed)` operand bytes of lengths `a_len` and `b_len`.
fn operands(values: Values, a_len: usize, b_len: usize, rng: &mut Rng) -> (Vec<u8>, Vec<i8>) {
    match values {
        Values::Random => (rng.u8s(a_len), rng.i8s(b_len)),
        Values::Extreme => (vec![255; a_len], vec![-128; b_len]),
        Values::Alternating => (
            (0..a_len)
                .map(|x| if x % 2 == 0 { 255 } else { 0 })
                .collect(),
            (0..b_len)
                .map(|x| if x % 3 == 0 { 127 } else { -128 })
                .collect(),
        ),
    }
}

/// Runs one case of both products at every level.
fn check(case: &Case, seed: u64) {
    let Case {
        m,
        n,
        k,
        lda,
        ldc,
        values,
    } = *case;
    let mut rng = Rng::new(seed);
    let a_len = (m - 1) * lda + k;
    let c_len = (m - 1) * ldc + n + 3;
    let region = |x: usize| x < (m - 1) * ldc + n && x % ldc < n;

    // u8 x s8: A unsigned, B signed.
    let (a, b) = operands(values, a_len, k * n, &mut rng);
    let colsum = reference::col_sums_s8(&b, k, n, n);
    let mut want = vec![SENTINEL; c_len];
    reference::qgemm_u8s8(m, n, k, &a, lda, &b, n, &mut want, ldc);
    let mut bp = vec![0; packed_len_q8(k, n)];
    pack_b_s8(&b, k, n, &mut bp).unwrap();
    for isa in isas() {
        let mut got = vec![SENTINEL; c_len];
        qgemm_u8s8(isa, m, n, k, &a, lda, &bp, &colsum, &mut got, ldc).unwrap();
        let first_bad = (0..c_len).find(|&x| got[x] != want[x]);
        assert_eq!(
            first_bad,
            None,
            "{isa} u8s8 m={m} n={n} k={k} lda={lda} ldc={ldc} {values:?}: \
            at {first_bad:?} (inside C: {:?})",
            first_bad.map(region)
        );
    }

    // s8 x u8: A signed, B unsigned (the same bytes reinterpreted, swapped).
    let (b, a) = operands(values, k * n, a_len, &mut rng);
    let rowsum = reference::row_sums_s8(&a, m, k, lda);
    let mut want = vec![SENTINEL; c_len];
    reference::qgemm_s8u8(m, n, k, &a, lda, &b, n, &mut want, ldc);
    let mut bp = vec![0; packed_len_q8(k, n)];
    pack_b_u8(&b, k, n, &mut bp).unwrap();
    for isa in isas() {
        let mut got = vec![SENTINEL; c_len];
        qgemm_s8u8(isa, m, n, k, &a, lda, &bp, &rowsum, &mut got, ldc).unwrap();
        let first_bad = (0..c_len).find(|&x| got[x] != want[x]);
        assert_eq!(
            first_bad,
            None,
            "{isa} s8u8 m={m} n={n} k={k} lda={lda} ldc={ldc} {values:?}: \
            at {first_bad:?} (inside C: {:?})",
            first_bad.map(region)
        );
    }
}

#[test]
fn both_products_match_reference_over_the_size_grid() {
    let mut variant = 0;
    for m in SIZES {
        for n in SIZES {
            for k in SIZES {
                let values = [Values::Random, Values::Extreme, Values::Alternating][variant % 3];
                check(&Case::new(m, n, k, variant, values), variant as u64);
                variant += 1;
            }
        }
    }
}

#[test]
fn model_shapes_and_long_sums_match_reference() {
    // A conv, a stem conv, dense layers at batch 1 and 32; k = 3136 with every product at
    // -32640 sums to -102 million, well inside i32.
    let shapes = [
        (16, 196, 72),
        (8, 784, 9),
        (1, 64, 3136),
        (32, 64, 3136),
        (1, 10, 64),
    ];
    for (variant, (m, n, k)) in shapes.into_iter().enumerate() {
        for values in [Values::Random, Values::Extreme, Values::Alternating] {
            check(&Case::new(m, n, k, variant, values), 300 + variant as u64);
        }
    }
}

#[test]
fn extreme_sum_has_the_expected_value() {
    let (m, n, k) = (1, 1, 3136);
    let a = vec![255u8; k];
    let b = vec![-128i8; k];
    let mut bp = vec![0; packed_len_q8(k, n)];
    pack_b_s8(&b, k, n, &mut bp).unwrap();
    for isa in isas() {
        let mut c = [0];
        qgemm_u8s8(isa, m, n, k, &a, k, &bp, &[-128 * k as i32], &mut c, n).unwrap();
        assert_eq!(c, [-102_359_040], "{isa}");
    }
}

#[test]
fn bad_arguments_are_errors_not_crashes() {
    let (m, n, k) = (2, 3, 5);
    let a = vec![1u8; m * k];
    let bp = vec![1i8; packed_len_q8(k, n)];
    let sums = vec![0; n];
    let mut c = vec![0; m * n];
    let isa = Isa::Portable;

    let err = qgemm_u8s8(isa, m, n, k, &a[1..], k, &bp, &sums, &mut c, n).unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "a",
            needed: 10,
            got: 9
        }
    );
    let err = qgemm_u8s8(isa, m, n, k, &a, k, &bp[1..], &sums, &mut c, n).unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "packed b",
            needed: 128,
            got: 127
        }
    );
    let err = qgemm_u8s8(isa, m, n, k, &a, k, &bp, &sums[1..], &mut c, n).unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "b column sums",
            needed: 3,
            got: 2
        }
    );
    let err = qgemm_u8s8(isa, m, n, k, &a, k, &bp, &sums, &mut c, n - 1).unwrap_err();
    assert_eq!(
        err,
        KernelError::StrideTooSmall {
            what: "c",
            stride: 2,
            width: 3
        }
    );

    let a8 = vec![1i8; m * k];
    let b8 = vec![1u8; packed_len_q8(k, n)];
    let err = qgemm_s8u8(isa, m, n, k, &a8, k, &b8, &[0], &mut c, n).unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "a row sums",
            needed: 2,
            got: 1
        }
    );
    assert!(c.iter().all(|&x| x == 0), "a refused call wrote C");

    let missing = unavailable_isa();
    let err = qgemm_u8s8(missing, m, n, k, &a, k, &bp, &sums, &mut c, n).unwrap_err();
    assert_eq!(
        err,
        KernelError::IsaUnavailable {
            requested: missing,
            best: Isa::best()
        }
    );
    let err = qgemm_s8u8(missing, m, n, k, &a8, k, &b8, &[0; 2], &mut c, n).unwrap_err();
    assert!(matches!(err, KernelError::IsaUnavailable { .. }));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_shapes_match_reference(
        m in 1usize..40, n in 1usize..80, k in 1usize..700, variant in 0usize..60, seed: u64,
        values in prop_oneof![Just(Values::Random), Just(Values::Extreme), Just(Values::Alternating)],
    ) {
        check(&Case::new(m, n, k, variant, values), seed);
    }
}
