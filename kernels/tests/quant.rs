//! The quantization kernels at every available level: bit-identical to `reference`.

mod common;

use common::{Rng, SIZES, assert_same_f32, isas, unavailable_isa};
use proptest::prelude::*;
use student_kernels::{
    IntBias, Isa, KernelError, Scale, dequantize_acc_f32, dequantize_u8, quantize_u8, reference,
    requantize_u8,
};

/// Runs requantize_u8 and dequantize_acc_f32 on one shape at every level.
fn check_epilogues(m: usize, n: usize, variant: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let (ldacc, ldout) = (n + variant % 3 * 2, n + variant % 5);
    // Sums around what a conv produces, plus the i32 extremes now and then.
    let mut acc = rng.i32s((m - 1) * ldacc + n, 200_000);
    if variant.is_multiple_of(7) {
        acc[0] = i32::MAX;
        acc[(m - 1) * ldacc] = i32::MIN;
    }
    let biases = rng.i32s(m.max(n), 5_000);
    let scales: Vec<f32> = (0..m.max(n)).map(|_| (rng.f32() + 1.5) * 1e-3).collect();
    let bias = [
        IntBias::None,
        IntBias::PerRow(&biases[..m]),
        IntBias::PerCol(&biases[..n]),
    ][variant % 3];
    let scale = [
        Scale::Uniform(scales[0]),
        Scale::PerRow(&scales[..m]),
        Scale::PerCol(&scales[..n]),
    ][variant / 3 % 3];
    let (zero_point, lo, hi) = [(128, 0, 255), (3, 3, 255), (0, 0, 6), (-40, 10, 200)][variant % 4];
    let out_len = (m - 1) * ldout + n + 2;

    let mut want = vec![0xa5; out_len];
    reference::requantize_u8(
        m, n, &acc, ldacc, bias, scale, zero_point, lo, hi, &mut want, ldout,
    );
    for isa in isas() {
        let mut got = vec![0xa5; out_len];
        requantize_u8(
            isa, m, n, &acc, ldacc, bias, scale, zero_point, lo, hi, &mut got, ldout,
        )
        .unwrap();
        assert_eq!(got, want, "{isa} requantize m={m} n={n} variant={variant}");
    }

    let (flo, fhi) = [
        (f32::NEG_INFINITY, f32::INFINITY),
        (0.0, f32::INFINITY),
        (0.0, 6.0),
    ][variant % 3];
    let mut want = vec![-1.5; out_len];
    reference::dequantize_acc_f32(m, n, &acc, ldacc, bias, scale, flo, fhi, &mut want, ldout);
    for isa in isas() {
        let mut got = vec![-1.5; out_len];
        dequantize_acc_f32(
            isa, m, n, &acc, ldacc, bias, scale, flo, fhi, &mut got, ldout,
        )
        .unwrap();
        assert_same_f32(
            &got,
            &want,
            &format!("{isa} dequantize_acc m={m} n={n} variant={variant}"),
        );
    }
}

#[test]
fn epilogues_match_reference_over_the_size_grid() {
    let mut variant = 0;
    for m in SIZES {
        for n in SIZES {
            check_epilogues(m, n, variant, variant as u64);
            variant += 1;
        }
    }
}

#[test]
fn requantize_rounds_half_to_even_and_clamps() {
    // With scale 0.5: 1 -> 0.5 -> 0, 3 -> 1.5 -> 2, 5 -> 2.5 -> 2, -3 -> -1.5 -> -2.
    let acc = [1, 3, 5, -3, 1000, -1000, 7, 9, 11];
    let want = [10, 12, 12, 8, 20, 5, 14, 14, 16];
    for isa in isas() {
        let mut out = [0u8; 9];
        requantize_u8(
            isa,
            1,
            9,
            &acc,
            9,
            IntBias::None,
            Scale::Uniform(0.5),
            10,
            5,
            20,
            &mut out,
            9,
        )
        .unwrap();
        assert_eq!(out, want, "{isa}");
    }
}

#[test]
fn elementwise_quantization_matches_reference() {
    let mut rng = Rng::new(7);
    for len in SIZES.into_iter().chain([0, 1000, 1003]) {
        let mut x: Vec<f32> = (0..len).map(|_| rng.f32() * 3.0).collect();
        // Exact halves, huge values, infinities and NaN.
        for (i, v) in [
            0.25,
            0.75,
            -0.25,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]
        .into_iter()
        .enumerate()
        {
            if i * 3 < len {
                x[i * 3] = v;
            }
        }
        for (scale, zp) in [(0.5, 128), (0.02, 0), (1.0, 255), (0.013, 17)] {
            let mut want = vec![0; len];
            reference::quantize_u8(&x, scale, zp, &mut want);
            let q = want.clone();
            let mut want_back = vec![0.0; len];
            reference::dequantize_u8(&q, scale, zp, &mut want_back);
            for isa in isas() {
                let mut got = vec![0; len];
                quantize_u8(isa, &x, scale, zp, &mut got).unwrap();
                assert_eq!(got, want, "{isa} quantize len={len} scale={scale} zp={zp}");
                let mut back = vec![0.0; len];
                dequantize_u8(isa, &q, scale, zp, &mut back).unwrap();
                assert_same_f32(&back, &want_back, &format!("{isa} dequantize len={len}"));
            }
        }
    }
}

#[test]
fn quantize_follows_onnx_on_known_values() {
    let x = [0.0, 0.25, 0.75, -0.25, 100.0, -100.0, f32::NAN, 1.0, 0.5];
    // x / 0.5 = 0, 0.5, 1.5, -0.5, 200, -200, NaN, 2, 1; then + 128, saturated.
    let want = [128, 128, 130, 128, 255, 0, 0, 130, 129];
    for isa in isas() {
        let mut out = [0u8; 9];
        quantize_u8(isa, &x, 0.5, 128, &mut out).unwrap();
        assert_eq!(out, want, "{isa}");
        let mut back = [0.0; 9];
        dequantize_u8(isa, &out, 0.5, 128, &mut back).unwrap();
        assert_eq!(
            back,
            [0.0, 0.0, 1.0, 0.0, 63.5, -64.0, -64.0, 1.0, 0.5],
            "{isa}"
        );
    }
}

#[test]
fn bad_arguments_are_errors_not_crashes() {
    let isa = Isa::Portable;
    let acc = [0; 6];
    let mut out = [0u8; 6];
    let err = requantize_u8(
        isa,
        2,
        3,
        &acc[1..],
        3,
        IntBias::None,
        Scale::Uniform(1.0),
        0,
        0,
        255,
        &mut out,
        3,
    )
    .unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "acc",
            needed: 6,
            got: 5
        }
    );
    let err = requantize_u8(
        isa,
        2,
        3,
        &acc,
        3,
        IntBias::PerCol(&[1, 2]),
        Scale::Uniform(1.0),
        0,
        0,
        255,
        &mut out,
        3,
    )
    .unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "bias (per column)",
            needed: 3,
            got: 2
        }
    );
    let err = requantize_u8(
        isa,
        2,
        3,
        &acc,
        3,
        IntBias::None,
        Scale::PerRow(&[1.0]),
        0,
        0,
        255,
        &mut out,
        3,
    )
    .unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "scale (per row)",
            needed: 2,
            got: 1
        }
    );
    let err = requantize_u8(
        isa,
        2,
        3,
        &acc,
        3,
        IntBias::None,
        Scale::Uniform(1.0),
        1 << 24,
        0,
        255,
        &mut out,
        3,
    )
    .unwrap_err();
    assert_eq!(
        err,
        KernelError::ZeroPointOutOfRange {
            zero_point: 1 << 24
        }
    );
    let mut fout = [0.0; 6];
    let err = dequantize_acc_f32(
        isa,
        2,
        3,
        &acc,
        3,
        IntBias::None,
        Scale::Uniform(1.0),
        0.0,
        1.0,
        &mut fout,
        2,
    )
    .unwrap_err();
    assert_eq!(
        err,
        KernelError::StrideTooSmall {
            what: "out",
            stride: 2,
            width: 3
        }
    );
    let err = quantize_u8(isa, &[0.0; 4], 1.0, 0, &mut out[..3]).unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "out",
            needed: 4,
            got: 3
        }
    );
    let err = dequantize_u8(isa, &[0; 4], 1.0, 0, &mut fout[..3]).unwrap_err();
    assert_eq!(
        err,
        KernelError::TooShort {
            what: "out",
            needed: 4,
            got: 3
        }
    );

    let missing = unavailable_isa();
    let err = quantize_u8(missing, &[0.0; 4], 1.0, 0, &mut out).unwrap_err();
    assert_eq!(
        err,
        KernelError::IsaUnavailable {
            requested: missing,
            best: Isa::best()
        }
    );
    let err = dequantize_u8(missing, &[0; 4], 1.0, 0, &mut fout).unwrap_err();
    assert!(matches!(err, KernelError::IsaUnavailable { .. }));
    let err = requantize_u8(
        missing,
        2,
        3,
        &acc,
        3,
        IntBias::None,
        Scale::Uniform(1.0),
        0,
        0,
        255,
        &mut out,
        3,
    )
    .unwrap_err();
    assert!(matches!(err, KernelError::IsaUnavailable { .. }));
    let err = dequantize_acc_f32(
        missing,
        2,
        3,
        &acc,
        3,
        IntBias::None,
        Scale::Uniform(1.0),
        0.0,
        1.0,
        &mut fout,
        3,
    )
    .unwrap_err();
    assert!(matches!(err, KernelError::IsaUnavailable { .. }));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_epilogues_match_reference(m in 1usize..20, n in 1usize..90, variant in 0usize..100, seed: u64) {
        check_epilogues(m, n, variant, seed);
    }

    #[test]
    fn quantize_dequantize_round_trip_within_half_a_step(
        x in proptest::collection::vec(-10.0f32..10.0, 0..70), scale in 0.05f32..1.0, zp: u8,
    ) {
        for isa in isas() {
            let mut q = vec![0; x.len()];
            quantize_u8(isa, &x, scale, zp, &mut q).unwrap();
            let mut back = vec![0.0; x.len()];
            dequantize_u8(isa, &q, scale, zp, &mut back).unwrap();
            for (&v, &r) in x.iter().zip(&back) {
                let representable = (-(zp as f32) * scale..=(255.0 - zp as f32) * scale).contains(&v);
                if representable {
                    prop_assert!((v - r).abs() <= scale * 0.5 + 1e-5, "{isa}: {v} -> {r}");
                }
            }
        }
    }
}
