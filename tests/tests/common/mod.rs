//! Helpers shared by the end-to-end tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use prost::Message;
use student_runtime::StudentModel;

/// The shipped Fashion-MNIST models.
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist")
}

pub fn student() -> StudentModel {
    StudentModel::open(models_dir().join("student.onnx")).expect("shipped student opens")
}

pub fn teacher() -> StudentModel {
    StudentModel::open(models_dir().join("teacher.onnx")).expect("shipped teacher opens")
}

/// The shipped sample images with their true labels, converted through the student's card.
pub fn samples(model: &StudentModel) -> Vec<(String, usize, Vec<f32>)> {
    let dir = models_dir().join("samples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("samples folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 24,
        "expected a few dozen samples, found {}",
        paths.len()
    );
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let label: usize = name.rsplit_once("-label-").unwrap().1.parse().unwrap();
            let img = image::open(&p).expect("png decodes").to_luma8();
            let tensor = model
                .input_spec()
                .tensor_from_gray8(img.as_raw(), img.width() as usize, img.height() as usize)
                .expect("sample has the model's size");
            (name, label, tensor)
        })
        .collect()
}

/// A fresh, empty scratch folder under the target directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The bytes of `model` with its metadata (the model card) removed.
pub fn without_card(model: &Path) -> Vec<u8> {
    let bytes = std::fs::read(model).unwrap();
    let mut proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    proto.metadata_props.clear();
    proto.encode_to_vec()
}

/// The bytes of `model` with one metadata entry replaced.
pub fn with_card_entry(model: &Path, key: &str, value: &str) -> Vec<u8> {
    let bytes = std::fs::read(model).unwrap();
    let mut proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    proto.metadata_props.retain(|e| e.key != key);
    proto
        .metadata_props
        .push(tract_onnx::pb::StringStringEntryProto {
            key: key.to_string(),
            value: value.to_string(),
        });
    proto.encode_to_vec()
}
