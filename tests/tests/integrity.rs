//! Model files as untrusted input: limits on what a file may declare, signed models, files
//! changed under a running model, and the model card's rule for NaN inputs.

mod common;

use std::path::Path;

use common::{models_dir, samples, scratch, student, with_card_entry};
use student_runtime::signing::{SecretKey, sign};
use student_runtime::{Error, Limits, OpenOptions, StudentModel, compile_onnx};

fn compiled_student() -> Vec<u8> {
    let bytes = std::fs::read(models_dir().join("student.onnx")).unwrap();
    compile_onnx(&bytes, "student.onnx").unwrap().bytes
}

fn with_limits(f: impl FnOnce(&mut Limits)) -> OpenOptions {
    let mut options = OpenOptions::default();
    f(&mut options.limits);
    options
}

/// The limit named in a `TooLarge` error, or a description of the other error.
fn limit_hit(result: Result<StudentModel, Error>) -> String {
    match result {
        Err(Error::TooLarge { option, .. }) => option.to_string(),
        Err(e) => format!("another error: {e}"),
        Ok(_) => "opened".to_string(),
    }
}

#[test]
fn each_limit_refuses_a_model_over_it_and_names_itself() {
    let onnx_path = models_dir().join("student.onnx");
    let onnx = std::fs::read(&onnx_path).unwrap();
    let compiled = compiled_student();
    for bytes in [&onnx, &compiled] {
        let open = |options: &OpenOptions| StudentModel::from_bytes(bytes, options);
        assert_eq!(
            limit_hit(open(&with_limits(|l| l.max_file_bytes = 1000))),
            "max_file_bytes"
        );
        assert_eq!(
            limit_hit(open(&with_limits(|l| l.max_nodes = 3))),
            "max_nodes"
        );
        // The card's entries are a few hundred bytes each.
        assert_eq!(
            limit_hit(open(&with_limits(|l| l.max_string_bytes = 64))),
            "max_string_bytes"
        );
        assert_eq!(
            limit_hit(open(&with_limits(|l| l.max_weight_bytes = 10_000))),
            "max_weight_bytes"
        );
        // The card has about ten entries.
        assert_eq!(
            limit_hit(open(&with_limits(|l| l.max_metadata_entries = 5))),
            "max_metadata_entries"
        );
        // The largest activation is 8x28x28 in the ONNX file (25 KB a sample) and 8x14x14
        // in the compiled one, whose first pool is fused into the convolution (6.3 KB a
        // sample). A compiled student plans the batch: batch 1 fits 256 KiB, batch 64 does
        // not. An ONNX file runs a batch sample by sample, so any batch fits 256 KiB and
        // none fits 16 KiB.
        let tensor_limit = |batch, bytes| {
            let mut options = with_limits(|l| l.max_tensor_bytes = bytes);
            options.batch = batch;
            options
        };
        assert_eq!(limit_hit(open(&tensor_limit(1, 256 << 10))), "opened");
        if bytes == &onnx {
            assert_eq!(limit_hit(open(&tensor_limit(64, 256 << 10))), "opened");
            assert_eq!(
                limit_hit(open(&tensor_limit(1, 16 << 10))),
                "max_tensor_bytes"
            );
        } else {
            assert_eq!(
                limit_hit(open(&tensor_limit(64, 256 << 10))),
                "max_tensor_bytes"
            );
        }
        let unlimited = OpenOptions {
            limits: Limits::unlimited(),
            batch: 64,
            ..OpenOptions::default()
        };
        assert_eq!(limit_hit(open(&unlimited)), "opened");
    }
    // The working memory of a compiled student's call grows with the batch.
    let scratch_limit = OpenOptions {
        batch: 64,
        ..with_limits(|l| l.max_scratch_bytes = 1 << 20)
    };
    assert_eq!(
        limit_hit(StudentModel::from_bytes(&compiled, &scratch_limit)),
        "max_scratch_bytes"
    );
    // Metadata keys are strings too: a 100 KB key, in both formats.
    let long_key = with_card_entry(&onnx_path, &"k".repeat(100_000), "v");
    let long_key_compiled = compile_onnx(&long_key, "long-key.onnx").unwrap().bytes;
    for bytes in [&long_key, &long_key_compiled] {
        let e = StudentModel::from_bytes(bytes, &with_limits(|l| l.max_string_bytes = 50_000))
            .unwrap_err();
        assert!(
            matches!(&e, Error::TooLarge { what, .. } if what.contains("a metadata key")),
            "{e}"
        );
    }
    // A thousand one-byte entries more than the card's: refused by default (compiling
    // included), opened with no limits.
    let many = {
        use prost::Message;
        let mut proto = tract_onnx::pb::ModelProto::decode(onnx.as_slice()).unwrap();
        for i in 0..1_000 {
            proto
                .metadata_props
                .push(tract_onnx::pb::StringStringEntryProto {
                    key: format!("k{i}"),
                    value: "v".to_string(),
                });
        }
        proto.encode_to_vec()
    };
    let too_many = |e: &Error| {
        matches!(e, Error::TooLarge { option: "max_metadata_entries", found, .. }
            if found.parse::<u64>().unwrap() > 1_000)
    };
    let e = StudentModel::from_bytes(&many, &OpenOptions::default()).unwrap_err();
    assert!(too_many(&e), "{e}");
    let e = compile_onnx(&many, "many.onnx").unwrap_err();
    assert!(too_many(&e), "{e}");
    StudentModel::from_bytes(&many, &with_limits(|l| *l = Limits::unlimited())).unwrap();
    // The file limit applies before a file is read.
    let e =
        StudentModel::open_with(&onnx_path, &with_limits(|l| l.max_file_bytes = 1000)).unwrap_err();
    assert!(
        e.to_string().contains("the file is") && e.to_string().contains("over the limit of 1000"),
        "{e}"
    );
}

#[test]
fn a_compiled_student_with_a_damaged_magic_is_reported_as_one() {
    let dir = scratch("damaged-magic");
    let not_compiled = |result: Result<StudentModel, Error>| match result {
        Err(Error::NotCompiled { reason, .. }) => reason,
        Err(e) => panic!("expected NotCompiled, got {e}"),
        Ok(_) => panic!("expected NotCompiled, it opened"),
    };
    // One byte of the magic changed: from a path or from bytes, whatever the name.
    let mut damaged = compiled_student();
    damaged[3] = b'd';
    let path = dir.join("damaged.bin");
    std::fs::write(&path, &damaged).unwrap();
    for result in [
        StudentModel::open(&path),
        StudentModel::from_bytes(&damaged, &OpenOptions::default()),
    ] {
        let reason = not_compiled(result);
        assert!(reason.contains(r#"starts with "STUdENT\x1a""#), "{reason}");
    }
    // Nothing like the magic, but named `.student`: not sent to look for an ONNX problem.
    let text = dir.join("notes.student");
    std::fs::write(&text, "This is a text file, not a model.\n").unwrap();
    let reason = not_compiled(StudentModel::open(&text));
    assert!(reason.contains(r#"starts with "This is ""#), "{reason}");
    let empty = dir.join("empty.student");
    std::fs::write(&empty, "").unwrap();
    assert_eq!(
        not_compiled(StudentModel::open(&empty)),
        "the file is empty"
    );
    // An ONNX file renamed `.student` still opens.
    let renamed = dir.join("renamed.student");
    std::fs::copy(models_dir().join("student.onnx"), &renamed).unwrap();
    StudentModel::open(&renamed).unwrap();
}

#[test]
fn a_file_changed_after_opening_does_not_reach_the_model() {
    let dir = scratch("changed-file");
    let reference = student();
    let inputs: Vec<Vec<f32>> = samples(&reference).into_iter().map(|(_, _, x)| x).collect();
    for (name, bytes) in [
        (
            "student.onnx",
            std::fs::read(models_dir().join("student.onnx")).unwrap(),
        ),
        ("student.student", compiled_student()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let model = StudentModel::open(&path).unwrap();
        let before: Vec<Vec<f32>> = inputs.iter().map(|x| model.logits(x).unwrap()).collect();
        // Truncated in place, then rewritten in place with other bytes of the same length.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(0).unwrap();
        drop(file);
        let after: Vec<Vec<f32>> = inputs.iter().map(|x| model.logits(x).unwrap()).collect();
        assert_eq!(
            before, after,
            "{name}: truncating the file changed the answers"
        );
        std::fs::write(&path, vec![0x5a; bytes.len()]).unwrap();
        let after: Vec<Vec<f32>> = inputs.iter().map(|x| model.logits(x).unwrap()).collect();
        assert_eq!(
            before, after,
            "{name}: rewriting the file changed the answers"
        );
    }
}

/// With `memory_map` set, the model reads a compiled file's weights from the file's pages;
/// truncating the file under it faults the process. This is why mapping is opt-in, and
/// what the documentation of `OpenOptions::memory_map` warns of. The fault happens in a
/// child process, which this test starts from its own executable.
#[test]
fn a_mapped_file_truncated_under_the_model_faults_only_with_memory_map() {
    const CHILD: &str = "STUDENT_TEST_MAPPED_CHILD";
    if let Ok(path) = std::env::var(CHILD) {
        let options = OpenOptions {
            memory_map: true,
            ..OpenOptions::default()
        };
        let model = StudentModel::open_with(&path, &options).unwrap();
        let input = vec![0.5f32; model.input_spec().len()];
        model.logits(&input).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        // Reads the weights again, now past the end of the file.
        let _ = model.logits(&input);
        println!("no fault");
        std::process::exit(0);
    }
    let dir = scratch("mapped-file");
    let path = dir.join("student.student");
    std::fs::write(&path, compiled_student()).unwrap();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_mapped_file_truncated_under_the_model_faults_only_with_memory_map",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &path)
        .output()
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        const SIGBUS: i32 = 7;
        assert_eq!(
            output.status.signal(),
            Some(SIGBUS),
            "expected the mapped child to fault; status {:?}, stdout {}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

fn write_signed(dir: &Path, key: &SecretKey) -> std::path::PathBuf {
    let path = dir.join("student.onnx");
    let bytes = std::fs::read(models_dir().join("student.onnx")).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(dir.join("student.onnx.sig"), sign(&bytes, key)).unwrap();
    path
}

#[test]
fn only_models_signed_by_a_trusted_key_open_when_keys_are_set() {
    let dir = scratch("signed");
    let publisher = SecretKey::from_seed([7; 32]);
    let stranger = SecretKey::from_seed([9; 32]);
    let path = write_signed(&dir, &publisher);
    let trusting = |key: &SecretKey| OpenOptions {
        trusted_keys: vec![key.public()],
        ..OpenOptions::default()
    };
    let reason = |r: Result<StudentModel, Error>| match r {
        Err(Error::Signature { reason, .. }) => reason,
        Err(e) => panic!("expected a signature error, got {e}"),
        Ok(_) => panic!("expected a signature error, the model opened"),
    };

    StudentModel::open_with(&path, &trusting(&publisher)).unwrap();
    // No keys set: signatures are not looked at.
    StudentModel::open(&path).unwrap();
    assert!(reason(StudentModel::open_with(&path, &trusting(&stranger))).contains("not among"));

    // One byte changed after signing: refused before the model is parsed.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(reason(StudentModel::open_with(&path, &trusting(&publisher))).contains("other bytes"));

    // No signature file.
    let path = write_signed(&dir, &publisher);
    std::fs::remove_file(dir.join("student.onnx.sig")).unwrap();
    assert!(
        reason(StudentModel::open_with(&path, &trusting(&publisher)))
            .contains("cannot read the signature")
    );

    // From memory: the signature comes with the options.
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        reason(StudentModel::from_bytes(&bytes, &trusting(&publisher)))
            .contains("no signature was given")
    );
    let with_signature = OpenOptions {
        signature: Some(sign(&bytes, &publisher).into_bytes()),
        ..trusting(&publisher)
    };
    StudentModel::from_bytes(&bytes, &with_signature).unwrap();

    // A compiled student is signed the same way.
    let compiled = compiled_student();
    let options = OpenOptions {
        signature: Some(sign(&compiled, &publisher).into_bytes()),
        ..trusting(&publisher)
    };
    StudentModel::from_bytes(&compiled, &options).unwrap();
}

#[test]
fn nan_inputs_follow_the_model_cards_rule() {
    let path = models_dir().join("student.onnx");
    let model = student();
    let mut input = samples(&model).remove(0).2;
    input[100] = f32::NAN;
    input[200] = f32::INFINITY;
    let e = model.logits(&input).unwrap_err();
    assert!(e.to_string().contains("not finite"), "{e}");

    let card_input = r#"{"channels":1,"height":28,"layout":"NCHW","mean":[0.286],"scale":0.003921568859368563,"std":[0.353],"width":28,"non_finite":"zero"}"#;
    let bytes = with_card_entry(&path, "student.input", card_input);
    let zeroing = StudentModel::from_bytes(&bytes, &OpenOptions::default()).unwrap();
    let mut zeroed = input.clone();
    zeroed[100] = 0.0;
    zeroed[200] = 0.0;
    assert_eq!(
        zeroing.logits(&input).unwrap(),
        zeroing.logits(&zeroed).unwrap()
    );
    let compiled = compile_onnx(&bytes, "zeroing").unwrap().bytes;
    let zeroing = StudentModel::from_bytes(&compiled, &OpenOptions::default()).unwrap();
    assert_eq!(
        zeroing.logits(&input).unwrap(),
        zeroing.logits(&zeroed).unwrap()
    );

    let bad = with_card_entry(&path, "student.input", &card_input.replace("zero", "clamp"));
    let e = StudentModel::from_bytes(&bad, &OpenOptions::default()).unwrap_err();
    assert!(
        matches!(e, Error::InvalidCard { .. }) && e.to_string().contains("clamp"),
        "{e}"
    );
}

/// A 4-input, 2-class linear model whose logits get `0 x sum(bomb)` added, where the
/// bomb is made by `nodes` from `initializers` while the model is planned.
fn with_bomb(
    nodes: Vec<tract_onnx::pb::NodeProto>,
    initializers: Vec<tract_onnx::pb::TensorProto>,
) -> Vec<u8> {
    use prost::Message;
    use tract_onnx::pb;
    let node = |op: &str, inputs: &[&str], output: &str| pb::NodeProto {
        op_type: op.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: output.to_string(),
        ..Default::default()
    };
    let floats = |name: &str, dims: Vec<i64>, data: Vec<f32>| pb::TensorProto {
        name: name.to_string(),
        dims,
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: data,
        ..Default::default()
    };
    let value = |name: &str, dims: &[i64]| {
        use pb::tensor_shape_proto::{Dimension, dimension::Value};
        pb::ValueInfoProto {
            name: name.to_string(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: pb::tensor_proto::DataType::Float as i32,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| Dimension {
                                value: Some(Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let mut graph_nodes = vec![node("MatMul", &["x", "w"], "linear")];
    graph_nodes.extend(nodes);
    graph_nodes.extend([
        node("ReduceSum", &["bomb"], "sum"),
        node("Mul", &["sum", "zero"], "nothing"),
        node("Add", &["linear", "nothing"], "logits"),
    ]);
    let mut init = vec![
        floats(
            "w",
            vec![4, 2],
            vec![1.0, -1.0, 0.5, 0.25, -0.5, 1.0, 0.0, 2.0],
        ),
        floats("zero", vec![], vec![0.0]),
    ];
    init.extend(initializers);
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            node: graph_nodes,
            initializer: init,
            input: vec![value("x", &[1, 4])],
            output: vec![value("logits", &[1, 2])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn ints(name: &str, data: Vec<i64>) -> tract_onnx::pb::TensorProto {
    tract_onnx::pb::TensorProto {
        name: name.to_string(),
        dims: vec![data.len() as i64],
        data_type: tract_onnx::pb::tensor_proto::DataType::Int64 as i32,
        int64_data: data,
        ..Default::default()
    }
}

fn op(op: &str, inputs: &[&str], output: &str) -> tract_onnx::pb::NodeProto {
    use tract_onnx::pb;
    // ConstantOfShape makes float zeros, said explicitly.
    let attribute = match op {
        "ConstantOfShape" => vec![pb::AttributeProto {
            name: "value".to_string(),
            r#type: pb::attribute_proto::AttributeType::Tensor as i32,
            t: Some(pb::TensorProto {
                dims: vec![1],
                data_type: pb::tensor_proto::DataType::Float as i32,
                float_data: vec![0.0],
                ..Default::default()
            }),
            ..Default::default()
        }],
        _ => Vec::new(),
    };
    pb::NodeProto {
        op_type: op.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: output.to_string(),
        attribute,
        ..Default::default()
    }
}

#[test]
fn sizes_made_while_planning_are_bounded_before_tract_makes_them() {
    // The bomb's shape [65536, 65536] (16 GiB of floats) is sliced out of a constant.
    let sliced = with_bomb(
        vec![
            op("Slice", &["s", "starts", "ends"], "shape"),
            op("ConstantOfShape", &["shape"], "bomb"),
        ],
        vec![
            ints("s", vec![7, 65536, 65536]),
            ints("starts", vec![1]),
            ints("ends", vec![3]),
        ],
    );
    let e = StudentModel::from_bytes(&sliced, &OpenOptions::default()).unwrap_err();
    assert!(
        matches!(&e, Error::TooLarge { what, .. } if what.contains("ConstantOfShape")),
        "{e}"
    );
    // Pad of a constant: not followed, so refused rather than planned unbounded.
    let padded = with_bomb(
        vec![op("Pad", &["one", "pads"], "bomb")],
        vec![
            ints("pads", vec![0, 0, 32768, 32768]),
            tract_onnx::pb::TensorProto {
                name: "one".to_string(),
                dims: vec![1, 1],
                data_type: tract_onnx::pb::tensor_proto::DataType::Float as i32,
                float_data: vec![1.0],
                ..Default::default()
            },
        ],
    );
    let e = StudentModel::from_bytes(&padded, &OpenOptions::default()).unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported { reason, .. } if reason.contains("node `bomb` (Pad)")),
        "{e}"
    );
    // The same structure with a small shape opens and runs.
    let small = with_bomb(
        vec![
            op("Slice", &["s", "starts", "ends"], "shape"),
            op("ConstantOfShape", &["shape"], "bomb"),
        ],
        vec![
            ints("s", vec![7, 3, 5]),
            ints("starts", vec![1]),
            ints("ends", vec![3]),
        ],
    );
    let model = StudentModel::from_bytes(&small, &OpenOptions::default()).unwrap();
    assert_eq!(
        model.logits(&[1.0, 0.0, 0.0, 0.0]).unwrap(),
        vec![1.0, -1.0]
    );
}

/// Decoding a protobuf allocates for what its encoding names, and names are cheap: the
/// runtime counts what decoding would make from the encoding, and refuses before decoding.
#[test]
fn a_file_that_decodes_to_far_more_than_it_holds_is_refused_before_it_is_decoded() {
    use prost::Message;
    use tract_onnx::pb;
    let onnx = std::fs::read(models_dir().join("student.onnx")).unwrap();
    let base = pb::ModelProto::decode(onnx.as_slice()).unwrap();
    let edited = |edit: &dyn Fn(&mut pb::ModelProto)| {
        let mut proto = base.clone();
        edit(&mut proto);
        proto.encode_to_vec()
    };
    let refusal =
        |bytes: &[u8], options: &OpenOptions| match StudentModel::from_bytes(bytes, options) {
            Err(Error::TooLarge { option, what, .. }) => (option, what),
            Err(e) => panic!("another error: {e}"),
            Ok(_) => panic!("it opened"),
        };
    let defaults = OpenOptions::default();
    // Empty initializers, value infos, value names and packed dims: a byte or two of the
    // file each, from 24 to 304 bytes decoded.
    let structure = [
        edited(&|p| {
            let graph = p.graph.as_mut().unwrap();
            graph.initializer.resize(200_000, Default::default());
        }),
        edited(&|p| {
            let graph = p.graph.as_mut().unwrap();
            graph.value_info.resize(200_000, Default::default());
        }),
        edited(&|p| {
            let graph = p.graph.as_mut().unwrap();
            graph.node[0].input.resize(1_000_000, String::new());
        }),
        edited(&|p| {
            let graph = p.graph.as_mut().unwrap();
            graph.initializer[0].dims.resize(3_000_000, 0);
        }),
    ];
    for bytes in &structure {
        let (option, what) = refusal(bytes, &defaults);
        assert_eq!(option, "max_nodes", "{what}");
        assert!(what.contains("decoded messages and lists"), "{what}");
    }
    // An int64 is a byte of the file and 8 decoded: tensor data counts decoded.
    let int64 = edited(&|p| {
        let graph = p.graph.as_mut().unwrap();
        graph.initializer.push(pb::TensorProto {
            name: "zeros".to_string(),
            int64_data: vec![0; 200_000],
            ..Default::default()
        });
    });
    assert!(int64.len() < (1 << 20));
    let small_weights = with_limits(|l| l.max_weight_bytes = 1 << 20);
    let (option, what) = refusal(&int64, &small_weights);
    assert_eq!(option, "max_weight_bytes");
    assert!(what.contains("decoded"), "{what}");
    // Nodes of functions count, though the graph does not call them.
    let function = edited(&|p| {
        p.functions.push(pb::FunctionProto {
            node: vec![Default::default(); 1_000],
            ..Default::default()
        });
    });
    let (option, what) = refusal(&function, &defaults);
    assert_eq!(option, "max_nodes");
    assert!(what.contains("functions"), "{what}");
    // The shipped models open with the default limits.
    for name in [
        "student.onnx",
        "student-int8.onnx",
        "student-fp16.onnx",
        "baseline.onnx",
        "teacher.onnx",
    ] {
        StudentModel::open(models_dir().join(name)).unwrap();
    }
}
