//! fp16 storage: every float initializer is stored as IEEE half precision and widened back
//! to f32 by a `Cast` node at the top of the graph. The file is half the size; arithmetic
//! stays f32, so every ONNX runtime loads it (no fp16 Gemm or Conv kernels needed) and the
//! only loss is the rounding of each weight to 11 significant bits.

use half::f16;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use super::proto::{Editor, int_attr, node, tensor_f32};
use crate::error::Error;

/// What the conversion did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Fp16Summary {
    /// Initializers converted.
    pub tensors: usize,
    /// Values converted.
    pub values: usize,
    /// The largest relative rounding error over values that are normal in fp16.
    pub max_relative_error: f32,
    /// Values that became fp16 subnormals or zero (magnitude below 2^-14).
    pub flushed: usize,
}

/// Converts every f32 initializer of the graph in `editor` to fp16 storage.
///
/// # Errors
/// [`Error::Quantize`] naming the initializer when a weight is beyond fp16's range
/// (65504) or not finite.
pub(crate) fn rewrite(editor: &mut Editor) -> Result<Fp16Summary, Error> {
    let mut summary = Fp16Summary::default();
    let initializers = std::mem::take(&mut editor.graph_mut().initializer);
    let mut kept = Vec::with_capacity(initializers.len());
    let mut casts = Vec::new();
    for t in initializers {
        if t.data_type != DataType::Float as i32 {
            kept.push(t);
            continue;
        }
        let values = tensor_f32(&t).map_err(|r| editor.fail(r))?;
        let mut raw = Vec::with_capacity(values.len() * 2);
        for &v in &values {
            let h = f16::from_f32(v);
            if !h.is_finite() {
                return Err(editor.fail(format!(
                    "initializer `{}` holds {v}, which fp16 cannot store (largest: 65504)",
                    t.name
                )));
            }
            if v.abs() >= f16::MIN_POSITIVE.to_f32() {
                let err = ((h.to_f32() - v) / v).abs();
                summary.max_relative_error = summary.max_relative_error.max(err);
            } else if v != 0.0 {
                summary.flushed += 1;
            }
            raw.extend_from_slice(&h.to_le_bytes());
        }
        let half_name = editor.fresh_name(&format!("{}_fp16", t.name));
        let cast_name = editor.fresh_name(&format!("{}_Cast", t.name));
        casts.push(node(
            "Cast",
            &cast_name,
            &[&half_name],
            &[&t.name],
            vec![int_attr("to", DataType::Float as i64)],
        ));
        summary.tensors += 1;
        summary.values += values.len();
        kept.push(pb::TensorProto {
            name: half_name,
            dims: t.dims.clone(),
            data_type: DataType::Float16 as i32,
            raw_data: raw,
            ..Default::default()
        });
    }
    let graph = editor.graph_mut();
    graph.initializer = kept;
    // The f32 names are now node outputs: they can no longer be listed as graph inputs.
    let cast_outputs: Vec<String> = casts.iter().map(|c| c.output[0].clone()).collect();
    graph.input.retain(|i| !cast_outputs.contains(&i.name));
    casts.append(&mut graph.node);
    graph.node = casts;
    Ok(summary)
}
