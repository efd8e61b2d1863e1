//! Helpers shared by the kernel test suites.
#![allow(dead_code)]

use std::sync::Once;

use student_kernels::{Conv3x3, Isa};

/// Every level this machine runs, announced once per test binary.
pub fn isas() -> Vec<Isa> {
    static ANNOUNCE: Once = Once::new();
    let isas = Isa::available();
    ANNOUNCE.call_once(|| {
        let names: Vec<_> = isas.iter().map(|isa| isa.name()).collect();
        eprintln!("student-kernels: testing ISAs {}", names.join(", "));
    });
    isas
}

/// A level this CPU cannot run (there is always one: no CPU is both x86 and arm).
pub fn unavailable_isa() -> Isa {
    Isa::ALL
        .into_iter()
        .find(|isa| !isa.is_available())
        .expect("some level is unavailable")
}

/// The sizes every kernel is checked at.
pub const SIZES: [usize; 14] = [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 33, 64, 100];

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn f32s(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.f32()).collect()
    }

    pub fn u8s(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next() >> 56) as u8).collect()
    }

    pub fn i8s(&mut self, len: usize) -> Vec<i8> {
        (0..len).map(|_| (self.next() >> 56) as u8 as i8).collect()
    }

    pub fn i32s(&mut self, len: usize, bound: i32) -> Vec<i32> {
        (0..len)
            .map(|_| (self.next() % (2 * bound as u64 + 1)) as i32 - bound)
            .collect()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The float tolerance of the GEMMs: 1e-5 relative plus 1e-5 per term of the sum (for
/// terms of magnitude up to 1), because fused multiply-adds round differently.
pub fn assert_close(got: &[f32], want: &[f32], k: usize, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tolerance = 1e-5 * w.abs() + 1e-5 * k.max(1) as f32;
        let same = (g.is_nan() && w.is_nan()) || (g - w).abs() <= tolerance;
        assert!(
            same,
            "{what}: element {i}: got {g}, want {w} (tolerance {tolerance})"
        );
    }
}

/// Asserts float slices equal element by element (NaN equals NaN, and 0 equals -0).
pub fn assert_same_f32(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w || (g.is_nan() && w.is_nan()),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

/// The 3x3 convolution of `s` (unpooled) in f64, per output: `(sum of the taps inside the
/// image, sum of their absolute values)`, the second to scale a tolerance. `w` is the
/// ONNX weight tensor `[c_out, c_in, 3, 3]`; outputs in NCHW order.
pub fn conv3x3_sums(s: &Conv3x3, batch: usize, x: &[f32], w: &[f32]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(batch * s.c_out * s.h_out * s.w_out);
    for n in 0..batch {
        for co in 0..s.c_out {
            for oy in 0..s.h_out {
                for ox in 0..s.w_out {
                    let (mut acc, mut scale) = (0.0f64, 0.0f64);
                    for ci in 0..s.c_in {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let iy = (oy + ky).checked_sub(s.pad[0]).filter(|&r| r < s.h_in);
                                let ix = (ox + kx).checked_sub(s.pad[1]).filter(|&c| c < s.w_in);
                                let (Some(iy), Some(ix)) = (iy, ix) else {
                                    continue;
                                };
                                let xv = x[((n * s.c_in + ci) * s.h_in + iy) * s.w_in + ix];
                                let wv = w[((co * s.c_in + ci) * 3 + ky) * 3 + kx];
                                acc += xv as f64 * wv as f64;
                                scale += (xv as f64 * wv as f64).abs();
                            }
                        }
                    }
                    out.push((acc, scale));
                }
            }
        }
    }
    out
}
