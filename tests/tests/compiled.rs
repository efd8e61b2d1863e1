//! Compiled students (`.student`): each shipped model compiled and run by the runtime's own
//! kernels at every kernel level this CPU has, against the same ONNX file run through
//! tract on Fashion-MNIST test images; and compiled files that are damaged on disk.
//! (onnxruntime is the reference in `tests/ort_crosscheck.py`.)

mod common;

use common::{models_dir, scratch};
use student_distill::Dataset;
use student_runtime::{Error, Isa, OpenOptions, StudentModel, compile_onnx};

/// Test images compared per model and kernel level.
const IMAGES: usize = 500;

fn compile(name: &str) -> Vec<u8> {
    let path = models_dir().join(name);
    let bytes = std::fs::read(&path).unwrap();
    compile_onnx(&bytes, name).unwrap().bytes
}

fn images(model: &StudentModel) -> Vec<f32> {
    let test = Dataset::from_name("fashion-mnist:test").unwrap();
    let indices: Vec<usize> = (0..IMAGES).collect();
    test.tensor(model.input_spec(), &indices).unwrap()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// Runs `name` compiled at every kernel level and through tract; returns the largest
/// logit difference, relative to the largest logit, and the share of images whose class
/// agrees, for the worst level.
fn compare(name: &str, batch: usize) -> (f32, f64) {
    let onnx =
        StudentModel::open_with(models_dir().join(name), &OpenOptions::with_batch(batch)).unwrap();
    let input = images(&onnx);
    let expected = onnx.logits_batch(&input).unwrap();
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let bytes = compile(name);
    let classes = onnx.classes();
    let (mut worst_diff, mut worst_agree) = (0.0f32, 1.0f64);
    let mut reference: Option<Vec<f32>> = None;
    for isa in Isa::available() {
        let options = OpenOptions {
            batch,
            kernels: Some(isa),
            ..OpenOptions::default()
        };
        let compiled = StudentModel::from_bytes_named(&bytes, name, &options).unwrap();
        assert_eq!(compiled.kernels(), isa.name());
        assert_eq!(
            compiled.card(),
            onnx.card(),
            "{name}: the card survives compiling"
        );
        let got = compiled.logits_batch(&input).unwrap();
        let diff = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
            / scale;
        let agree = got
            .chunks(classes)
            .zip(expected.chunks(classes))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count() as f64
            / IMAGES as f64;
        eprintln!(
            "{name} batch {batch} {}: max |diff| / max |logit| = {diff:.2e}, same class {agree:.4}",
            isa.name()
        );
        worst_diff = worst_diff.max(diff);
        worst_agree = worst_agree.min(agree);
        // Batch-1 calls give the same logits as batched ones.
        let single: Vec<f32> = input
            .chunks(input.len() / IMAGES)
            .take(8)
            .flat_map(|x| compiled.logits(x).unwrap())
            .collect();
        for (a, b) in single.iter().zip(&got) {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{name} {}: batch 1 {a} vs batched {b}",
                isa.name()
            );
        }
        // Every level computes the same function: integer paths exactly, float paths to
        // rounding.
        match &reference {
            None => reference = Some(got),
            Some(r) => {
                let d = r
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    d <= 1e-5 * scale,
                    "{name}: {} differs from portable by {d}",
                    isa.name()
                );
            }
        }
    }
    (worst_diff, worst_agree)
}

#[test]
fn compiled_fp32_models_match_tract() {
    for name in ["student.onnx", "teacher.onnx", "baseline.onnx"] {
        let (diff, agree) = compare(name, 32);
        // f32 with a different summation order: a few ulps of the largest logit.
        assert!(diff <= 1e-5, "{name}: relative difference {diff}");
        assert_eq!(agree, 1.0, "{name}");
    }
}

#[test]
fn compiled_fp16_model_matches_tract() {
    // Both widen the fp16 weights and compute in f32.
    let (diff, agree) = compare("student-fp16.onnx", 7);
    assert!(diff <= 1e-5, "relative difference {diff}");
    assert_eq!(agree, 1.0);
}

#[test]
fn compiled_int8_model_matches_tract_within_rounding() {
    // tract simulates the QDQ graph in f32; the compiled file accumulates exactly in i32
    // and rounds once per requantization, so an activation may land one quantum apart.
    let (diff, agree) = compare("student-int8.onnx", 32);
    assert!(diff <= 0.01, "relative difference {diff}");
    assert!(agree >= 0.99, "same class on {agree}");
}

#[test]
fn compiled_file_opens_from_disk_and_keeps_the_ops() {
    let dir = scratch("compiled-open");
    let path = dir.join("student-int8.student");
    std::fs::write(&path, compile("student-int8.onnx")).unwrap();
    let model = StudentModel::open(&path).unwrap();
    let ops = model.compiled_ops();
    let count = |op: &str| ops.iter().find(|(o, _)| o == op).map_or(0, |(_, n)| *n);
    assert_eq!(count("conv-int8+max-pool"), 2, "{ops:?}");
    assert_eq!(count("dense-int8"), 2, "{ops:?}");
    assert_eq!(count("conv-f32") + count("dense-f32"), 0, "{ops:?}");
    let onnx = StudentModel::open(models_dir().join("student-int8.onnx")).unwrap();
    assert_eq!(model.params(), onnx.params());
    assert_eq!(model.classes(), 10);
}

#[test]
fn int8_convolutions_take_in_their_max_pools_only_when_every_scale_is_positive() {
    use prost::Message;
    let bytes = std::fs::read(models_dir().join("student-int8.onnx")).unwrap();
    let mut proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    // The same model with output channel 0 of each convolution negated twice over: its
    // int8 weights and its weight scale. The real weights are unchanged, and so are the
    // requantized outputs (every sum and bias changes sign, then the scale does), bit for
    // bit, but pooling the sums before requantizing would take the wrong window maximum.
    let graph = proto.graph.as_mut().unwrap();
    for conv in ["conv0", "conv1"] {
        let find = |g: &mut tract_onnx::pb::GraphProto, name: &str| {
            let i = g.initializer.iter().position(|t| t.name == name).unwrap();
            std::mem::take(&mut g.initializer[i].raw_data)
        };
        let put = |g: &mut tract_onnx::pb::GraphProto, name: &str, raw: Vec<u8>| {
            let t = g.initializer.iter_mut().find(|t| t.name == name).unwrap();
            t.raw_data = raw;
        };
        let scale_name = format!("{conv}.weight_scale");
        let weight_name = format!("{conv}.weight_quantized");
        let mut scale = find(graph, &scale_name);
        let first = -f32::from_le_bytes(scale[..4].try_into().unwrap());
        scale[..4].copy_from_slice(&first.to_le_bytes());
        put(graph, &scale_name, scale);
        let mut weights = find(graph, &weight_name);
        let per_channel = weights.len() / scale_len(graph, &scale_name);
        for w in &mut weights[..per_channel] {
            let v = *w as i8;
            assert_ne!(v, i8::MIN, "symmetric weights negate exactly");
            *w = (-v) as u8;
        }
        put(graph, &weight_name, weights);
    }
    let negated = proto.encode_to_vec();

    let fused = compile("student-int8.onnx");
    let apart = compile_onnx(&negated, "negated.onnx").unwrap().bytes;
    let onnx = StudentModel::open_with(
        models_dir().join("student-int8.onnx"),
        &OpenOptions::with_batch(4),
    )
    .unwrap();
    let input: Vec<f32> = images(&onnx)[..100 * 784].to_vec();
    for isa in Isa::available() {
        let options = OpenOptions {
            batch: 4,
            kernels: Some(isa),
            ..OpenOptions::default()
        };
        let run = |bytes: &[u8], fused: bool| {
            let model = StudentModel::from_bytes_named(bytes, "int8.student", &options).unwrap();
            let ops = model.compiled_ops();
            let count = |op: &str| ops.iter().find(|(o, _)| o == op).map_or(0, |(_, n)| *n);
            let want = if fused { [2, 0, 0] } else { [0, 2, 2] };
            let got = [
                count("conv-int8+max-pool"),
                count("conv-int8"),
                count("max-pool"),
            ];
            assert_eq!(got, want, "fused {fused}: {ops:?}");
            model.logits_batch(&input).unwrap()
        };
        let (a, b) = (run(&fused, true), run(&apart, false));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "{}", isa.name());
    }
}

/// The shipped model `file` with value `index` of its f32 initializer `name` set to
/// `value`, encoded again.
fn shipped_with_value(file: &str, name: &str, index: usize, value: f32) -> Vec<u8> {
    use prost::Message;
    let bytes = std::fs::read(models_dir().join(file)).unwrap();
    let mut proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let t = graph
        .initializer
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{file} has no initializer `{name}`"));
    if t.raw_data.is_empty() {
        t.float_data[index] = value;
    } else {
        t.raw_data[4 * index..4 * index + 4].copy_from_slice(&value.to_le_bytes());
    }
    proto.encode_to_vec()
}

#[test]
fn a_nan_weight_is_a_compile_error_naming_the_weights() {
    // A NaN weight in the ONNX graph: tract runs it to NaN logits; the compiled file
    // would be refused at open, so the compiler refuses it, naming the weights.
    let bytes = shipped_with_value("student.onnx", "conv1.weight", 0, f32::NAN);
    let err = compile_onnx(&bytes, "nan.onnx").unwrap_err();
    assert!(
        matches!(&err, Error::Compile { reason, .. }
            if reason.contains("the weights `conv1.weight` hold NaN, not a finite number")),
        "{err}"
    );
}

#[test]
fn a_bias_on_an_int8_channel_of_weight_scale_0_is_refused() {
    // The bias is added to the int32 accumulator in steps of input scale x weight scale.
    // With a weight scale of 0 no step count holds it: the compiler clamped it, and with a
    // raised tolerance wrote a file that answered 2 of 32 images otherwise than onnxruntime.
    let bytes = shipped_with_value("student-int8.onnx", "conv1.weight_scale", 3, 0.0);
    let err = compile_onnx(&bytes, "zero-scale.onnx").unwrap_err();
    assert!(
        matches!(&err, Error::Compile { reason, .. }
            if reason.contains("of output channel 3 is beyond what the int8 layer carries")
                && reason.contains("x weight scale 0")),
        "{err}"
    );
}

/// The number of values in initializer `name` of f32 data.
fn scale_len(graph: &tract_onnx::pb::GraphProto, name: &str) -> usize {
    let t = graph.initializer.iter().find(|t| t.name == name).unwrap();
    t.dims.iter().product::<i64>() as usize
}

#[test]
fn damaged_compiled_files_are_refused_with_a_reason() {
    let good = compile("student.onnx");
    let dir = scratch("compiled-damage");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "empty"),
        (
            "header only",
            good[..100].to_vec(),
            "shorter than the 128-byte header",
        ),
        ("truncated", good[..good.len() - 1].to_vec(), "truncated"),
        (
            "extended",
            [good.clone(), vec![0]].concat(),
            "truncated or extended",
        ),
        (
            "flipped weight byte",
            flip(&good, good.len() - 3),
            "checksum",
        ),
        ("flipped manifest byte", flip(&good, 140), "checksum"),
        (
            "wrong version",
            patch(&good, 8, &7u32.to_le_bytes()),
            "format version 7",
        ),
    ];
    for (what, bytes, expected) in cases {
        let path = dir.join(format!("{}.student", what.replace(' ', "-")));
        std::fs::write(&path, &bytes).unwrap();
        let err = StudentModel::open(&path).expect_err(what);
        let text = err.to_string();
        assert!(
            matches!(err, Error::NotCompiled { .. } | Error::NotOnnx { .. }),
            "{what}: {err:?}"
        );
        assert!(
            text.contains(expected),
            "{what}: `{text}` lacks `{expected}`"
        );
    }
}

#[test]
fn unsupported_operator_is_a_compile_error_naming_the_node() {
    use prost::Message;
    let bytes = std::fs::read(models_dir().join("student.onnx")).unwrap();
    let mut proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let relu = graph.node.iter_mut().find(|n| n.op_type == "Relu").unwrap();
    relu.op_type = "Selu".to_string();
    relu.name = "odd_activation".to_string();
    let err = compile_onnx(&proto.encode_to_vec(), "edited.onnx").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Compile { .. }), "{err:?}");
    assert!(text.contains("Selu `odd_activation`"), "{text}");
    assert!(text.contains("not supported"), "{text}");
}

#[test]
fn a_window_with_both_auto_pad_and_pads_is_refused() {
    // onnxruntime refuses such a node and tract took the pads: the runtime refuses it
    // when it opens or compiles the file.
    use prost::Message;
    let bytes = std::fs::read(models_dir().join("student.onnx")).unwrap();
    let mut proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let conv = graph.node.iter_mut().find(|n| n.op_type == "Conv").unwrap();
    assert!(conv.attribute.iter().any(|a| a.name == "pads"));
    conv.attribute.push(tract_onnx::pb::AttributeProto {
        name: "auto_pad".to_string(),
        s: b"VALID".to_vec(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::String as i32,
        ..Default::default()
    });
    let edited = proto.encode_to_vec();
    let open = StudentModel::from_bytes_named(&edited, "edited.onnx", &OpenOptions::default())
        .unwrap_err();
    let compiled = compile_onnx(&edited, "edited.onnx").unwrap_err();
    for err in [open, compiled] {
        assert!(
            matches!(err, Error::Malformed { .. })
                && err.to_string().contains("both auto_pad and pads"),
            "{err}"
        );
    }
}

#[test]
fn a_2x2_max_pool_fuses_into_the_convolution_before_it_and_others_do_not() {
    use prost::Message;
    let bytes = std::fs::read(models_dir().join("teacher.onnx")).unwrap();
    let base = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let ints = |name: &str, ints: Vec<i64>| tract_onnx::pb::AttributeProto {
        name: name.to_string(),
        ints,
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Ints as i32,
        ..Default::default()
    };
    // Each edit of both MaxPool nodes keeps their output sizes (28 -> 14, 14 -> 7).
    type Edit = Box<dyn Fn(&mut tract_onnx::pb::NodeProto)>;
    let cases: Vec<(&str, Edit, bool)> = vec![
        ("as shipped", Box::new(|_| {}), true),
        (
            "ceil mode and end padding, which change nothing on even sizes",
            Box::new(move |n| {
                n.attribute.retain(|a| a.name != "pads");
                n.attribute.push(ints("pads", vec![0, 0, 1, 1]));
                n.attribute.push(tract_onnx::pb::AttributeProto {
                    name: "ceil_mode".to_string(),
                    i: 1,
                    r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
                    ..Default::default()
                });
            }),
            true,
        ),
        (
            "3x3 windows",
            Box::new(move |n| {
                n.attribute
                    .retain(|a| a.name != "pads" && a.name != "kernel_shape");
                n.attribute.push(ints("kernel_shape", vec![3, 3]));
                n.attribute.push(ints("pads", vec![1, 1, 1, 1]));
            }),
            false,
        ),
    ];
    let onnx_options = OpenOptions::with_batch(4);
    for (what, edit, fused) in cases {
        let mut proto = base.clone();
        let graph = proto.graph.as_mut().unwrap();
        graph
            .node
            .iter_mut()
            .filter(|n| n.op_type == "MaxPool")
            .for_each(|n| edit(n));
        let onnx_bytes = proto.encode_to_vec();
        let compiled = compile_onnx(&onnx_bytes, "edited.onnx").unwrap().bytes;
        let onnx =
            StudentModel::from_bytes_named(&onnx_bytes, "edited.onnx", &onnx_options).unwrap();
        let input: Vec<f32> = images(&onnx)[..4 * 784].to_vec();
        let want = onnx.logits_batch(&input).unwrap();
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for isa in Isa::available() {
            let options = OpenOptions {
                batch: 4,
                kernels: Some(isa),
                ..OpenOptions::default()
            };
            let model =
                StudentModel::from_bytes_named(&compiled, "edited.student", &options).unwrap();
            let ops = model.compiled_ops();
            let count = |op: &str| ops.iter().find(|(o, _)| o == op).map_or(0, |(_, n)| *n);
            let pooled = count("conv-f32+max-pool") + count("conv-winograd-f32+max-pool");
            assert_eq!(pooled, if fused { 2 } else { 0 }, "{what}: {ops:?}");
            assert_eq!(
                count("max-pool"),
                if fused { 0 } else { 2 },
                "{what}: {ops:?}"
            );
            let got = model.logits_batch(&input).unwrap();
            let diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff <= 1e-5 * scale,
                "{what} at {}: differs by {diff}",
                isa.name()
            );
        }
    }
}

#[test]
fn malformed_nodes_are_compile_errors_not_panics() {
    use prost::Message;
    let bytes = std::fs::read(models_dir().join("student-int8.onnx")).unwrap();
    let base = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let edits: Vec<(&str, Box<dyn Fn(&mut tract_onnx::pb::NodeProto)>)> = vec![
        ("a conv without inputs", Box::new(|n| n.input.clear())),
        ("a conv without outputs", Box::new(|n| n.output.clear())),
        (
            "a conv with a 1-D kernel",
            Box::new(|n| {
                n.attribute.retain(|a| a.name != "kernel_shape");
                n.attribute.push(tract_onnx::pb::AttributeProto {
                    name: "kernel_shape".to_string(),
                    ints: vec![3],
                    ..Default::default()
                });
            }),
        ),
        (
            "a conv with negative padding",
            Box::new(|n| {
                n.attribute.retain(|a| a.name != "pads");
                n.attribute.push(tract_onnx::pb::AttributeProto {
                    name: "pads".to_string(),
                    ints: vec![-1, -1, -1, -1],
                    ..Default::default()
                });
            }),
        ),
    ];
    for (what, edit) in edits {
        let mut proto = base.clone();
        let graph = proto.graph.as_mut().unwrap();
        edit(graph.node.iter_mut().find(|n| n.op_type == "Conv").unwrap());
        let err = compile_onnx(&proto.encode_to_vec(), "edited.onnx").expect_err(what);
        // The ONNX checks before compiling refuse some (negative padding) as malformed.
        assert!(
            matches!(
                err,
                Error::Compile { .. } | Error::Unsupported { .. } | Error::Malformed { .. }
            ),
            "{what}: {err:?}"
        );
        assert!(!err.to_string().contains('\n'), "{what}: {err}");
    }
}

#[test]
fn one_compiled_model_serves_many_threads_with_identical_results() {
    let bytes = compile("student-int8.onnx");
    let model = StudentModel::from_bytes(&bytes, &OpenOptions::with_batch(4)).unwrap();
    let input = images(&model);
    let per = model.input_spec().len();
    let expected: Vec<Vec<f32>> = input
        .chunks(per)
        .take(64)
        .map(|x| model.logits(x).unwrap())
        .collect();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (model, input, expected) = (&model, &input, &expected);
            s.spawn(move || {
                for round in 0..20 {
                    let i = (t * 7 + round * 3) % 64;
                    assert_eq!(
                        model.logits(&input[i * per..(i + 1) * per]).unwrap(),
                        expected[i]
                    );
                    let batch = model.logits_batch(&input[..8 * per]).unwrap();
                    assert_eq!(&batch[..10], &expected[0][..]);
                }
            });
        }
    });
}

#[test]
fn a_consistent_checksum_does_not_make_an_inconsistent_plan_acceptable() {
    // Edits that keep the manifest's length, with the checksum recomputed: what a tool
    // (or an attacker) rewriting the file would produce. Each must be refused at open.
    let good = compile("student-int8.onnx");
    let cases = [
        ("\"stride\":[1,1]", "\"stride\":[9,9]", "does not follow"),
        ("\"pad\":[1,1]", "\"pad\":[9,9]", "does not follow"),
        ("\"h_out\":28", "\"h_out\":99", "does not follow"),
        ("\"dtype\":\"i8\"", "\"dtype\":\"u8\"", "expected"),
    ];
    for (from, to, expected) in cases {
        let bytes = resealed(&good, from, to);
        let err = StudentModel::from_bytes_named(&bytes, "edited.student", &OpenOptions::default())
            .expect_err(to);
        assert!(matches!(err, Error::NotCompiled { .. }), "{to}: {err:?}");
        assert!(err.to_string().contains(expected), "{to}: {err}");
    }
}

#[test]
fn unknown_fields_in_ops_and_windows_are_refused() {
    // A field this runtime does not know may change what an op computes (a fused pool
    // did): ignoring it could answer wrongly without a word.
    let good = compile("student.onnx");
    for (from, to) in [("\"pool\":true", "\"poox\":true"), ("\"kh\":3", "\"kq\":3")] {
        let bytes = resealed(&good, from, to);
        let err = StudentModel::from_bytes_named(&bytes, "edited.student", &OpenOptions::default())
            .expect_err(to);
        assert!(matches!(err, Error::NotCompiled { .. }), "{to}: {err:?}");
        let field = &to[1..to[1..].find('"').unwrap() + 1];
        assert!(
            err.to_string()
                .contains(&format!("unknown field `{field}`")),
            "{to}: {err}"
        );
    }
    // The same at the top of the manifest, in a value and in a blob, and inside an op's
    // own objects (an int8 op's output, here).
    let int8 = compile("student-int8.onnx");
    let manifest = manifest_of(&int8);
    let q = manifest["ops"]
        .as_array()
        .unwrap()
        .iter()
        .position(|op| op["out"]["u8"].is_object())
        .expect("an int8 op with a u8 output")
        .to_string();
    let inner = ["ops", q.as_str(), "out", "u8"];
    for path in [
        &[][..],
        &["values", "0"][..],
        &["blobs", "0"][..],
        &inner[..],
    ] {
        let mut edited = manifest.clone();
        let mut at = &mut edited;
        for key in path {
            at = match key.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*key],
            };
        }
        at["future"] = serde_json::json!(1);
        refused_with_manifest(&int8, &edited, "unknown field `future`", &path);
    }
}

/// Asserts that `bytes` with `manifest` in place of its own is refused at open as not a
/// valid compiled student, for a reason containing `expected`.
fn refused_with_manifest(
    bytes: &[u8],
    manifest: &serde_json::Value,
    expected: &str,
    case: &dyn std::fmt::Debug,
) {
    let text = serde_json::to_string(manifest).unwrap();
    let err = StudentModel::from_bytes(&with_manifest(bytes, &text), &OpenOptions::default())
        .expect_err(expected);
    assert!(
        matches!(err, Error::NotCompiled { .. }) && err.to_string().contains(expected),
        "{case:?}: {err}"
    );
}

#[test]
fn a_fused_int8_pool_with_a_scale_that_is_not_positive_is_refused() {
    // The compiler fuses only when every scale is positive; a file edited afterwards
    // would pool before requantizing where that no longer commutes.
    let good = compile("student-int8.onnx");
    let manifest = manifest_of(&good);
    let data_at = u64::from_le_bytes(good[40..48].try_into().unwrap()) as usize;
    let op = manifest["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["op"] == "q_conv" && op["pool"] == true)
        .expect("a fused int8 convolution");
    let blob = &manifest["blobs"][op["scale"].as_u64().unwrap() as usize];
    let at = data_at + blob["offset"].as_u64().unwrap() as usize;
    for bad in [-0.5f32, 0.0, f32::NAN, f32::INFINITY] {
        let mut bytes = good.clone();
        bytes[at..at + 4].copy_from_slice(&bad.to_le_bytes());
        let bytes = sealed(bytes);
        let err = StudentModel::from_bytes_named(&bytes, "edited.student", &OpenOptions::default())
            .expect_err("a scale that is not positive");
        assert!(
            matches!(err, Error::NotCompiled { .. }) && err.to_string().contains("not a positive"),
            "{bad}: {err}"
        );
    }
    StudentModel::from_bytes_named(&sealed(good), "good.student", &OpenOptions::default()).unwrap();
}

#[test]
fn an_int8_scale_that_is_not_finite_is_refused() {
    // A NaN scale requantizes to bytes like any other: a wrong answer, not an error.
    let good = compile("student-int8.onnx");
    let manifest = manifest_of(&good);
    let data_at = u64::from_le_bytes(good[40..48].try_into().unwrap()) as usize;
    let mut tried = 0;
    for op in manifest["ops"].as_array().unwrap() {
        let what = match op["op"].as_str() {
            Some("q_conv") => "convolution",
            Some("q_dense") => "dense layer",
            _ => continue,
        };
        let blob = &manifest["blobs"][op["scale"].as_u64().unwrap() as usize];
        let at = data_at + blob["offset"].as_u64().unwrap() as usize;
        // The last channel's scale, so that a check of the first alone would pass.
        let last = at + blob["len"].as_u64().unwrap() as usize - 4;
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut bytes = good.clone();
            bytes[last..last + 4].copy_from_slice(&bad.to_le_bytes());
            let err = StudentModel::from_bytes(&sealed(bytes), &OpenOptions::default())
                .expect_err("a scale that is not finite");
            let text = err.to_string();
            assert!(
                matches!(err, Error::NotCompiled { .. })
                    && (text.contains(&format!("int8 {what} has a scale that is not a finite"))
                        || op["pool"] == true && text.contains("not a positive")),
                "{}, {bad}: {err}",
                op["op"]
            );
            tried += 1;
        }
    }
    // Both int8 convolutions and both dense layers of the shipped student.
    assert_eq!(tried, 4 * 3);
}

#[test]
fn float_weights_and_biases_that_are_not_finite_are_refused() {
    // A NaN weight made every call fail, an infinite bias or shift every answer one class.
    for (model, dtype, bad) in [
        ("student.onnx", "f32", f32::NAN.to_le_bytes().to_vec()),
        ("student.onnx", "bias", f32::INFINITY.to_le_bytes().to_vec()),
        ("student-fp16.onnx", "f16", 0x7c00u16.to_le_bytes().to_vec()),
    ] {
        let good = compile(model);
        let manifest = manifest_of(&good);
        let data_at = u64::from_le_bytes(good[40..48].try_into().unwrap()) as usize;
        let ops = manifest["ops"].as_array().unwrap();
        // The last op holding such a blob, its last value.
        let (i, op) = ops
            .iter()
            .enumerate()
            .rfind(|(_, op)| match dtype {
                "bias" => op["bias"].is_u64(),
                _ => op["weights"][dtype].is_u64(),
            })
            .expect("an op with such a blob");
        let id = match dtype {
            "bias" => &op["bias"],
            _ => &op["weights"][dtype],
        };
        let blob = &manifest["blobs"][id.as_u64().unwrap() as usize];
        let end = data_at
            + blob["offset"].as_u64().unwrap() as usize
            + blob["len"].as_u64().unwrap() as usize;
        let mut bytes = good.clone();
        bytes[end - bad.len()..end].copy_from_slice(&bad);
        let err = StudentModel::from_bytes(&sealed(bytes), &OpenOptions::default())
            .expect_err("a weight that is not finite");
        let text = err.to_string();
        assert!(
            matches!(err, Error::NotCompiled { .. })
                && text.contains(&format!("op {i} ("))
                && text.contains("has a NaN or infinite value"),
            "{model} {dtype}: {err}"
        );
    }
}

#[test]
fn a_clamp_to_an_infinity_is_refused() {
    // 1e39 is beyond f32's range: it parses as +inf, and a lower bound of +inf would make
    // every output infinite and every call fail.
    let good = compile("student.onnx");
    let manifest = manifest_of(&good);
    let at = manifest["ops"]
        .as_array()
        .unwrap()
        .iter()
        .position(|op| op["op"] == "winograd_conv")
        .expect("a Winograd convolution");
    // Both bounds at +inf, then both at -inf: not empty, and every output infinite.
    for value in [1e39, -1e39] {
        let mut edited = manifest.clone();
        edited["ops"][at]["lo"] = serde_json::json!(value);
        edited["ops"][at]["hi"] = serde_json::json!(value);
        refused_with_manifest(&good, &edited, "makes every output infinite", &value);
    }
}

#[test]
fn a_manifest_longer_than_the_limits_allow_is_refused_before_it_is_parsed() {
    let good = compile("student.onnx");
    let manifest = manifest_of(&good);
    // 9 MB of spaces inside the JSON: valid, and longer than the 8.1 MB the default
    // limits allow.
    let text = serde_json::to_string(&manifest).unwrap();
    let padded = format!("{}{}", &text[..1], " ".repeat(9 << 20)) + &text[1..];
    let err = StudentModel::from_bytes(&with_manifest(&good, &padded), &OpenOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge { what, .. } if what.starts_with("the manifest")),
        "{err}"
    );
    let unlimited = OpenOptions {
        limits: student_runtime::Limits::unlimited(),
        ..OpenOptions::default()
    };
    StudentModel::from_bytes(&with_manifest(&good, &padded), &unlimited).unwrap();
    // More source operator types than max_nodes allows nodes.
    let mut many = manifest.clone();
    many["source_operators"] = (0..1_001)
        .map(|i| serde_json::json!([format!("Op{i}"), 1]))
        .collect();
    let many = serde_json::to_string(&many).unwrap();
    let err = StudentModel::from_bytes(&with_manifest(&good, &many), &OpenOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge { option: "max_nodes", what, .. } if what.contains("source operator")),
        "{err}"
    );
}

/// A compiled file's manifest, parsed.
fn manifest_of(bytes: &[u8]) -> serde_json::Value {
    let len = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[128..128 + len]).unwrap()
}

/// `bytes` with its manifest replaced by `manifest`: the data section moved to the next
/// 64-byte boundary after it, the header's lengths and offsets and its checksum rewritten.
fn with_manifest(bytes: &[u8], manifest: &str) -> Vec<u8> {
    let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    let data = &bytes[field(40)..];
    let data_at = (128 + manifest.len()).next_multiple_of(64);
    let mut out = bytes[..128].to_vec();
    out.extend_from_slice(manifest.as_bytes());
    out.resize(data_at, 0);
    out.extend_from_slice(data);
    let total = out.len() as u64;
    out[16..24].copy_from_slice(&total.to_le_bytes());
    out[32..40].copy_from_slice(&(manifest.len() as u64).to_le_bytes());
    out[40..48].copy_from_slice(&(data_at as u64).to_le_bytes());
    sealed(out)
}

/// `bytes` with the first `from` in its manifest replaced by `to` (same length) and the
/// header checksum recomputed.
fn resealed(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let at = out
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from} not in the manifest"));
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    sealed(out)
}

/// `bytes` with the header checksum recomputed.
fn sealed(mut out: Vec<u8>) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(&out[..96]);
    hasher.update(&out[128..]);
    let sum: [u8; 32] = hasher.finalize().into();
    out[96..128].copy_from_slice(&sum);
    out
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x40;
    out
}

fn patch(bytes: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at..at + with.len()].copy_from_slice(with);
    out
}

/// The shipped student, edited: its opset set to `opset` and `edit` applied to its graph.
fn student_at_opset(opset: i64, edit: impl FnOnce(&mut tract_onnx::pb::GraphProto)) -> Vec<u8> {
    use prost::Message;
    let bytes = std::fs::read(models_dir().join("student.onnx")).unwrap();
    let mut proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    proto.opset_import[0].version = opset;
    edit(proto.graph.as_mut().unwrap());
    proto.encode_to_vec()
}

fn node(op: &str, inputs: &[&str], output: &str) -> tract_onnx::pb::NodeProto {
    tract_onnx::pb::NodeProto {
        op_type: op.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        ..Default::default()
    }
}

fn int_attribute(name: &str, value: i64) -> tract_onnx::pb::AttributeProto {
    tract_onnx::pb::AttributeProto {
        name: name.to_string(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// A Softmax of `pool1` (16 x 7 x 7) before the Flatten, with the given attributes.
fn softmax_before_flatten(graph: &mut tract_onnx::pb::GraphProto, axis: Option<i64>) {
    let at = graph
        .node
        .iter()
        .position(|n| n.op_type == "Flatten")
        .unwrap();
    let mut softmax = node("Softmax", &["pool1"], "pool1.softmax");
    softmax
        .attribute
        .extend(axis.map(|a| int_attribute("axis", a)));
    graph.node[at].input[0] = "pool1.softmax".to_string();
    graph.node.insert(at, softmax);
}

#[test]
fn a_softmax_before_opset_13_over_several_axes_is_refused_by_the_compiler() {
    // Before opset 13 a Softmax normalizes over its axis and every later axis together
    // (its axis defaults to 1): compiled as a softmax over axis 1 alone, the file answered
    // otherwise than onnxruntime.
    let old = student_at_opset(11, |g| softmax_before_flatten(g, None));
    let err = compile_onnx(&old, "softmax-11.onnx").unwrap_err();
    assert!(
        err.to_string().contains(
            "at opset 11 Softmax normalizes over axis 1 and the axes after it (of sizes [7, 7])"
        ),
        "{err}"
    );
    // Over the last axis the two meanings agree, and at opset 13 the axis is its own.
    let last = student_at_opset(11, |g| softmax_before_flatten(g, Some(3)));
    compile_onnx(&last, "softmax-11-last-axis.onnx").unwrap();
    let new = student_at_opset(13, |g| softmax_before_flatten(g, Some(1)));
    compile_onnx(&new, "softmax-13.onnx").unwrap();
}

#[test]
fn shape_start_and_end_take_part_of_the_shape() {
    // The Flatten written as Reshape(pool1, Concat(Shape(pool1, end=1), [-1])), as
    // exporters write it at opset 15: the compiled file must compute the student's logits.
    let reshaped = student_at_opset(15, |g| {
        let at = g.node.iter().position(|n| n.op_type == "Flatten").unwrap();
        let mut shape = node("Shape", &["pool1"], "pool1.batch");
        shape.attribute.push(int_attribute("end", 1));
        let mut concat = node("Concat", &["pool1.batch", "minus_one"], "pool1.shape");
        concat.attribute.push(int_attribute("axis", 0));
        g.node[at] = node("Reshape", &["pool1", "pool1.shape"], "flatten");
        g.node.insert(at, concat);
        g.node.insert(at, shape);
        g.initializer.push(tract_onnx::pb::TensorProto {
            name: "minus_one".to_string(),
            dims: vec![1],
            data_type: tract_onnx::pb::tensor_proto::DataType::Int64 as i32,
            int64_data: vec![-1],
            ..Default::default()
        });
    });
    let options = OpenOptions::with_batch(4);
    let open = |bytes: &[u8], name: &str| StudentModel::from_bytes_named(bytes, name, &options);
    let edited = open(
        &compile_onnx(&reshaped, "reshaped.onnx").unwrap().bytes,
        "reshaped",
    )
    .unwrap();
    let original = open(&compile("student.onnx"), "student").unwrap();
    let input: Vec<f32> = images(&original)[..16 * 784].to_vec();
    assert_eq!(
        edited.logits_batch(&input).unwrap(),
        original.logits_batch(&input).unwrap()
    );
}
