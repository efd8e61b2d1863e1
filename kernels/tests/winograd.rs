//! The Winograd F(2x2, 3x3) convolution at every available level against a plain direct
//! convolution.
//!
//! Tolerance: inputs and weights are uniform in [-1, 1), so every output is a sum of
//! `9 c_in` products of magnitude at most 1. The transforms add up to 9 inputs and 9
//! products before and after the products, each adding one rounding, so the error is a
//! few times f32's 6e-8 per term: `1e-4 * |want| + 2e-6 * 9 c_in` holds it with a wide
//! margin and still catches any misplaced tile, lane or channel (an error of order 1).

mod common;

use common::{Rng, isas, unavailable_isa};
use student_kernels::{
    Conv3x3, Isa, KernelError, Pool2x2, conv3x3_winograd_f32, max_pool_2x2_f32,
    winograd_weights_f32,
};

/// The direct convolution: output `(oy, ox)` sums inputs `oy - pad + ky`, `ox - pad + kx`
/// inside the image, then adds the bias and clamps.
#[allow(clippy::too_many_arguments)]
fn direct(
    s: &Conv3x3,
    batch: usize,
    x: &[f32],
    g: &[f32],
    bias: Option<&[f32]>,
    lo: f32,
    hi: f32,
) -> Vec<f32> {
    let plane = s.h_out * s.w_out;
    let sums = common::conv3x3_sums(s, batch, x, g);
    let mut y = Vec::with_capacity(sums.len());
    for (i, &(acc, _)) in sums.iter().enumerate() {
        let v = acc as f32 + bias.map_or(0.0, |b| b[i / plane % s.c_out]);
        y.push(v.max(lo).min(hi));
    }
    y
}

fn check(s: Conv3x3, batch: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = rng.f32s(batch * s.c_in * s.h_in * s.w_in);
    let g = rng.f32s(s.c_out * s.c_in * 9);
    let bias = rng.f32s(s.c_out);
    let mut u = vec![0.0; s.weights_len()];
    winograd_weights_f32(&g, s.c_out, s.c_in, &mut u).unwrap();
    for (with_bias, lo, hi) in [(false, f32::NEG_INFINITY, f32::INFINITY), (true, 0.0, 0.75)] {
        let bias = with_bias.then_some(&bias[..]);
        let want = direct(&s, batch, &x, &g, bias, lo, hi);
        for isa in isas() {
            // Scratch starts as NaN: a transform that reads what it did not write fails.
            let mut scratch = vec![f32::NAN; s.scratch_len(batch)];
            let mut y = vec![f32::NAN; want.len() + 3];
            conv3x3_winograd_f32(isa, &s, batch, &x, &u, bias, lo, hi, &mut y, &mut scratch)
                .unwrap();
            let tolerance_per_term = 2e-6 * (9 * s.c_in) as f32;
            for (i, (&got, &w)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (got - w).abs() <= 1e-4 * w.abs() + tolerance_per_term,
                    "{isa} {s:?} batch {batch} bias {with_bias}: y[{i}] = {got}, want {w}"
                );
            }
            assert!(
                y[want.len()..].iter().all(|v| v.is_nan()),
                "{isa} wrote past y"
            );
        }
    }
}

fn shape(c_in: usize, c_out: usize, h: usize, w: usize, pad: usize) -> Conv3x3 {
    Conv3x3 {
        c_in,
        c_out,
        h_in: h,
        w_in: w,
        h_out: h + 2 * pad - 2,
        w_out: w + 2 * pad - 2,
        pad: [pad, pad],
        pool: false,
    }
}

#[test]
fn same_padding_matches_the_direct_convolution() {
    let sizes = [(1, 1), (2, 2), (5, 7), (13, 13), (14, 14), (3, 17)];
    let channels = [(1, 1), (3, 5), (8, 8), (17, 33), (32, 64)];
    for (i, &(h, w)) in sizes.iter().enumerate() {
        for (j, &(c_in, c_out)) in channels.iter().enumerate() {
            for batch in [1, 3] {
                check(shape(c_in, c_out, h, w, 1), batch, (i * 10 + j) as u64);
            }
        }
    }
}

#[test]
fn valid_and_uneven_padding_match_the_direct_convolution() {
    // No padding (the output shrinks by 2), and padding on the top/left only (the output
    // keeps one row and column of the input's size minus one).
    for (h, w) in [(3, 3), (4, 9), (7, 6)] {
        check(shape(5, 9, h, w, 0), 2, 7);
        let s = Conv3x3 {
            h_out: h - 1,
            w_out: w - 1,
            pad: [1, 1],
            ..shape(4, 6, h, w, 0)
        };
        check(s, 3, 8);
    }
}

#[test]
fn wide_and_one_sided_padding_match_the_direct_convolution() {
    // AVX-512 pads by masking its loads from the input: padding wider than a run's
    // columns, on one side only, and outputs that stop before the padding does.
    let cases = [
        ([2, 0], 9, 10, 9, 8),
        ([0, 3], 6, 16, 4, 20),
        ([5, 17], 3, 4, 12, 38),
        ([3, 3], 2, 2, 5, 3),
    ];
    for (i, (pad, h, w, h_out, w_out)) in cases.into_iter().enumerate() {
        let s = Conv3x3 {
            h_out,
            w_out,
            pad,
            ..shape(6, 5, h, w, 0)
        };
        check(s, 2, 20 + i as u64);
    }
}

#[test]
fn many_tiles_span_several_chunks() {
    // 2 x 30 x 30 at 16 + 16 channels: 450 tiles, more than one chunk, the last partial.
    let s = shape(16, 16, 30, 30, 1);
    assert!(2 * 15 * 15 > s.chunk_tiles(), "{}", s.chunk_tiles());
    check(s, 2, 11);
    let s = shape(64, 64, 28, 28, 1);
    assert!(3 * 14 * 14 > s.chunk_tiles(), "{}", s.chunk_tiles());
    check(s, 3, 12);
}

/// Runs the convolution at `isa`, pooled or not, into a fresh output.
fn run(isa: Isa, s: Conv3x3, batch: usize, x: &[f32], u: &[f32], bias: &[f32]) -> Vec<f32> {
    let (h, w) = s.out_dims();
    let mut y = vec![f32::NAN; batch * s.c_out * h * w];
    let mut scratch = vec![f32::NAN; s.scratch_len(batch)];
    conv3x3_winograd_f32(
        isa,
        &s,
        batch,
        x,
        u,
        Some(bias),
        0.0,
        6.0,
        &mut y,
        &mut scratch,
    )
    .unwrap();
    y
}

#[test]
fn fused_pool_is_the_pool_of_the_convolution_bit_for_bit() {
    // The fused pool takes the maximum of the raw sums, then adds the bias and clamps: the
    // same values the unfused convolution clamps, compared in the pool kernel's order, so
    // the results are identical, NaNs included (a NaN is kept or passed over by its place
    // in the window, as `max_pool_2x2_f32` documents).
    let cases = [
        (2, 2, 3, 4),
        (14, 14, 32, 64),
        (6, 10, 5, 7),
        (30, 30, 16, 16),
    ];
    for (i, &(h, w, c_in, c_out)) in cases.iter().enumerate() {
        let mut rng = Rng::new(40 + i as u64);
        let batch = 3;
        let s = shape(c_in, c_out, h, w, 1);
        let pooled = Conv3x3 { pool: true, ..s };
        assert_eq!(pooled.out_dims(), (h / 2, w / 2));
        let mut x = rng.f32s(batch * c_in * h * w);
        // A NaN in one input reaches up to 3 x 3 outputs, so both kept and passed-over
        // NaNs occur in the windows around it.
        x[c_in * h * w + w + 1] = f32::NAN;
        let g = rng.f32s(c_out * c_in * 9);
        let bias = rng.f32s(c_out);
        let mut u = vec![0.0; s.weights_len()];
        winograd_weights_f32(&g, c_out, c_in, &mut u).unwrap();
        for isa in isas() {
            let full = run(isa, s, batch, &x, &u, &bias);
            let p = Pool2x2 {
                planes: batch * c_out,
                h_in: h,
                w_in: w,
                h_out: h / 2,
                w_out: w / 2,
            };
            let mut want = vec![0.0; batch * c_out * (h / 2) * (w / 2)];
            max_pool_2x2_f32(Isa::Portable, p, &full, &mut want).unwrap();
            let got = run(isa, pooled, batch, &x, &u, &bias);
            assert!(
                want.iter().any(|v| v.is_nan()),
                "{isa} {s:?}: no NaN reached"
            );
            for (j, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{isa} {s:?}: pooled y[{j}] = {g}, want {w}"
                );
            }
        }
    }
}

#[test]
fn fused_pool_of_an_odd_output_is_an_error() {
    let s = Conv3x3 {
        pool: true,
        ..shape(2, 3, 5, 4, 1)
    };
    let (x, u) = (vec![0.0; 2 * 20], vec![0.0; s.weights_len()]);
    let mut y = vec![0.0; 3 * 20];
    let mut scratch = vec![0.0; s.scratch_len(1)];
    assert_eq!(
        conv3x3_winograd_f32(
            Isa::Portable,
            &s,
            1,
            &x,
            &u,
            None,
            0.0,
            1.0,
            &mut y,
            &mut scratch
        ),
        Err(KernelError::PoolOfOddSize {
            height: 5,
            width: 4
        })
    );
}

#[test]
fn weight_transform_is_g_g_gt() {
    // One kernel with distinct entries, against the matrix products written out.
    let g: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let gm = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut u = vec![0.0; 16];
    winograd_weights_f32(&g, 1, 1, &mut u).unwrap();
    for i in 0..4 {
        for j in 0..4 {
            let mut want = 0.0;
            for a in 0..3 {
                for b in 0..3 {
                    want += gm[i][a] * g[a * 3 + b] * gm[j][b];
                }
            }
            assert_eq!(u[4 * i + j], want, "u[{i}][{j}]");
        }
    }
}

#[test]
fn short_slices_and_unavailable_levels_are_errors() {
    let s = shape(2, 3, 4, 4, 1);
    let (x, u) = (vec![0.0; 2 * 16], vec![0.0; s.weights_len()]);
    let mut y = vec![0.0; 3 * 16];
    let mut scratch = vec![0.0; s.scratch_len(1)];
    let run = |isa: Isa, x: &[f32], y: &mut [f32], scratch: &mut [f32]| {
        conv3x3_winograd_f32(isa, &s, 1, x, &u, None, 0.0, 1.0, y, scratch)
    };
    assert!(matches!(
        run(Isa::Portable, &x[1..], &mut y, &mut scratch),
        Err(KernelError::TooShort { what: "x", .. })
    ));
    assert!(matches!(
        run(Isa::Portable, &x, &mut y[1..], &mut scratch),
        Err(KernelError::TooShort { what: "y", .. })
    ));
    let short = scratch.len() - 1;
    assert!(matches!(
        run(Isa::Portable, &x, &mut y, &mut scratch[..short]),
        Err(KernelError::TooShort {
            what: "scratch",
            ..
        })
    ));
    assert!(matches!(
        run(unavailable_isa(), &x, &mut y, &mut scratch),
        Err(KernelError::IsaUnavailable { .. })
    ));
    assert!(matches!(
        winograd_weights_f32(&[0.0; 17], 1, 2, &mut [0.0; 32]),
        Err(KernelError::TooShort {
            what: "weights",
            ..
        })
    ));
}
