//! 2 x 2 max pooling at every available level: bit-identical to the definition.

mod common;

use common::{Rng, SIZES, isas, unavailable_isa};
use student_kernels::{
    IntBias, KernelError, Pool2x2, Scale, max_pool_2x2_f32, max_pool_2x2_u8, reference,
    requantize_max_pool_2x2_u8,
};

/// The definition, written out per element: `max(a, b)` is `if b > a { b } else { a }`.
fn naive<T: Copy + PartialOrd>(p: Pool2x2, x: &[T], y: &mut [T]) {
    let max = |a: T, b: T| if b > a { b } else { a };
    for plane in 0..p.planes {
        let at = |r: usize, c: usize| x[plane * p.h_in * p.w_in + r * p.w_in + c];
        for oy in 0..p.h_out {
            for ox in 0..p.w_out {
                let (r, c) = (2 * oy, 2 * ox);
                let left = max(at(r, c), at(r + 1, c));
                let right = max(at(r, c + 1), at(r + 1, c + 1));
                y[plane * p.h_out * p.w_out + oy * p.w_out + ox] = max(left, right);
            }
        }
    }
}

/// Shapes with output widths across the vector widths (1, 7, 14, 16, 17, 33, 100, ...),
/// odd input sizes (floor mode leaves a row and a column unread) and several planes.
fn shapes() -> Vec<Pool2x2> {
    let mut out = Vec::new();
    for (i, &w_out) in SIZES.iter().chain(&[14, 32]).enumerate() {
        for h_out in [1, 2, 7] {
            for extra in [0, 1] {
                out.push(Pool2x2 {
                    planes: 1 + (i + h_out) % 3,
                    h_in: 2 * h_out + (i + extra) % 2,
                    w_in: 2 * w_out + extra,
                    h_out,
                    w_out,
                });
            }
        }
    }
    out
}

#[test]
fn f32_pool_matches_the_definition_bit_for_bit() {
    let mut rng = Rng::new(7);
    for p in shapes() {
        let mut x = rng.f32s(p.planes * p.h_in * p.w_in + 3);
        // NaNs and signed zeros, where the order of the comparisons shows.
        for _ in 0..x.len() / 9 {
            let at = rng.below(x.len());
            x[at] = [f32::NAN, -0.0, 0.0, f32::NEG_INFINITY][rng.below(4)];
        }
        let len = p.planes * p.h_out * p.w_out;
        let mut want = vec![-7.5f32; len + 5];
        naive(p, &x, &mut want);
        for isa in isas() {
            let mut got = vec![-7.5f32; len + 5];
            max_pool_2x2_f32(isa, p, &x, &mut got).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{isa} {p:?}");
        }
    }
}

#[test]
fn u8_pool_matches_the_definition() {
    let mut rng = Rng::new(11);
    for p in shapes() {
        let x = rng.u8s(p.planes * p.h_in * p.w_in);
        let len = p.planes * p.h_out * p.w_out;
        let mut want = vec![0xa5u8; len + 5];
        naive(p, &x, &mut want);
        for isa in isas() {
            let mut got = vec![0xa5u8; len + 5];
            max_pool_2x2_u8(isa, p, &x, &mut got).unwrap();
            assert_eq!(got, want, "{isa} {p:?}");
        }
    }
}

/// Requantizing `planes` planes of sums, one bias and scale per plane, by the reference.
#[allow(clippy::too_many_arguments)]
fn requantize_planes(
    planes: usize,
    plane: usize,
    acc: &[i32],
    bias: &[i32],
    scale: &[f32],
    (zero_point, lo, hi): (i32, u8, u8),
    out: &mut [u8],
) {
    reference::requantize_u8(
        planes,
        plane,
        acc,
        plane,
        IntBias::PerRow(bias),
        Scale::PerRow(scale),
        zero_point,
        lo,
        hi,
        out,
        plane,
    );
}

#[test]
fn pooled_requantizing_is_the_pool_of_the_sums_requantized() {
    let mut rng = Rng::new(13);
    for (i, p) in shapes().into_iter().enumerate() {
        let (plane_in, plane_out) = (p.h_in * p.w_in, p.h_out * p.w_out);
        let acc = rng.i32s(p.planes * plane_in, 200_000);
        let bias = rng.i32s(p.planes, 5_000);
        // Positive scales, and in one shape of four a NaN, an infinity, a zero and a
        // negative one, where pooling before and after requantizing differ.
        let mut scale: Vec<f32> = (0..p.planes).map(|_| (rng.f32() + 1.5) * 1e-3).collect();
        let odd_scales = i % 4 == 3;
        if odd_scales {
            scale[rng.below(p.planes)] = [f32::NAN, f32::INFINITY, 0.0, -2e-3][i / 4 % 4];
        }
        let quant = [(128, 0, 255), (3, 3, 255), (0, 0, 6), (-40, 10, 200)][i % 4];
        let len = p.planes * plane_out;

        // The definition: the largest sum of each window, then requantized.
        let mut pooled = vec![0i32; len];
        naive(p, &acc, &mut pooled);
        let mut want = vec![0xa5u8; len + 5];
        requantize_planes(
            p.planes, plane_out, &pooled, &bias, &scale, quant, &mut want,
        );
        if !odd_scales {
            // With positive scales, the same as requantizing every sum and pooling bytes.
            let mut bytes = vec![0u8; p.planes * plane_in];
            requantize_planes(p.planes, plane_in, &acc, &bias, &scale, quant, &mut bytes);
            let mut then_pooled = vec![0xa5u8; len + 5];
            naive(p, &bytes, &mut then_pooled);
            assert_eq!(then_pooled, want, "{p:?}");
        }
        let (zero_point, lo, hi) = quant;
        for isa in isas() {
            let mut got = vec![0xa5u8; len + 5];
            requantize_max_pool_2x2_u8(isa, p, &acc, &bias, &scale, zero_point, lo, hi, &mut got)
                .unwrap();
            assert_eq!(got, want, "{isa} {p:?} {quant:?}");
        }
    }
}

#[test]
fn pool_refuses_bad_shapes_and_short_slices() {
    let p = Pool2x2 {
        planes: 2,
        h_in: 4,
        w_in: 4,
        h_out: 2,
        w_out: 2,
    };
    let isa = isas()[0];
    let (x, mut y) = (vec![0.0f32; 32], vec![0.0f32; 8]);
    assert!(max_pool_2x2_f32(isa, p, &x, &mut y).is_ok());
    let narrow = Pool2x2 { w_in: 3, ..p };
    assert!(matches!(
        max_pool_2x2_f32(isa, narrow, &x, &mut y),
        Err(KernelError::StrideTooSmall { .. })
    ));
    let short = Pool2x2 { h_in: 3, ..p };
    assert!(matches!(
        max_pool_2x2_f32(isa, short, &x, &mut y),
        Err(KernelError::StrideTooSmall { .. })
    ));
    assert!(matches!(
        max_pool_2x2_f32(isa, p, &x[..31], &mut y),
        Err(KernelError::TooShort { .. })
    ));
    assert!(matches!(
        max_pool_2x2_u8(isa, p, &[0u8; 32], &mut [0u8; 7]),
        Err(KernelError::TooShort { .. })
    ));
    assert!(matches!(
        max_pool_2x2_u8(unavailable_isa(), p, &[0u8; 32], &mut [0u8; 8]),
        Err(KernelError::IsaUnavailable { .. })
    ));

    let (acc, mut out) = ([0i32; 32], [0u8; 8]);
    let requant = |isa, p, acc: &[i32], bias: &[i32], scale: &[f32], zp, out: &mut [u8]| {
        requantize_max_pool_2x2_u8(isa, p, acc, bias, scale, zp, 0, 255, out)
    };
    assert!(requant(isa, p, &acc, &[0; 2], &[1.0; 2], 0, &mut out).is_ok());
    assert!(matches!(
        requant(isa, narrow, &acc, &[0; 2], &[1.0; 2], 0, &mut out),
        Err(KernelError::StrideTooSmall { .. })
    ));
    assert!(matches!(
        requant(isa, p, &acc[..31], &[0; 2], &[1.0; 2], 0, &mut out),
        Err(KernelError::TooShort { .. })
    ));
    assert_eq!(
        requant(isa, p, &acc, &[0; 1], &[1.0; 2], 0, &mut out),
        Err(KernelError::TooShort {
            what: "bias (per plane)",
            needed: 2,
            got: 1
        })
    );
    assert_eq!(
        requant(isa, p, &acc, &[0; 2], &[1.0; 1], 0, &mut out),
        Err(KernelError::TooShort {
            what: "scale (per plane)",
            needed: 2,
            got: 1
        })
    );
    assert!(matches!(
        requant(isa, p, &acc, &[0; 2], &[1.0; 2], 1 << 24, &mut out),
        Err(KernelError::ZeroPointOutOfRange { .. })
    ));
    assert!(matches!(
        requant(unavailable_isa(), p, &acc, &[0; 2], &[1.0; 2], 0, &mut out),
        Err(KernelError::IsaUnavailable { .. })
    ));
}
