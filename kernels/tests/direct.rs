//! The direct 3x3 convolution (with and without its fused max pool) at every available
//! level against a plain scalar loop.
//!
//! Tolerance: each output is compared with the f64 sum of its products, rounded to f32,
//! plus the bias and clamped. The kernels sum at most `9 c_in` f32 products in f32 (with
//! or without fused multiply-adds), so their error is at most about `9 c_in * 6e-8`
//! times the sum of the products' magnitudes; `1e-5 * (sum |x w| + |bias|)` holds it for
//! the channel counts here and still catches any misplaced row, column, tap or channel.
//! A pooled output gets the largest tolerance of its window.

mod common;

use common::{Rng, isas, unavailable_isa};
use student_kernels::{Conv3x3, Isa, KernelError, conv3x3_direct_f32};

/// `(want, tolerance)` per output: the convolution summed in f64 over the taps inside the
/// image, plus the bias, clamped as `reference::clamp` does (NaN passes), then pooled
/// as `max_pool_2x2_f32` documents: `max(a, b) = if b > a { b } else { a }` down each
/// column, then across, so a NaN is kept or passed over by its place in the window.
#[allow(clippy::too_many_arguments)]
fn reference(
    s: &Conv3x3,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    lo: f32,
    hi: f32,
) -> (Vec<f32>, Vec<f32>) {
    let (h, wd) = (s.h_out, s.w_out);
    let sums = common::conv3x3_sums(s, batch, x, w);
    let mut conv = Vec::with_capacity(sums.len());
    let mut tol = Vec::with_capacity(sums.len());
    for (i, &(acc, scale)) in sums.iter().enumerate() {
        let b = bias.map_or(0.0, |b| b[i / (h * wd) % s.c_out]);
        let v = acc as f32 + b;
        let v = if v < lo { lo } else { v };
        let v = if v > hi { hi } else { v };
        conv.push(v);
        tol.push(1e-5 * (scale as f32 + b.abs()));
    }
    if !s.pool {
        return (conv, tol);
    }
    let (ph, pw) = s.out_dims();
    let mut want = vec![0.0f32; batch * s.c_out * ph * pw];
    let mut want_tol = vec![0.0f32; want.len()];
    for plane in 0..batch * s.c_out {
        for py in 0..ph {
            for px in 0..pw {
                let window = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .map(|(dy, dx)| plane * h * wd + (2 * py + dy) * wd + 2 * px + dx);
                let [a, b, c, d] = window.map(|i| conv[i]);
                let max = |a: f32, b: f32| if b > a { b } else { a };
                let at = (plane * ph + py) * pw + px;
                want[at] = max(max(a, c), max(b, d));
                want_tol[at] = window.map(|i| tol[i]).into_iter().fold(0.0, f32::max);
            }
        }
    }
    (want, want_tol)
}

/// Runs the shape at every level with and without `bias`, against [`reference`].
fn check(s: Conv3x3, batch: usize, seed: u64, lo: f32, hi: f32, nan_at: Option<usize>) {
    let mut rng = Rng::new(seed);
    let mut x = rng.f32s(batch * s.c_in * s.h_in * s.w_in);
    if let Some(i) = nan_at {
        let len = x.len();
        x[i % len] = f32::NAN;
    }
    let w = rng.f32s(s.c_out * s.c_in * 9);
    let b = rng.f32s(s.c_out);
    for bias in [None, Some(&b[..])] {
        let (want, tol) = reference(&s, batch, &x, &w, bias, lo, hi);
        for isa in isas() {
            // A sentinel no output can hold; the tail past the output must keep it.
            let mut y = vec![1e30; want.len() + 3];
            conv3x3_direct_f32(isa, &s, batch, &x, &w, bias, lo, hi, &mut y).unwrap();
            let what = format!(
                "{isa} {s:?} batch {batch} bias {} clamp {lo}..{hi}",
                bias.is_some()
            );
            for (i, ((&got, &want), &tol)) in y.iter().zip(&want).zip(&tol).enumerate() {
                let same = (got.is_nan() && want.is_nan()) || (got - want).abs() <= tol;
                assert!(
                    same,
                    "{what}: y[{i}] = {got}, want {want} (tolerance {tol})"
                );
            }
            assert!(
                y[want.len()..].iter().all(|&v| v == 1e30),
                "{what}: wrote past y"
            );
        }
    }
}

/// A shape with `pad` on every side, its output shrunk to even sizes when pooling.
fn shape(c_in: usize, c_out: usize, h: usize, w: usize, pad: usize, pool: bool) -> Conv3x3 {
    let even = |v: usize| if pool { v & !1 } else { v };
    Conv3x3 {
        c_in,
        c_out,
        h_in: h,
        w_in: w,
        h_out: even((h + 2 * pad).saturating_sub(2)),
        w_out: even((w + 2 * pad).saturating_sub(2)),
        pad: [pad, pad],
        pool,
    }
}

const CLAMPS: [(f32, f32); 3] = [
    (f32::NEG_INFINITY, f32::INFINITY),
    (0.0, f32::INFINITY),
    (0.0, 6.0),
];

#[test]
fn edge_sizes_match_the_scalar_loop() {
    // Every size pair, pad and pool setting; the channel counts, batch and clamp rotate
    // at coprime periods so every value of each meets many shapes.
    let sizes = [1, 2, 3, 5, 16, 17, 28, 33];
    let c_outs = [1, 3, 4, 5, 32];
    let mut case = 0usize;
    for &h in &sizes {
        for &w in &sizes {
            for pad in 0..3 {
                for pool in [false, true] {
                    let c_in = 1 + case % 4;
                    let c_out = c_outs[case % 5];
                    let batch = [1, 3][case % 7 % 2];
                    let (lo, hi) = CLAMPS[case % 3];
                    check(
                        shape(c_in, c_out, h, w, pad, pool),
                        batch,
                        case as u64,
                        lo,
                        hi,
                        None,
                    );
                    case += 1;
                }
            }
        }
    }
}

#[test]
fn first_layers_match_the_scalar_loop() {
    // The teacher's first layer (1 -> 32, 28 x 28, same padding, ReLU, pool) and an RGB
    // one, with every clamp.
    for (i, (lo, hi)) in CLAMPS.into_iter().enumerate() {
        check(
            shape(1, 32, 28, 28, 1, true),
            3,
            100 + i as u64,
            lo,
            hi,
            None,
        );
        check(
            shape(3, 16, 32, 32, 1, true),
            1,
            110 + i as u64,
            lo,
            hi,
            None,
        );
        check(
            shape(3, 8, 32, 32, 1, false),
            1,
            120 + i as u64,
            lo,
            hi,
            None,
        );
    }
}

#[test]
fn uneven_padding_and_outputs_match_the_scalar_loop() {
    // Top/left padding only, and outputs smaller or larger than the padding implies.
    for (i, (h_out, w_out)) in [(4, 6), (2, 20), (8, 2), (18, 18), (6, 34)]
        .into_iter()
        .enumerate()
    {
        for pool in [false, true] {
            let s = Conv3x3 {
                h_out,
                w_out,
                pad: [1, 2],
                pool,
                ..shape(2, 5, 9, 17, 0, false)
            };
            check(s, 2, 200 + i as u64, 0.0, 6.0, None);
        }
    }
}

#[test]
fn nan_inputs_propagate() {
    for (i, pool) in [false, true].into_iter().enumerate() {
        for (j, (lo, hi)) in CLAMPS.into_iter().enumerate() {
            let s = shape(2, 5, 17, 19, 1, pool);
            let at = 37 * (3 * i + j) + 5;
            check(s, 2, 300 + (3 * i + j) as u64, lo, hi, Some(at));
        }
    }
}

#[test]
fn no_input_channels_give_the_clamped_bias() {
    for isa in isas() {
        let s = shape(0, 3, 4, 4, 1, true);
        let mut y = vec![f32::NAN; 3 * 4];
        let bias = [-1.0, 0.5, 9.0];
        conv3x3_direct_f32(isa, &s, 1, &[], &[], Some(&bias), 0.0, 6.0, &mut y).unwrap();
        let want: Vec<f32> = [0.0, 0.5, 6.0].iter().flat_map(|&v| [v; 4]).collect();
        assert_eq!(y, want, "{isa}");
    }
}

#[test]
fn out_dims_halve_when_pooling() {
    let s = shape(1, 1, 28, 28, 1, false);
    assert_eq!(s.out_dims(), (28, 28));
    assert_eq!(Conv3x3 { pool: true, ..s }.out_dims(), (14, 14));
}

#[test]
fn bad_arguments_are_errors_that_write_nothing() {
    let s = shape(2, 3, 4, 4, 1, true);
    let (x, w, bias) = (vec![0.0; 2 * 16], vec![0.0; 3 * 2 * 9], vec![0.0; 3]);
    let run = |isa: Isa, s: &Conv3x3, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]| {
        let result = conv3x3_direct_f32(isa, s, 1, x, w, Some(bias), 0.0, 6.0, y);
        assert!(y.iter().all(|v| v.is_nan()), "{isa} wrote before failing");
        result
    };
    for isa in isas() {
        let mut y = vec![f32::NAN; 3 * 4];
        let short = |r: Result<(), KernelError>| match r {
            Err(KernelError::TooShort { what, .. }) => what,
            other => panic!("{isa}: expected a short slice, got {other:?}"),
        };
        assert_eq!(short(run(isa, &s, &x[1..], &w, &bias, &mut y)), "x");
        assert_eq!(short(run(isa, &s, &x, &w[1..], &bias, &mut y)), "weights");
        assert_eq!(short(run(isa, &s, &x, &w, &bias, &mut y[1..])), "y");
        assert_eq!(short(run(isa, &s, &x, &w, &bias[1..], &mut y)), "bias");
        for (h_out, w_out) in [(3, 4), (4, 3), (1, 1)] {
            let odd = Conv3x3 { h_out, w_out, ..s };
            let mut y = vec![f32::NAN; 3 * 16];
            assert_eq!(
                run(isa, &odd, &x, &w, &bias, &mut y),
                Err(KernelError::PoolOfOddSize {
                    height: h_out,
                    width: w_out
                })
            );
        }
    }
    let mut y = vec![f32::NAN; 3 * 4];
    assert!(matches!(
        run(unavailable_isa(), &s, &x, &w, &bias, &mut y),
        Err(KernelError::IsaUnavailable { .. })
    ));
}
