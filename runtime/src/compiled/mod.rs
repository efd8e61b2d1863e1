//! Compiled students (`.student` files): opened from a memory map and run by the crate's
//! own executor over the `student-kernels` SIMD kernels, without tract.

pub(crate) mod exec;
pub(crate) mod format;
pub(crate) mod ir;
pub(crate) mod plan;

use student_kernels::Isa;

use crate::error::Error;
use crate::info::GraphInfo;
use crate::limits::{Check, Limit, elements};
use exec::Executor;
pub use format::starts_like_compiled;
use ir::{DType, Op};
use plan::Plan;

/// The most classes a compiled student may declare, as for an ONNX file
/// (`onnx_info.rs`): a card without labels gets one default label per class, so an output
/// of 2^25 values in a file of a few hundred bytes would otherwise cost gigabytes at open.
const MAX_CLASSES: usize = 1 << 20;

/// Manifest text allowed per op that `max_nodes` allows: an op and its values take
/// 0.3-1 KB in the compiled shipped models.
const MANIFEST_PER_OP: u64 = 4 << 10;
/// Manifest text allowed per metadata entry that `max_metadata_entries` allows: a card's
/// entries take 0.1-2 KB.
const MANIFEST_PER_ENTRY: u64 = 4 << 10;
/// Manifest text allowed besides.
const MANIFEST_BASE: u64 = 64 << 10;

/// The longest manifest the limits allow (8.1 MB by default).
fn manifest_bound(limits: &crate::Limits) -> u64 {
    MANIFEST_BASE
        .saturating_add(limits.max_nodes.saturating_mul(MANIFEST_PER_OP))
        .saturating_add(
            limits
                .max_metadata_entries
                .saturating_mul(MANIFEST_PER_ENTRY),
        )
}

/// Validates a compiled file and prepares its executor. Nothing is read through an offset
/// before the header, the checksum, every blob range and every op have been checked.
pub(crate) fn open(
    bytes: &[u8],
    origin: &str,
    isa: Isa,
    check: &Check<'_>,
    batch: usize,
) -> Result<(Executor, GraphInfo), Error> {
    let bad = |reason: String| Error::NotCompiled {
        origin: origin.to_string(),
        reason,
    };
    // The manifest is JSON, parsed whole before anything in it is counted, and its
    // smallest entries take ten times their text once parsed (a 64 MiB manifest of empty
    // operator names took 676 MB): its length is bounded by what the limits allow.
    // (A length past the end of the file is the parser's to report.)
    if let Some(len) = format::declared_manifest_len(bytes) {
        let bound = manifest_bound(check.limits);
        if len > bound && len <= bytes.len() as u64 {
            return Err(Error::TooLarge {
                origin: origin.to_string(),
                what: format!(
                    "the manifest ({} KiB per op of max_nodes, {} KiB per entry of \
                     max_metadata_entries and {} KiB besides are allowed)",
                    MANIFEST_PER_OP >> 10,
                    MANIFEST_PER_ENTRY >> 10,
                    MANIFEST_BASE >> 10
                ),
                found: len.to_string(),
                unit: "bytes",
                limit: bound,
                option: "max_nodes",
            });
        }
    }
    let parsed = format::parse(bytes).map_err(bad)?;
    let data = parsed.data_offset..parsed.data_offset + parsed.data_len;
    let plan = Plan::new(parsed.manifest).map_err(|e| bad(format!("invalid plan: {e}")))?;
    let m = &plan.manifest;
    let input = &m.values[m.input];
    let output = &m.values[m.output];
    let classes = match output.dims[..] {
        [k] if (2..=MAX_CLASSES).contains(&k) => k,
        _ => {
            return Err(bad(format!(
                "the output has dimensions {:?} per sample, expected [classes] with 2 to {MAX_CLASSES} classes",
                output.dims
            )));
        }
    };
    debug_assert_eq!(input.dtype, DType::F32);
    check.within(Limit::Weights, Some(parsed.data_len as u64), || {
        "the data section (weights)".to_string()
    })?;
    check.within(Limit::Nodes, Some(m.ops.len() as u64), || {
        "the number of ops".to_string()
    })?;
    check.within(Limit::Metadata, Some(m.metadata.len() as u64), || {
        "the metadata entry count".to_string()
    })?;
    for (key, value) in &m.metadata {
        check.within(Limit::String, Some(key.len() as u64), || {
            "a metadata key".to_string()
        })?;
        check.within(Limit::String, Some(value.len() as u64), || {
            format!(
                "metadata entry `{}`",
                key.chars().take(80).collect::<String>()
            )
        })?;
    }
    check.within(Limit::Nodes, Some(m.source_operators.len() as u64), || {
        "the count of source operator types".to_string()
    })?;
    for (op, _) in &m.source_operators {
        check.within(Limit::String, Some(op.len() as u64), || {
            "the name of a source operator".to_string()
        })?;
    }
    let info = GraphInfo {
        input_dims: std::iter::once(1)
            .chain(input.dims.iter().copied())
            .collect(),
        classes,
        metadata: m.metadata.clone(),
        params: m.params,
        operators: m.source_operators.clone(),
    };
    for (i, v) in m.values.iter().enumerate() {
        let bytes = elements(v.dims.iter().map(|&d| d as u64))
            .and_then(|n| n.checked_mul(v.dtype.size() as u64 * batch as u64));
        check.within(Limit::Tensor, bytes, || {
            format!(
                "value {i} at batch {batch}, dimensions {:?} per sample,",
                v.dims
            )
        })?;
    }
    // A blob's bytes (every range was checked against the file by the plan).
    let blob_bytes = |id: usize| {
        let blob = &m.blobs[id];
        let at = data.start + blob.offset as usize;
        bytes
            .get(at..at + blob.len as usize)
            .ok_or_else(|| bad(format!("blob {id} lies outside the file")))
    };
    // Integer ops scale their i32 sums by these per channel: a NaN or infinite scale gives
    // bytes that look like any other (a wrong answer, not an error) or non-finite floats
    // on every call. A fused pool requantizes each window's largest sum: the pool of the
    // requantized sums only while every scale is positive, which is when the compiler
    // fuses.
    for op in &m.ops {
        let (scale, pool, what) = match op {
            Op::QConv { scale, pool, .. } => (*scale, *pool, "convolution"),
            Op::QDense { scale, .. } => (*scale, false, "dense layer"),
            _ => continue,
        };
        let values = blob_bytes(scale)?;
        if pool && !ir::scales_allow_pooling(values) {
            return Err(bad(format!(
                "an int8 convolution with a fused max pool has a scale that is not a \
                 positive number (blob {scale}); the pool commutes with requantizing only \
                 for positive scales"
            )));
        }
        if !ir::scales_are_finite(values) {
            return Err(bad(format!(
                "an int8 {what} has a scale that is not a finite number (blob {scale})"
            )));
        }
    }
    // Weights, biases and tables that are not finite make every answer meaningless (a
    // LayerNorm beta of +inf answered one class for every input) or every call fail.
    for (i, op) in m.ops.iter().enumerate() {
        for id in op.finite_blobs() {
            if !ir::blob_is_finite(blob_bytes(id)?, m.blobs[id].dtype) {
                return Err(bad(format!(
                    "op {i} ({}) has a NaN or infinite value in blob {id}",
                    op.name()
                )));
            }
        }
    }
    let executor = Executor::new(plan, data, isa);
    check.within(Limit::Scratch, executor.scratch_bytes(batch), || {
        format!("the working memory of one call at batch {batch}")
    })?;
    Ok((executor, info))
}
