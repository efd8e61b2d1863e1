//! Every kernel at every level this CPU runs, against the scalar `reference`, on the
//! shapes of small student models. Throughput is in operations per second (a GEMM
//! counts 2·m·n·k: one multiply and one add per term), so ratios read directly.
//!
//!   cargo bench -p student-kernels -- --warm-up-time 1 --measurement-time 2

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::f16;
use student_kernels::{
    Bias, IntBias, Isa, Scale, dequantize_u8, hgemm, pack_b_f16, pack_b_f32, pack_b_s8, pack_b_u8,
    pack_b_u8_strided, packed_len_f32, packed_len_q8, qgemm_s8u8, qgemm_u8s8, quantize_u8,
    reference, requantize_u8, sgemm,
};

/// (m, n, k): a 3x3 conv as im2col (16 channels x 8·9 taps x 14·14 positions), a stem
/// conv (8 x 9 x 28·28), dense layers at batch 1 and 32, and a classifier head.
const SHAPES: [(usize, usize, usize); 5] = [
    (16, 196, 72),
    (8, 784, 9),
    (1, 64, 3136),
    (32, 64, 3136),
    (1, 10, 64),
];

fn values(len: usize, seed: u32) -> impl Iterator<Item = u32> {
    (0..len as u32).map(move |i| i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8)
}

fn floats(len: usize, seed: u32) -> Vec<f32> {
    values(len, seed)
        .map(|x| (x % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}

fn bytes(len: usize, seed: u32) -> Vec<u8> {
    values(len, seed).map(|x| x as u8).collect()
}

fn float_gemms(c: &mut Criterion) {
    for (m, n, k) in SHAPES {
        let a = floats(m * k, 1);
        let b = floats(k * n, 2);
        let b16: Vec<f16> = b.iter().map(|&x| f16::from_f32(x)).collect();
        let bias = floats(m, 3);
        let mut bp = vec![0.0; packed_len_f32(k, n)];
        pack_b_f32(&b, k, n, &mut bp).unwrap();
        let mut bp16 = vec![f16::ZERO; packed_len_f32(k, n)];
        pack_b_f16(&b16, k, n, &mut bp16).unwrap();
        let mut out = vec![0.0; m * n];
        let bias = Bias::PerRow(&bias);

        for half in [false, true] {
            let name = if half { "hgemm" } else { "sgemm" };
            let mut group = c.benchmark_group(format!("{name}/{m}x{k}x{n}"));
            group.throughput(Throughput::Elements((2 * m * n * k) as u64));
            group.bench_function("reference", |bench| {
                bench.iter(|| {
                    if half {
                        reference::hgemm(m, n, k, &a, k, &b16, n, bias, 0.0, 6.0, &mut out, n);
                    } else {
                        reference::sgemm(m, n, k, &a, k, &b, n, bias, 0.0, 6.0, &mut out, n);
                    }
                    black_box(&out);
                })
            });
            for isa in Isa::available() {
                group.bench_function(BenchmarkId::from_parameter(isa), |bench| {
                    bench.iter(|| {
                        if half {
                            hgemm(isa, m, n, k, &a, k, &bp16, bias, 0.0, 6.0, &mut out, n)
                        } else {
                            sgemm(isa, m, n, k, &a, k, &bp, bias, 0.0, 6.0, &mut out, n)
                        }
                        .unwrap();
                        black_box(&out);
                    })
                });
            }
            group.finish();
        }
    }
}

fn int_gemms(c: &mut Criterion) {
    for (m, n, k) in SHAPES {
        let au = bytes(m * k, 4);
        let bs: Vec<i8> = bytes(k * n, 5).into_iter().map(|x| x as i8).collect();
        let colsum = reference::col_sums_s8(&bs, k, n, n);
        let mut bps = vec![0; packed_len_q8(k, n)];
        pack_b_s8(&bs, k, n, &mut bps).unwrap();
        let as_: Vec<i8> = au.iter().map(|&x| x as i8).collect();
        let bu: Vec<u8> = bs.iter().map(|&x| x as u8).collect();
        let rowsum = reference::row_sums_s8(&as_, m, k, k);
        let mut bpu = vec![0; packed_len_q8(k, n)];
        pack_b_u8(&bu, k, n, &mut bpu).unwrap();
        let mut out = vec![0; m * n];

        for name in ["qgemm_u8s8", "qgemm_s8u8"] {
            let u8s8 = name == "qgemm_u8s8";
            let mut group = c.benchmark_group(format!("{name}/{m}x{k}x{n}"));
            group.throughput(Throughput::Elements((2 * m * n * k) as u64));
            group.bench_function("reference", |bench| {
                bench.iter(|| {
                    if u8s8 {
                        reference::qgemm_u8s8(m, n, k, &au, k, &bs, n, &mut out, n);
                    } else {
                        reference::qgemm_s8u8(m, n, k, &as_, k, &bu, n, &mut out, n);
                    }
                    black_box(&out);
                })
            });
            for isa in Isa::available() {
                group.bench_function(BenchmarkId::from_parameter(isa), |bench| {
                    bench.iter(|| {
                        if u8s8 {
                            qgemm_u8s8(isa, m, n, k, &au, k, &bps, &colsum, &mut out, n)
                        } else {
                            qgemm_s8u8(isa, m, n, k, &as_, k, &bpu, &rowsum, &mut out, n)
                        }
                        .unwrap();
                        black_box(&out);
                    })
                });
            }
            group.finish();
        }
    }
}

/// The steps around an int8 conv of 16 channels x 196 positions (72 taps): packing its
/// im2col columns, requantizing its sums, and quantizing / dequantizing its activations.
fn quantization(c: &mut Criterion) {
    let (m, n, k) = (16, 196, 72);
    let im2col = bytes(k * (n + 4), 6);
    let acc: Vec<i32> = values(m * n, 7)
        .map(|x| (x % 200_000) as i32 - 100_000)
        .collect();
    let bias: Vec<i32> = values(m, 8).map(|x| (x % 1000) as i32).collect();
    let scale = floats(m, 9)
        .into_iter()
        .map(|x| (x + 2.0) * 1e-3)
        .collect::<Vec<_>>();
    let x = floats(m * n, 10);
    let q = bytes(m * n, 11);
    let mut packed = vec![0; packed_len_q8(k, n)];
    let mut out_u8 = vec![0; m * n];
    let mut out_f32 = vec![0.0; m * n];

    let mut group = c.benchmark_group("pack_b_u8_strided/72x196");
    group.throughput(Throughput::Elements((k * n) as u64));
    group.bench_function("portable", |bench| {
        bench.iter(|| pack_b_u8_strided(&im2col, k, n, n + 4, &mut packed).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("requantize_u8/16x196");
    group.throughput(Throughput::Elements((m * n) as u64));
    let (bias, scale) = (IntBias::PerRow(&bias), Scale::PerRow(&scale));
    group.bench_function("reference", |bench| {
        bench.iter(|| {
            reference::requantize_u8(m, n, &acc, n, bias, scale, 3, 3, 255, &mut out_u8, n)
        })
    });
    for isa in Isa::available() {
        group.bench_function(BenchmarkId::from_parameter(isa), |bench| {
            bench.iter(|| {
                requantize_u8(isa, m, n, &acc, n, bias, scale, 3, 3, 255, &mut out_u8, n).unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("quantize_u8/3136");
    group.throughput(Throughput::Elements((m * n) as u64));
    group.bench_function("reference", |bench| {
        bench.iter(|| reference::quantize_u8(&x, 0.02, 128, &mut out_u8))
    });
    for isa in Isa::available() {
        group.bench_function(BenchmarkId::from_parameter(isa), |bench| {
            bench.iter(|| quantize_u8(isa, &x, 0.02, 128, &mut out_u8).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("dequantize_u8/3136");
    group.throughput(Throughput::Elements((m * n) as u64));
    group.bench_function("reference", |bench| {
        bench.iter(|| reference::dequantize_u8(&q, 0.02, 128, &mut out_f32))
    });
    for isa in Isa::available() {
        group.bench_function(BenchmarkId::from_parameter(isa), |bench| {
            bench.iter(|| dequantize_u8(isa, &q, 0.02, 128, &mut out_f32).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, float_gemms, int_gemms, quantization);
criterion_main!(benches);
