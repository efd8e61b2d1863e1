//! Checking a manifest before it runs, and laying out its activations in one arena.
//!
//! After [`Plan::new`] every op's values have the shapes and types the op expects and
//! every blob the op reads has the right type and length, so the executor's slicing is
//! in bounds. The executor still slices with checked accessors and reports a broken
//! invariant as an error rather than a panic.

use super::format::{elements, expect_dtype};
use super::ir::{
    BlobId, DType, Manifest, Op, Operand, PoolKind, QuantOut, UnaryFn, Value, ValueId, Weights,
    Window,
};

/// A validated manifest with each value's place in the arena.
#[derive(Debug)]
pub(crate) struct Plan {
    pub manifest: Manifest,
    /// Per value: byte offset of its slot per sample of batch (multiply by the batch).
    pub slots: Vec<usize>,
    /// Arena bytes per sample.
    pub arena_per_sample: usize,
}

/// The arena's slots start on 64-byte boundaries.
const SLOT_ALIGN: usize = 64;

/// The most elements a value, or a convolution's unfolded column count, may have. Bounds
/// every product the executor computes from a validated plan, so none overflows.
const MAX_ELEMENTS: usize = 1 << 28;

/// The most input values one pooling op may read per sample (2^30): a window far larger
/// than its input visits only the taps inside it, but many outputs of a large input can
/// still make a file of a few bytes cost minutes per call.
const MAX_POOL_TAPS: u64 = 1 << 30;

impl Plan {
    pub(crate) fn new(manifest: Manifest) -> Result<Plan, String> {
        validate(&manifest)?;
        let (slots, arena_per_sample) = layout(&manifest);
        Ok(Plan {
            manifest,
            slots,
            arena_per_sample,
        })
    }

    /// Bytes of value `v` for `batch` samples.
    pub(crate) fn value_bytes(&self, v: usize, batch: usize) -> usize {
        let value = &self.manifest.values[v];
        value.len() * value.dtype.size() * batch
    }
}

/// Assigns arena slots: a value's slot is free again after its last reader has run.
/// First fit over the slots in use, in units of bytes per sample. A reshape's output
/// shares its input's slot, so reshaping moves nothing.
fn layout(manifest: &Manifest) -> (Vec<usize>, usize) {
    let values = &manifest.values;
    // The value whose slot each value uses.
    let mut root: Vec<usize> = (0..values.len()).collect();
    for op in &manifest.ops {
        if let Op::Copy { x, y } = op {
            root[*y] = root[*x];
        }
    }
    let mut last_use = vec![0usize; values.len()];
    for (i, op) in manifest.ops.iter().enumerate() {
        for v in op.inputs() {
            last_use[root[v]] = last_use[root[v]].max(i);
        }
    }
    last_use[root[manifest.output]] = usize::MAX;
    let size = |v: usize| (values[v].len() * values[v].dtype.size()).next_multiple_of(SLOT_ALIGN);
    let mut slots = vec![0usize; values.len()];
    // (start, end, value) of the slots in use.
    let mut live: Vec<(usize, usize, usize)> = Vec::new();
    let place = |v: usize, live: &mut Vec<(usize, usize, usize)>| {
        let need = size(v);
        live.sort_unstable();
        let mut start = 0;
        for &(s, e, _) in live.iter() {
            if s >= start + need {
                break;
            }
            start = start.max(e);
        }
        live.push((start, start + need, v));
        start
    };
    slots[manifest.input] = place(manifest.input, &mut live);
    let mut end = size(manifest.input);
    for (i, op) in manifest.ops.iter().enumerate() {
        let y = op.output();
        if root[y] == y {
            slots[y] = place(y, &mut live);
            end = end.max(slots[y] + size(y));
        } else {
            slots[y] = slots[root[y]];
        }
        live.retain(|&(_, _, v)| last_use[v] > i);
    }
    (slots, end)
}

fn validate(m: &Manifest) -> Result<(), String> {
    let nv = m.values.len();
    if m.input >= nv || m.output >= nv {
        return Err(format!(
            "input or output names a missing value ({nv} values)"
        ));
    }
    for (i, v) in m.values.iter().enumerate() {
        if !matches!(v.dtype, DType::F32 | DType::U8) {
            return Err(format!(
                "value {i} has type {:?}; values are f32 or u8",
                v.dtype
            ));
        }
        let n = v
            .dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n > 0 && n <= MAX_ELEMENTS);
        if n.is_none() || v.dims.len() > 6 {
            return Err(format!(
                "value {i} has dimensions {:?}: expected at most 6 positive dimensions of at most 2^28 elements",
                v.dims
            ));
        }
    }
    if m.values[m.input].dtype != DType::F32 || m.values[m.output].dtype != DType::F32 {
        return Err("the model's input and output must be f32".to_string());
    }
    let mut written = vec![false; nv];
    written[m.input] = true;
    for (i, op) in m.ops.iter().enumerate() {
        let at = |reason: String| format!("op {i} ({}): {reason}", op.name());
        for v in op.inputs() {
            if v >= nv || !written[v] {
                return Err(at(format!("reads value {v}, which no earlier op writes")));
            }
        }
        let y = op.output();
        if y >= nv || written[y] {
            return Err(at(format!(
                "writes value {y}, which is missing or already written"
            )));
        }
        written[y] = true;
        check_op(m, op).map_err(at)?;
    }
    if !written[m.output] {
        return Err("no op writes the output value".to_string());
    }
    Ok(())
}

fn value(m: &Manifest, v: usize, dtype: DType) -> Result<&Value, String> {
    let value = &m.values[v];
    if value.dtype != dtype {
        return Err(format!(
            "value {v} is {:?}, expected {dtype:?}",
            value.dtype
        ));
    }
    Ok(value)
}

fn blob(m: &Manifest, b: BlobId, dtype: DType, len: usize) -> Result<(), String> {
    let decl = m
        .blobs
        .get(b)
        .ok_or_else(|| format!("names blob {b}, which does not exist"))?;
    expect_dtype(b, decl, dtype)?;
    if elements(decl) != len {
        return Err(format!(
            "blob {b} holds {} elements, expected {len}",
            elements(decl)
        ));
    }
    Ok(())
}

fn dims_eq(v: &Value, dims: &[usize], what: &str) -> Result<(), String> {
    if v.dims == dims {
        Ok(())
    } else {
        Err(format!(
            "{what} has dimensions {:?}, expected {dims:?}",
            v.dims
        ))
    }
}

/// A convolution's output size must follow from its input, kernel, stride, dilation and
/// top/left padding, with some bottom/right padding smaller than the kernel's span: an
/// inconsistent window would run, but compute something no ONNX graph specified.
fn check_conv_geometry(w: &Window) -> Result<(), String> {
    let axes = [
        (w.h_in, w.h_out, w.kh, w.stride[0], w.pad[0], w.dilation[0]),
        (w.w_in, w.w_out, w.kw, w.stride[1], w.pad[1], w.dilation[1]),
    ];
    for (size, out, k, stride, pad, dilation) in axes {
        let span = (k - 1) * dilation + 1;
        let fewest = (size + pad).checked_sub(span).map_or(0, |v| v / stride + 1);
        let most = (size + pad - 1) / stride + 1;
        if pad >= span || out < fewest.max(1) || out > most {
            return Err(format!(
                "window ({w}): an output of {out} does not follow from an input of {size}, a kernel span of {span}, stride {stride} and padding {pad}"
            ));
        }
    }
    Ok(())
}

fn check_window(w: &Window) -> Result<(), String> {
    let positive = [
        w.c_in, w.c_out, w.h_in, w.w_in, w.h_out, w.w_out, w.kh, w.kw, w.groups,
    ]
    .iter()
    .chain(&w.stride)
    .chain(&w.dilation)
    .all(|&d| d > 0 && d <= 1 << 24);
    if !positive || w.c_in % w.groups != 0 || w.c_out % w.groups != 0 {
        return Err(format!("invalid window ({w})"));
    }
    if w.pad[0] > 1 << 16 || w.pad[1] > 1 << 16 {
        return Err(format!("padding {:?} is too large", w.pad));
    }
    // `Window::k` multiplies unchecked; past this point it cannot overflow.
    let k = (w.c_in / w.groups)
        .checked_mul(w.kh)
        .and_then(|k| k.checked_mul(w.kw));
    if k.is_none_or(|k| k > MAX_ELEMENTS) {
        return Err(format!(
            "window ({w}): c_in / groups x kh x kw is over 2^28 columns"
        ));
    }
    Ok(())
}

/// Bounds the input values a pooling op reads per sample: per output, the executor visits
/// only the kernel taps that land in the input, at most `min(kh, h_in) x min(kw, w_in)`.
fn check_pool_work(w: &Window) -> Result<(), String> {
    let reads = [
        w.c_out,
        w.h_out,
        w.w_out,
        w.kh.min(w.h_in),
        w.kw.min(w.w_in),
    ]
    .iter()
    .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    if reads.is_none_or(|r| r > MAX_POOL_TAPS) {
        return Err(format!(
            "pooling window ({w}) reads {} input values per sample (channels x outputs x \
             taps inside the input), more than the {MAX_POOL_TAPS} allowed",
            reads.map_or_else(|| "more than 2^64".to_string(), |r| r.to_string())
        ));
    }
    Ok(())
}

/// Kernel size rounded up to the int8 kernels' group of 4.
pub(crate) fn padded_k(k: usize) -> usize {
    k.next_multiple_of(4)
}

/// The length of a packed weight matrix of `k` rows and `n` columns.
fn packed(k: usize, n: usize, int8: bool) -> usize {
    let cols = n.next_multiple_of(student_kernels::NR);
    if int8 { cols * padded_k(k) } else { cols * k }
}

fn check_op(m: &Manifest, op: &Op) -> Result<(), String> {
    match op {
        Op::Conv {
            x,
            y,
            window: w,
            weights,
            bias,
            lo,
            hi,
            pool,
        } => {
            check_window(w)?;
            check_conv_geometry(w)?;
            float_conv_values(m, *x, *y, w, *pool)?;
            let count = w.c_out * w.k();
            float_conv_blobs(m, weights, count, *bias, w.c_out)?;
            check_clamp(*lo, *hi)
        }
        Op::WinogradConv {
            x,
            y,
            window: w,
            weights,
            bias,
            lo,
            hi,
            pool,
        } => {
            check_window(w)?;
            check_conv_geometry(w)?;
            if !w.is_3x3_stride_1() {
                return Err(format!(
                    "window ({w}): a Winograd convolution needs a 3x3 kernel, stride 1, \
                     dilation 1 and one group"
                ));
            }
            float_conv_values(m, *x, *y, w, *pool)?;
            // 16 transformed matrices of c_out x c_in; the window check bounds c_in * 9,
            // and the output value bounds c_out, so this cannot overflow on 64 bits.
            let count = w
                .c_out
                .checked_mul(w.c_in)
                .and_then(|p| p.checked_mul(16))
                .ok_or_else(|| format!("window ({w}): 16 x c_out x c_in overflows"))?;
            float_conv_blobs(m, weights, count, *bias, w.c_out)?;
            check_clamp(*lo, *hi)
        }
        Op::Dense {
            x,
            y,
            k,
            n,
            weights,
            bias,
            lo,
            hi,
        } => {
            check_dense(value(m, *x, DType::F32)?, value(m, *y, DType::F32)?, *k, *n)?;
            match weights {
                Weights::F32(b) => blob(m, *b, DType::F32, packed(*k, *n, false))?,
                Weights::F16(b) => blob(m, *b, DType::F16, packed(*k, *n, false))?,
            }
            if let Some(b) = bias {
                blob(m, *b, DType::F32, *n)?;
            }
            check_clamp(*lo, *hi)
        }
        Op::QConv {
            x,
            y,
            window: w,
            weights,
            row_sums,
            bias,
            scale,
            out,
            pool,
            ..
        } => {
            check_window(w)?;
            check_conv_geometry(w)?;
            dims_eq(value(m, *x, DType::U8)?, &[w.c_in, w.h_in, w.w_in], "input")?;
            if *pool && !matches!(out, QuantOut::U8 { .. }) {
                return Err("a fused max pool needs the convolution's u8 output".to_string());
            }
            dims_eq(
                value(m, *y, out_dtype(out))?,
                &conv_out_dims(w, *pool)?,
                "output",
            )?;
            blob(m, *weights, DType::I8, w.c_out * padded_k(w.k()))?;
            blob(m, *row_sums, DType::I32, w.c_out)?;
            blob(m, *bias, DType::I32, w.c_out)?;
            blob(m, *scale, DType::F32, w.c_out)?;
            check_out(out)
        }
        Op::QDense {
            x,
            y,
            k,
            n,
            weights,
            col_sums,
            bias,
            scale,
            out,
            ..
        } => {
            check_dense(
                value(m, *x, DType::U8)?,
                value(m, *y, out_dtype(out))?,
                *k,
                *n,
            )?;
            blob(m, *weights, DType::I8, packed(*k, *n, true))?;
            blob(m, *col_sums, DType::I32, *n)?;
            blob(m, *bias, DType::I32, *n)?;
            blob(m, *scale, DType::F32, *n)?;
            check_out(out)
        }
        Op::Pool {
            x,
            y,
            kind,
            window: w,
        } => {
            check_window(w)?;
            let dtype = m.values[*x].dtype;
            if dtype == DType::U8 && *kind != PoolKind::Max {
                return Err("only max pooling runs on u8 values".to_string());
            }
            if w.c_in != w.c_out || w.groups != 1 {
                return Err("pooling keeps the channel count".to_string());
            }
            // Every window overlaps the input: none lies wholly in the padding.
            let overlaps = |pad: usize, k: usize, d: usize, out: usize, s: usize, size: usize| {
                pad <= (k - 1) * d && (out - 1) * s < size + pad
            };
            if !overlaps(w.pad[0], w.kh, w.dilation[0], w.h_out, w.stride[0], w.h_in)
                || !overlaps(w.pad[1], w.kw, w.dilation[1], w.w_out, w.stride[1], w.w_in)
            {
                return Err(format!(
                    "pooling window ({w}) has windows wholly in the padding"
                ));
            }
            check_pool_work(w)?;
            dims_eq(value(m, *x, dtype)?, &[w.c_in, w.h_in, w.w_in], "input")?;
            dims_eq(value(m, *y, dtype)?, &[w.c_out, w.h_out, w.w_out], "output")
        }
        Op::QAvgPool {
            x, y, window: w, ..
        } => {
            check_window(w)?;
            if w.c_in != w.c_out || w.groups != 1 {
                return Err("pooling keeps the channel count".to_string());
            }
            check_pool_work(w)?;
            dims_eq(value(m, *x, DType::U8)?, &[w.c_in, w.h_in, w.w_in], "input")?;
            dims_eq(
                value(m, *y, DType::U8)?,
                &[w.c_out, w.h_out, w.w_out],
                "output",
            )
        }
        Op::GlobalAvgPool { x, y } => {
            let xv = value(m, *x, DType::F32)?;
            let yv = value(m, *y, DType::F32)?;
            if xv.dims.len() < 2 || yv.len() != xv.dims[0] {
                return Err(format!(
                    "input {:?} and output {:?} are not NC... and NC",
                    xv.dims, yv.dims
                ));
            }
            Ok(())
        }
        Op::Unary { x, y, .. } | Op::Softmax { x, y, .. } | Op::LayerNorm { x, y, .. } => {
            let xv = value(m, *x, DType::F32)?;
            dims_eq(value(m, *y, DType::F32)?, &xv.dims, "output")?;
            match op {
                Op::Softmax { axis, .. } if *axis == 0 || *axis > xv.dims.len() => {
                    Err(format!("softmax axis {axis} of rank {}", xv.dims.len() + 1))
                }
                Op::LayerNorm {
                    size,
                    gamma,
                    beta,
                    epsilon,
                    ..
                } => {
                    if !(epsilon.is_finite() && *epsilon >= 0.0) {
                        return Err(format!(
                            "epsilon {epsilon} is not a finite number of at least 0"
                        ));
                    }
                    if *size == 0 || xv.len() % size != 0 {
                        return Err(format!(
                            "normalized size {size} does not divide {:?}",
                            xv.dims
                        ));
                    }
                    blob(m, *gamma, DType::F32, *size)?;
                    beta.map_or(Ok(()), |b| blob(m, b, DType::F32, *size))
                }
                Op::Unary {
                    f: UnaryFn::Clip { lo, hi },
                    ..
                } => check_clamp(*lo, *hi),
                Op::Unary {
                    f: UnaryFn::LeakyRelu { alpha },
                    ..
                } if !alpha.is_finite() => Err(format!("alpha {alpha} is not finite")),
                Op::Unary {
                    f: UnaryFn::HardSigmoid { alpha, beta },
                    ..
                } if !(alpha.is_finite() && beta.is_finite()) => {
                    Err(format!("alpha {alpha} or beta {beta} is not finite"))
                }
                _ => Ok(()),
            }
        }
        Op::Lut { x, y, table } => {
            let xv = value(m, *x, DType::U8)?;
            dims_eq(value(m, *y, DType::U8)?, &xv.dims, "output")?;
            if table.len() != 256 {
                return Err(format!("table of {} entries, expected 256", table.len()));
            }
            Ok(())
        }
        Op::Binary { a, b, y, .. } => {
            let yv = value(m, *y, DType::F32)?;
            let full: Vec<usize> = std::iter::once(1).chain(yv.dims.iter().copied()).collect();
            for operand in [a, b] {
                let dims = match operand {
                    Operand::Value(v) => {
                        let dims = &value(m, *v, DType::F32)?.dims;
                        std::iter::once(1).chain(dims.iter().copied()).collect()
                    }
                    Operand::Const { dims, .. } => dims.clone(),
                };
                if !broadcasts_to(&dims, &full) {
                    return Err(format!("operand {dims:?} does not broadcast to {full:?}"));
                }
                // Checked after broadcasting, which bounds the product by the output's.
                if let Operand::Const { blob: bl, dims } = operand {
                    blob(m, *bl, DType::F32, dims.iter().product())?;
                }
            }
            Ok(())
        }
        Op::ChannelAffine { x, y, scale, shift } => {
            let xv = value(m, *x, DType::F32)?;
            dims_eq(value(m, *y, DType::F32)?, &xv.dims, "output")?;
            let Some(&channels) = xv.dims.first() else {
                return Err("input has no channel axis".to_string());
            };
            blob(m, *scale, DType::F32, channels)?;
            blob(m, *shift, DType::F32, channels)
        }
        Op::Quantize { x, y, scale, .. } | Op::Dequantize { x, y, scale, .. } => {
            let (from, to) = match op {
                Op::Quantize { .. } => (DType::F32, DType::U8),
                _ => (DType::U8, DType::F32),
            };
            let xv = value(m, *x, from)?;
            dims_eq(value(m, *y, to)?, &xv.dims, "output")?;
            if !(scale.is_finite() && *scale > 0.0) {
                return Err(format!("scale {scale} is not a positive finite number"));
            }
            Ok(())
        }
        Op::Copy { x, y } => {
            let xv = &m.values[*x];
            let yv = value(m, *y, xv.dtype)?;
            if xv.len() != yv.len() {
                return Err(format!("reshape of {:?} into {:?}", xv.dims, yv.dims));
            }
            Ok(())
        }
        Op::Transpose { x, y, perm } => {
            let xv = &m.values[*x];
            let yv = value(m, *y, xv.dtype)?;
            let mut seen = vec![false; xv.dims.len()];
            if perm.len() != xv.dims.len()
                || perm
                    .iter()
                    .any(|&p| p >= seen.len() || std::mem::replace(&mut seen[p], true))
            {
                return Err(format!("permutation {perm:?} of rank {}", xv.dims.len()));
            }
            let dims: Vec<usize> = perm.iter().map(|&p| xv.dims[p]).collect();
            dims_eq(yv, &dims, "output")
        }
        Op::Concat { xs, y, axis } => {
            let yv = &m.values[*y];
            let a = axis
                .checked_sub(1)
                .filter(|&a| a < yv.dims.len())
                .ok_or_else(|| format!("concat axis {axis}"))?;
            let mut total = 0;
            for &x in xs {
                let xv = value(m, x, yv.dtype)?;
                if xv.dims.len() != yv.dims.len()
                    || xv
                        .dims
                        .iter()
                        .zip(&yv.dims)
                        .enumerate()
                        .any(|(i, (p, q))| i != a && p != q)
                {
                    return Err(format!(
                        "input {:?} does not fit output {:?}",
                        xv.dims, yv.dims
                    ));
                }
                total += xv.dims[a];
            }
            if xs.is_empty() || total != yv.dims[a] {
                return Err(format!(
                    "inputs sum to {total} along axis {axis}, output has {}",
                    yv.dims[a]
                ));
            }
            Ok(())
        }
        Op::Gather {
            x,
            y,
            table,
            rows,
            width,
        } => {
            let xv = value(m, *x, DType::F32)?;
            let yv = value(m, *y, DType::F32)?;
            let count = rows
                .checked_mul(*width)
                .ok_or_else(|| format!("a table of {rows} x {width} elements overflows"))?;
            blob(m, *table, DType::F32, count)?;
            if xv.len().checked_mul(*width) != Some(yv.len()) {
                return Err(format!(
                    "output {:?} for indices {:?} and width {width}",
                    yv.dims, xv.dims
                ));
            }
            Ok(())
        }
    }
}

fn check_dense(x: &Value, y: &Value, k: usize, n: usize) -> Result<(), String> {
    let (Some(&xk), Some(&yn)) = (x.dims.last(), y.dims.last()) else {
        return Err("dense values need at least one dimension".to_string());
    };
    if xk != k || yn != n || x.len() / k != y.len() / n {
        return Err(format!(
            "input {:?} and output {:?} do not match k={k}, n={n}",
            x.dims, y.dims
        ));
    }
    Ok(())
}

fn out_dtype(out: &QuantOut) -> DType {
    match out {
        QuantOut::U8 { .. } => DType::U8,
        QuantOut::F32 { .. } => DType::F32,
    }
}

fn check_out(out: &QuantOut) -> Result<(), String> {
    match out {
        QuantOut::U8 { lo, hi, .. } if lo > hi => Err(format!("clamp [{lo}, {hi}] is empty")),
        QuantOut::F32 { lo, hi } => check_clamp(*lo, *hi),
        _ => Ok(()),
    }
}

/// A float convolution's input and output values: f32, with the window's dimensions.
fn float_conv_values(
    m: &Manifest,
    x: ValueId,
    y: ValueId,
    w: &Window,
    pool: bool,
) -> Result<(), String> {
    dims_eq(value(m, x, DType::F32)?, &[w.c_in, w.h_in, w.w_in], "input")?;
    dims_eq(value(m, y, DType::F32)?, &conv_out_dims(w, pool)?, "output")
}

/// A convolution's output dimensions, halved by a fused 2x2 max pool (which needs them
/// even).
fn conv_out_dims(w: &Window, pool: bool) -> Result<[usize; 3], String> {
    if !pool {
        return Ok([w.c_out, w.h_out, w.w_out]);
    }
    if w.h_out % 2 == 1 || w.w_out % 2 == 1 {
        return Err(format!(
            "window ({w}): a fused 2x2 max pool needs an even output, got {} x {}",
            w.h_out, w.w_out
        ));
    }
    Ok([w.c_out, w.h_out / 2, w.w_out / 2])
}

/// A float convolution's weights (`count` values, f32 or f16) and optional f32 bias of
/// `c_out` values.
fn float_conv_blobs(
    m: &Manifest,
    weights: &Weights,
    count: usize,
    bias: Option<BlobId>,
    c_out: usize,
) -> Result<(), String> {
    match weights {
        Weights::F32(b) => blob(m, *b, DType::F32, count)?,
        Weights::F16(b) => blob(m, *b, DType::F16, count)?,
    }
    if let Some(b) = bias {
        blob(m, b, DType::F32, c_out)?;
    }
    Ok(())
}

fn check_clamp(lo: f32, hi: f32) -> Result<(), String> {
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(format!("clamp [{lo}, {hi}] is empty"));
    }
    // No bound at all is written as an infinity; a lower bound of +inf (or an upper one of
    // -inf) would make every output infinite, and every call would fail.
    if lo == f32::INFINITY || hi == f32::NEG_INFINITY {
        return Err(format!(
            "clamp [{lo}, {hi}] makes every output infinite (a bound beyond f32's range?)"
        ));
    }
    Ok(())
}

/// Whether `from` broadcasts to `to` numpy-style (right-aligned, sizes equal or 1).
pub(crate) fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(&f, &t)| f == t || f == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiled::ir::Blob;

    /// A manifest of one Winograd convolution, 8 -> 8 channels over 5 x 7 with padding 1,
    /// whose weight blob holds `weights` f32 elements.
    fn winograd(window: Window, weights: u64) -> Manifest {
        let (c_in, c_out) = (window.c_in, window.c_out);
        let (h, w) = (window.h_out, window.w_out);
        Manifest {
            producer: String::new(),
            source_sha256: String::new(),
            metadata: Vec::new(),
            params: 0,
            source_operators: Vec::new(),
            values: vec![
                Value {
                    dtype: DType::F32,
                    dims: vec![c_in, window.h_in, window.w_in],
                },
                Value {
                    dtype: DType::F32,
                    dims: vec![c_out, h, w],
                },
            ],
            blobs: vec![Blob {
                offset: 0,
                len: weights * 4,
                dtype: DType::F32,
            }],
            ops: vec![Op::WinogradConv {
                x: 0,
                y: 1,
                window,
                weights: Weights::F32(0),
                bias: None,
                lo: f32::NEG_INFINITY,
                hi: f32::INFINITY,
                pool: false,
            }],
            input: 0,
            output: 1,
        }
    }

    /// [`winograd`] with a fused 2x2 max pool, its output value `[c_out, h, w]`.
    fn pooled(window: Window, h: usize, w: usize) -> Manifest {
        let c_out = window.c_out;
        let mut m = winograd(window, 16 * 8 * 8);
        if let Op::WinogradConv { pool, .. } = &mut m.ops[0] {
            *pool = true;
        }
        m.values[1].dims = vec![c_out, h, w];
        m
    }

    fn window() -> Window {
        Window {
            c_in: 8,
            c_out: 8,
            h_in: 5,
            w_in: 7,
            h_out: 5,
            w_out: 7,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            pad: [1, 1],
            dilation: [1, 1],
            groups: 1,
        }
    }

    /// [`window`] with an even output, 6 x 8.
    fn even_window() -> Window {
        Window {
            h_in: 6,
            w_in: 8,
            h_out: 6,
            w_out: 8,
            ..window()
        }
    }

    #[test]
    fn a_well_formed_winograd_convolution_passes() {
        Plan::new(winograd(window(), 16 * 8 * 8)).unwrap();
        let even = even_window();
        Plan::new(pooled(even, 3, 4)).unwrap();
    }

    #[test]
    fn a_fused_pool_needs_an_even_output_and_a_halved_value() {
        let err = Plan::new(pooled(window(), 2, 3)).unwrap_err();
        assert!(err.contains("needs an even output, got 5 x 7"), "{err}");
        let even = even_window();
        let err = Plan::new(pooled(even, 6, 8)).unwrap_err();
        assert!(err.contains("output has dimensions"), "{err}");
    }

    /// An integer 3x3 convolution of `[8, 6, 8]` u8 values with a fused max pool, writing
    /// `out` into a value of `dims`.
    fn int8_pooled(out: QuantOut, dims: Vec<usize>) -> Manifest {
        let even = even_window();
        let blob = |len: usize, dtype: DType| Blob {
            offset: 0,
            len: (len * dtype.size()) as u64,
            dtype,
        };
        let dtype = out_dtype(&out);
        let value = |dtype, dims: &[usize]| Value {
            dtype,
            dims: dims.to_vec(),
        };
        // f32 in, quantized; out dequantized when u8.
        let mut ops = vec![Op::Quantize {
            x: 0,
            y: 1,
            scale: 1.0,
            zero_point: 0,
        }];
        let mut values = vec![
            value(DType::F32, &[8, 6, 8]),
            value(DType::U8, &[8, 6, 8]),
            value(dtype, &dims),
        ];
        ops.push(Op::QConv {
            x: 1,
            y: 2,
            window: even,
            x_zero_point: 0,
            weights: 0,
            row_sums: 1,
            bias: 2,
            scale: 3,
            out,
            pool: true,
        });
        if dtype == DType::U8 {
            values.push(value(DType::F32, &dims));
            ops.push(Op::Dequantize {
                x: 2,
                y: 3,
                scale: 1.0,
                zero_point: 0,
            });
        }
        Manifest {
            output: values.len() - 1,
            values,
            blobs: vec![
                blob(8 * padded_k(72), DType::I8),
                blob(8, DType::I32),
                blob(8, DType::I32),
                blob(8, DType::F32),
            ],
            ops,
            ..winograd(window(), 0)
        }
    }

    #[test]
    fn an_int8_convolution_pools_only_into_a_halved_u8_value() {
        let u8_out = QuantOut::U8 {
            zero_point: 0,
            lo: 0,
            hi: 255,
        };
        Plan::new(int8_pooled(u8_out.clone(), vec![8, 3, 4])).unwrap();
        let err = Plan::new(int8_pooled(u8_out, vec![8, 6, 8])).unwrap_err();
        assert!(err.contains("output has dimensions"), "{err}");
        let f32_out = QuantOut::F32 {
            lo: f32::NEG_INFINITY,
            hi: f32::INFINITY,
        };
        let err = Plan::new(int8_pooled(f32_out, vec![8, 3, 4])).unwrap_err();
        assert!(err.contains("needs the convolution's u8 output"), "{err}");
    }

    #[test]
    fn malformed_winograd_convolutions_are_refused_with_a_reason() {
        let cases = [
            (
                winograd(window(), 9 * 8 * 8),
                "holds 576 elements, expected 1024",
            ),
            (
                winograd(
                    Window {
                        kh: 5,
                        kw: 5,
                        pad: [2, 2],
                        ..window()
                    },
                    16 * 8 * 8,
                ),
                "needs a 3x3 kernel",
            ),
            (
                winograd(
                    Window {
                        stride: [2, 2],
                        h_out: 3,
                        w_out: 4,
                        ..window()
                    },
                    16 * 8 * 8,
                ),
                "stride 1",
            ),
            (
                winograd(
                    Window {
                        h_out: 9,
                        ..window()
                    },
                    16 * 8 * 8,
                ),
                "does not follow",
            ),
        ];
        for (manifest, reason) in cases {
            let err = Plan::new(manifest).unwrap_err();
            assert!(err.contains(reason), "{err}");
        }
        // An input value whose shape is not the window's.
        let mut m = winograd(window(), 16 * 8 * 8);
        m.values[0].dims = vec![8, 5, 6];
        let err = Plan::new(m).unwrap_err();
        assert!(err.contains("input has dimensions"), "{err}");
    }
}
