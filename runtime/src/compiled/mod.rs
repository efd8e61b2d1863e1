//! Compiled students (`.student` files): opened from a memory map and run by the crate's
//! own executor over the `student-kernels` SIMD kernels, without tract.

pub(crate) mod exec;
pub(crate) mod format;
pub(crate) mod ir;
pub(crate) mod plan;

use student_kernels::Isa;

use crate::error::Error;
use crate::info::GraphInfo;
use exec::Executor;
use ir::DType;
use plan::Plan;

/// Validates a compiled file and prepares its executor. Nothing is read through an offset
/// before the header, the checksum, every blob range and every op have been checked.
pub(crate) fn open(bytes: &[u8], origin: &str, isa: Isa) -> Result<(Executor, GraphInfo), Error> {
    let bad = |reason: String| Error::NotCompiled {
        origin: origin.to_string(),
        reason,
    };
    let parsed = format::parse(bytes).map_err(bad)?;
    let data = parsed.data_offset..parsed.data_offset + parsed.data_len;
    let plan = Plan::new(parsed.manifest).map_err(|e| bad(format!("invalid plan: {e}")))?;
    let m = &plan.manifest;
    let input = &m.values[m.input];
    let output = &m.values[m.output];
    let classes = match output.dims[..] {
        [k] if k >= 2 => k,
        _ => {
            return Err(bad(format!(
                "the output has dimensions {:?} per sample, expected [classes] with at least 2 classes",
                output.dims
            )));
        }
    };
    debug_assert_eq!(input.dtype, DType::F32);
    let info = GraphInfo {
        input_dims: std::iter::once(1)
            .chain(input.dims.iter().copied())
            .collect(),
        classes,
        metadata: m.metadata.clone(),
        params: m.params,
        operators: m.source_operators.clone(),
    };
    Ok((Executor::new(plan, data, isa), info))
}
