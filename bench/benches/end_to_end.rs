//! One classification of the shipped Fashion-MNIST student, end to end (logits for one
//! input): the compiled file at every kernel level this CPU has, against the ONNX file
//! through tract, in the same process.
//!
//!     cargo bench -p student-bench --bench end_to_end

use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use student_runtime::{Isa, OpenOptions, StudentModel, compile_onnx};

fn models() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/fashion-mnist"
    ))
}

fn end_to_end(c: &mut Criterion) {
    for (name, batch) in [
        ("student.onnx", 1),
        ("student-int8.onnx", 1),
        ("student-fp16.onnx", 1),
        ("student-int8.onnx", 32),
    ] {
        let bytes = std::fs::read(models().join(name)).expect("shipped model");
        let compiled = compile_onnx(&bytes, name).expect("compiles").bytes;
        let onnx = StudentModel::from_bytes_named(&bytes, name, &OpenOptions::with_batch(batch))
            .expect("opens");
        let input: Vec<f32> = (0..onnx.input_spec().len() * batch)
            .map(|i| (i % 255) as f32 / 255.0)
            .collect();
        let mut group = c.benchmark_group(format!("{name} batch {batch}"));
        group.bench_function(BenchmarkId::new("tract", "onnx"), |b| {
            b.iter(|| onnx.logits_batch(&input).expect("runs"))
        });
        for isa in Isa::available() {
            let options = OpenOptions {
                batch,
                kernels: Some(isa),
                ..OpenOptions::default()
            };
            let model = StudentModel::from_bytes_named(&compiled, name, &options).expect("opens");
            group.bench_function(BenchmarkId::new("compiled", isa.name()), |b| {
                b.iter(|| model.logits_batch(&input).expect("runs"))
            });
        }
        group.finish();
    }
}

fn cold_start(c: &mut Criterion) {
    let bytes = std::fs::read(models().join("student-int8.onnx")).expect("shipped model");
    let compiled = compile_onnx(&bytes, "student-int8.onnx")
        .expect("compiles")
        .bytes;
    let dir = std::env::temp_dir().join(format!("student-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("student-int8.student");
    std::fs::write(&path, &compiled).expect("writes");
    let input = vec![0.5f32; 784];
    let mut group = c.benchmark_group("open to first result");
    group.bench_function("compiled int8", |b| {
        b.iter(|| {
            StudentModel::open(&path)
                .expect("opens")
                .logits(&input)
                .expect("runs")
        })
    });
    group.bench_function("onnx int8 through tract", |b| {
        b.iter(|| {
            StudentModel::open(models().join("student-int8.onnx"))
                .expect("opens")
                .logits(&input)
                .expect("runs")
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, end_to_end, cold_start);
criterion_main!(benches);
