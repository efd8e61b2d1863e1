//! Running a compiled student: a validated plan, its weights in place, and reusable state.
//!
//! Each call borrows a [`State`] (the activation arena and the scratch buffers the kernels
//! need) from a pool, so after the first call at a batch size nothing is allocated but the
//! returned logits, and concurrent callers each get their own state.

use std::ops::Range;
use std::sync::Mutex;

use bytemuck::{Pod, Zeroable};
use half::f16;
use half::slice::HalfFloatSliceExt;
use student_kernels::{self as k, Bias, Isa};

use super::ir::{
    BinaryFn, BlobId, DType, Op, Operand, PoolKind, QuantOut, UnaryFn, Weights, Window,
};
use super::plan::{Plan, padded_k};

/// A cache line of bytes: the unit of aligned buffers, so any element type can be viewed
/// in place.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
pub(crate) struct Line(pub [u8; 64]);

/// An aligned, zeroed byte buffer of at least `len` bytes.
pub(crate) fn lines(len: usize) -> Vec<Line> {
    vec![Line([0; 64]); len.div_ceil(64)]
}

type RunResult<T> = Result<T, String>;

/// What one call needs besides the model: the arena and the kernels' scratch space.
struct State {
    batch: usize,
    arena: Vec<Line>,
    /// Per op: a convolution's unfolded input (im2col, `[k, positions]` row-major), or
    /// for one unfolded straight into panels its input planes with margins. The im2col
    /// padding positions are written once, when the state is made; each call writes only
    /// the positions that read the image.
    cols: Vec<Vec<Line>>,
    /// The unfolded input packed in the kernels' panel layout.
    packed: Vec<Line>,
    /// i32 accumulators of the integer kernels.
    acc: Vec<i32>,
    /// fp16 convolution weights widened to f32.
    widened: Vec<f32>,
    /// The Winograd convolutions' padded input planes and transformed tiles (see
    /// [`winograd_scratch`]).
    winograd: Vec<f32>,
    /// One sample's output of a convolution with a fused pool, before pooling, where the
    /// convolution runs unfused (see [`Op::Conv`]'s step).
    unpooled: Vec<f32>,
    /// u8 rows of a dense input padded to a multiple of 4.
    rows: Vec<Line>,
    /// Per op: the lane masks of a convolution unfolded straight into panels, per panel
    /// and tap (see [`Shifted::fill_masks`]), made with the state; empty for other ops.
    masks: Vec<Vec<u16>>,
}

/// A compiled student ready to run.
pub(crate) struct Executor {
    plan: Plan,
    isa: Isa,
    /// Where the data section lies in the bytes handed to [`Executor::run`].
    data: Range<usize>,
    pool: Mutex<Vec<State>>,
    /// Scratch sizes per sample and per call, from the plan.
    needs: Needs,
}

#[derive(Debug, Default, Clone, Copy)]
struct Needs {
    packed_bytes: usize,
    acc_per_call: usize,
    acc_per_sample: usize,
    widened: usize,
    rows_per_sample: usize,
    masks: usize,
    unpooled: usize,
}

impl Executor {
    pub(crate) fn new(plan: Plan, data: Range<usize>, isa: Isa) -> Executor {
        let needs = needs(&plan);
        Executor {
            plan,
            isa,
            data,
            pool: Mutex::new(Vec::new()),
            needs,
        }
    }

    pub(crate) fn isa(&self) -> Isa {
        self.isa
    }

    /// The bytes one call state takes at `batch` (what `take_state` allocates), `None` on
    /// overflow. Checked against the limits before any state is made.
    pub(crate) fn scratch_bytes(&self, batch: usize) -> Option<u64> {
        let n = self.needs;
        let winograd = winograd_scratch(&self.plan, batch)? as u64;
        let batch = batch as u64;
        let per_batch = |per: usize| (per as u64).checked_mul(batch);
        let acc = (n.acc_per_call as u64).max(per_batch(n.acc_per_sample)?);
        let mut total = per_batch(self.plan.arena_per_sample)?
            .checked_add(n.packed_bytes as u64)?
            .checked_add(acc.checked_mul(4)?)?
            .checked_add((n.widened as u64).checked_mul(4)?)?
            .checked_add(per_batch(n.rows_per_sample)?)?
            .checked_add((n.masks as u64).checked_mul(2)?)?
            .checked_add((n.unpooled as u64).checked_mul(4)?)?
            .checked_add(winograd.checked_mul(4)?)?;
        for op in &self.plan.manifest.ops {
            total = total.checked_add(unfolded_bytes(op)?)?;
        }
        Some(total)
    }

    pub(crate) fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Runs `batch` samples; `bytes` is the whole file the plan was read from.
    pub(crate) fn run(&self, bytes: &[u8], input: &[f32], batch: usize) -> RunResult<Vec<f32>> {
        let m = &self.plan.manifest;
        let per = m.values[m.input].len();
        if input.len() != per * batch || batch == 0 {
            return Err(format!(
                "{} input values for batch {batch} of {per}",
                input.len()
            ));
        }
        let data = bytes
            .get(self.data.clone())
            .ok_or("the model's data section is out of range")?;
        let mut state = self.take_state(batch);
        let result = self.run_in(&mut state, data, input, batch);
        if let Ok(mut pool) = self.pool.lock() {
            pool.push(state);
        }
        result
    }

    fn take_state(&self, batch: usize) -> State {
        let found = self.pool.lock().ok().and_then(|mut pool| {
            let at = pool.iter().position(|s| s.batch == batch)?;
            Some(pool.swap_remove(at))
        });
        found.unwrap_or_else(|| {
            let n = self.needs;
            State {
                batch,
                arena: lines(self.plan.arena_per_sample * batch),
                cols: self.plan.manifest.ops.iter().map(unfolded).collect(),
                packed: lines(n.packed_bytes),
                acc: vec![0; n.acc_per_call.max(n.acc_per_sample * batch)],
                widened: vec![0.0; n.widened],
                // Checked by `scratch_bytes` before any state is made.
                winograd: vec![0.0; winograd_scratch(&self.plan, batch).unwrap_or(0)],
                unpooled: vec![0.0; n.unpooled],
                rows: lines(n.rows_per_sample * batch),
                masks: self.plan.manifest.ops.iter().map(op_masks).collect(),
            }
        })
    }

    fn run_in(
        &self,
        st: &mut State,
        data: &[u8],
        input: &[f32],
        batch: usize,
    ) -> RunResult<Vec<f32>> {
        let m = &self.plan.manifest;
        let arena = bytemuck::cast_slice_mut::<Line, u8>(&mut st.arena);
        let input_range = self.range(m.input, batch);
        f32s_mut(&mut arena[input_range])?.copy_from_slice(input);
        for (i, op) in m.ops.iter().enumerate() {
            self.step(i, op, st, data, batch)
                .map_err(|e| format!("op {i} ({}): {e}", op.name()))?;
        }
        let arena = bytemuck::cast_slice::<Line, u8>(&st.arena);
        Ok(f32s(&arena[self.range(m.output, batch)])?.to_vec())
    }

    fn range(&self, v: usize, batch: usize) -> Range<usize> {
        let start = self.plan.slots[v] * batch;
        start..start + self.plan.value_bytes(v, batch)
    }

    /// A float op's weights as f32: in place when stored so, widened into `widened` when
    /// stored as f16.
    fn f32_weights<'d>(
        &self,
        data: &'d [u8],
        weights: &Weights,
        widened: &'d mut [f32],
    ) -> RunResult<&'d [f32]> {
        match weights {
            Weights::F32(b) => self.blob(data, *b),
            Weights::F16(b) => {
                let half: &[f16] = self.blob(data, *b)?;
                let wide = widened.get_mut(..half.len()).ok_or("scratch too small")?;
                // Vectorized (F16C where the CPU has it): one value at a time, the
                // widening cost the student's fp16 copy 1.5x its fp32 time.
                half.convert_to_f32_slice(wide);
                Ok(wide)
            }
        }
    }

    fn blob<'d, T: Pod>(&self, data: &'d [u8], b: BlobId) -> RunResult<&'d [T]> {
        let decl = &self.plan.manifest.blobs[b];
        let bytes = data
            .get(decl.offset as usize..(decl.offset + decl.len) as usize)
            .ok_or("a blob lies outside the data section")?;
        bytemuck::try_cast_slice(bytes).map_err(|e| format!("blob {b}: {e}"))
    }

    fn step(&self, i: usize, op: &Op, st: &mut State, data: &[u8], batch: usize) -> RunResult<()> {
        let isa = self.isa;
        let values = &self.plan.manifest.values;
        let y_range = self.range(op.output(), batch);
        if let Op::Copy { x, .. } = op {
            // A reshape whose output shares its input's slot moves nothing.
            if self.range(*x, batch) == y_range {
                return Ok(());
            }
        }
        let arena = bytemuck::cast_slice_mut::<Line, u8>(&mut st.arena);
        let (before, rest) = arena.split_at_mut(y_range.start);
        let (out, after) = rest.split_at_mut(y_range.len());
        // Inputs never share the output's slot: they are live while it is written.
        let read = |v: usize| -> RunResult<&[u8]> {
            let r = self.range(v, batch);
            if r.end <= y_range.start {
                Ok(&before[r])
            } else if r.start >= y_range.end {
                let base = y_range.end;
                Ok(&after[r.start - base..r.end - base])
            } else {
                Err(format!("value {v} overlaps the output's slot"))
            }
        };
        match op {
            Op::Conv {
                x,
                window: w,
                weights,
                bias,
                lo,
                hi,
                pool,
                ..
            } => {
                let x = f32s(read(*x)?)?;
                let y = f32s_mut(out)?;
                let weights = self.f32_weights(data, weights, &mut st.widened)?;
                let bias: Option<&[f32]> = bias.map(|b| self.blob(data, b)).transpose()?;
                if fits_direct(w) && k::Conv3x3::direct_is_fast(isa) {
                    let shape = conv3x3_shape(w, *pool);
                    return k::conv3x3_direct_f32(
                        isa, &shape, batch, x, weights, bias, *lo, *hi, y,
                    )
                    .map_err(|e| e.to_string());
                }
                let col = st.cols.get_mut(i).ok_or("no im2col buffer")?;
                let masks = st.masks.get(i).map_or(&[][..], Vec::as_slice);
                if !*pool {
                    return conv_f32(
                        isa,
                        w,
                        x,
                        y,
                        weights,
                        bias,
                        *lo,
                        *hi,
                        batch,
                        col,
                        &mut st.packed,
                        masks,
                    );
                }
                // Sample by sample, so the unpooled output stays in cache for the pool.
                let (plane_in, plane_out) = (w.c_in * w.h_in * w.w_in, w.c_out * w.h_out * w.w_out);
                let p = k::Pool2x2 {
                    planes: w.c_out,
                    h_in: w.h_out,
                    w_in: w.w_out,
                    h_out: w.h_out / 2,
                    w_out: w.w_out / 2,
                };
                let unpooled = st
                    .unpooled
                    .get_mut(..plane_out)
                    .ok_or("scratch too small")?;
                let pooled = plane_out / 4;
                for (xs, ys) in x.chunks_exact(plane_in).zip(y.chunks_exact_mut(pooled)) {
                    conv_f32(
                        isa,
                        w,
                        xs,
                        unpooled,
                        weights,
                        bias,
                        *lo,
                        *hi,
                        1,
                        col,
                        &mut st.packed,
                        masks,
                    )?;
                    k::max_pool_2x2_f32(isa, p, unpooled, ys).map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Op::WinogradConv {
                x,
                window: w,
                weights,
                bias,
                lo,
                hi,
                pool,
                ..
            } => {
                let x = f32s(read(*x)?)?;
                let y = f32s_mut(out)?;
                let u = self.f32_weights(data, weights, &mut st.widened)?;
                let bias: Option<&[f32]> = bias.map(|b| self.blob(data, b)).transpose()?;
                k::conv3x3_winograd_f32(
                    isa,
                    &conv3x3_shape(w, *pool),
                    batch,
                    x,
                    u,
                    bias,
                    *lo,
                    *hi,
                    y,
                    &mut st.winograd,
                )
                .map_err(|e| e.to_string())
            }
            Op::Dense {
                x,
                k: kk,
                n,
                weights,
                bias,
                lo,
                hi,
                ..
            } => {
                let x = f32s(read(*x)?)?;
                let y = f32s_mut(out)?;
                let rows = x.len() / kk;
                let bias = match bias {
                    Some(b) => Bias::PerCol(self.blob(data, *b)?),
                    None => Bias::None,
                };
                match weights {
                    Weights::F32(b) => k::sgemm(
                        isa,
                        rows,
                        *n,
                        *kk,
                        x,
                        *kk,
                        self.blob(data, *b)?,
                        bias,
                        *lo,
                        *hi,
                        y,
                        *n,
                    ),
                    Weights::F16(b) => k::hgemm(
                        isa,
                        rows,
                        *n,
                        *kk,
                        x,
                        *kk,
                        self.blob(data, *b)?,
                        bias,
                        *lo,
                        *hi,
                        y,
                        *n,
                    ),
                }
                .map_err(|e| e.to_string())
            }
            Op::QConv {
                x,
                window: w,
                x_zero_point,
                weights,
                row_sums,
                bias,
                scale,
                out: q,
                pool,
                ..
            } => {
                let x = read(*x)?;
                let weights: &[i8] = self.blob(data, *weights)?;
                let sums: &[i32] = self.blob(data, *row_sums)?;
                let bias: &[i32] = self.blob(data, *bias)?;
                let scale: &[f32] = self.blob(data, *scale)?;
                let (cin_g, cout_g) = (w.c_in / w.groups, w.c_out / w.groups);
                let (kk, kp, n) = (w.k(), padded_k(w.k()), w.h_out * w.w_out);
                let x_per = w.c_in * w.h_in * w.w_in;
                // A fused pool keeps one output of each 2x2 window (the plan checked that
                // the output is u8 and of even size).
                let pooled = pool.then(|| k::Pool2x2 {
                    planes: cout_g,
                    h_in: w.h_out,
                    w_in: w.w_out,
                    h_out: w.h_out / 2,
                    w_out: w.w_out / 2,
                });
                let n_out = pooled.map_or(n, |p| p.h_out * p.w_out);
                let y_per = w.c_out * n_out;
                // The im2col padding holds the zero point since the buffer was made.
                let col = bytemuck::cast_slice_mut::<Line, u8>(
                    st.cols.get_mut(i).ok_or("no im2col buffer")?,
                );
                let col = col.get_mut(..kk * n).ok_or("scratch too small")?;
                let packed = bytemuck::cast_slice_mut::<Line, u8>(&mut st.packed);
                let packed = packed
                    .get_mut(..k::packed_len_q8(kk, n))
                    .ok_or("scratch too small")?;
                // As for f32 (see `conv_f32`): stride 1 with equal row widths unfolds
                // straight into the packed panels, with the masks made with the state.
                let masks = st.masks.get(i).map_or(&[][..], Vec::as_slice);
                let shifted = Shifted::new(w, kk, n).filter(|_| !masks.is_empty());
                for s in 0..batch {
                    let xs = &x[s * x_per..(s + 1) * x_per];
                    for g in 0..w.groups {
                        let xg =
                            &xs[g * cin_g * w.h_in * w.w_in..(g + 1) * cin_g * w.h_in * w.w_in];
                        let unfolded = shifted.as_ref().is_some_and(|sh| {
                            unfold_packed_u8(isa, sh, masks, w, xg, n, packed, col, *x_zero_point)
                        });
                        if !unfolded {
                            im2col(w, xg, col);
                            k::pack_b_u8(col, kk, n, packed).map_err(|e| e.to_string())?;
                        }
                        let rows = g * cout_g..(g + 1) * cout_g;
                        let acc = &mut st.acc[..cout_g * n];
                        k::qgemm_s8u8(
                            isa,
                            cout_g,
                            n,
                            kk,
                            &weights[rows.start * kp..rows.end * kp],
                            kp,
                            packed,
                            &sums[rows.clone()],
                            acc,
                            n,
                        )
                        .map_err(|e| e.to_string())?;
                        let at = s * y_per + rows.start * n_out..s * y_per + rows.end * n_out;
                        let (bias, scale) = (&bias[rows.clone()], &scale[rows.clone()]);
                        match (pooled, q) {
                            (Some(p), QuantOut::U8 { zero_point, lo, hi }) => {
                                let dst = out.get_mut(at).ok_or("output out of range")?;
                                k::requantize_max_pool_2x2_u8(
                                    isa,
                                    p,
                                    acc,
                                    bias,
                                    scale,
                                    *zero_point as i32,
                                    *lo,
                                    *hi,
                                    dst,
                                )
                                .map_err(|e| e.to_string())?;
                            }
                            (Some(_), QuantOut::F32 { .. }) => {
                                return Err("a fused max pool needs a u8 output".into());
                            }
                            (None, _) => epilogue(
                                isa,
                                q,
                                cout_g,
                                n,
                                acc,
                                k::IntBias::PerRow(bias),
                                k::Scale::PerRow(scale),
                                out,
                                at,
                            )?,
                        }
                    }
                }
                Ok(())
            }
            Op::QDense {
                x,
                k: kk,
                n,
                x_zero_point: _,
                weights,
                col_sums,
                bias,
                scale,
                out: q,
                ..
            } => {
                let x = read(*x)?;
                let rows = x.len() / kk;
                let kp = padded_k(*kk);
                let a: &[u8] = if kp == *kk {
                    x
                } else {
                    let padded = bytemuck::cast_slice_mut::<Line, u8>(&mut st.rows);
                    let padded = padded.get_mut(..rows * kp).ok_or("scratch too small")?;
                    for (dst, src) in padded.chunks_exact_mut(kp).zip(x.chunks_exact(*kk)) {
                        dst[..*kk].copy_from_slice(src);
                    }
                    padded
                };
                let acc = st.acc.get_mut(..rows * n).ok_or("scratch too small")?;
                k::qgemm_u8s8(
                    isa,
                    rows,
                    *n,
                    *kk,
                    a,
                    kp,
                    self.blob(data, *weights)?,
                    self.blob(data, *col_sums)?,
                    acc,
                    *n,
                )
                .map_err(|e| e.to_string())?;
                let len = rows * n;
                epilogue(
                    isa,
                    q,
                    rows,
                    *n,
                    acc,
                    k::IntBias::PerCol(self.blob(data, *bias)?),
                    k::Scale::PerCol(self.blob(data, *scale)?),
                    out,
                    0..len,
                )
            }
            Op::Pool {
                x, kind, window, ..
            } => {
                let two = pool_2x2(window, batch);
                match (values[*x].dtype, kind, two) {
                    (DType::U8, _, Some(p)) => {
                        k::max_pool_2x2_u8(isa, p, read(*x)?, out).map_err(|e| e.to_string())?
                    }
                    (DType::U8, _, None) => max_pool(window, batch, read(*x)?, out),
                    (_, PoolKind::Max, Some(p)) => {
                        k::max_pool_2x2_f32(isa, p, f32s(read(*x)?)?, f32s_mut(out)?)
                            .map_err(|e| e.to_string())?
                    }
                    (_, PoolKind::Max, None) => {
                        max_pool(window, batch, f32s(read(*x)?)?, f32s_mut(out)?)
                    }
                    (_, PoolKind::Avg { count_pad }, _) => {
                        avg_pool(window, batch, f32s(read(*x)?)?, f32s_mut(out)?, *count_pad)
                    }
                }
                Ok(())
            }
            Op::QAvgPool {
                x,
                window,
                zero_point,
                count_pad,
                ..
            } => {
                quantized_avg_pool(window, batch, read(*x)?, out, *zero_point, *count_pad);
                Ok(())
            }
            Op::GlobalAvgPool { x, .. } => {
                let x = f32s(read(*x)?)?;
                let y = f32s_mut(out)?;
                let area = x.len() / y.len();
                for (dst, src) in y.iter_mut().zip(x.chunks_exact(area)) {
                    *dst = src.iter().sum::<f32>() / area as f32;
                }
                Ok(())
            }
            Op::Unary { x, f, .. } => {
                let x = f32s(read(*x)?)?;
                let y = f32s_mut(out)?;
                unary(*f, x, y);
                Ok(())
            }
            Op::Lut { x, table, .. } => {
                let x = read(*x)?;
                for (dst, &src) in out.iter_mut().zip(x) {
                    *dst = table[src as usize];
                }
                Ok(())
            }
            Op::Binary { a, b, f, y } => {
                let shape = Dims::with_batch(batch, &values[*y].dims);
                let operand = |o: &Operand| -> RunResult<(&[f32], Dims)> {
                    match o {
                        Operand::Value(v) => {
                            Ok((f32s(read(*v)?)?, Dims::with_batch(batch, &values[*v].dims)))
                        }
                        Operand::Const { blob, dims } => {
                            Ok((self.blob(data, *blob)?, Dims::of(dims)))
                        }
                    }
                };
                let (av, ad) = operand(a)?;
                let (bv, bd) = operand(b)?;
                binary(
                    *f,
                    av,
                    ad.as_slice(),
                    bv,
                    bd.as_slice(),
                    f32s_mut(out)?,
                    shape.as_slice(),
                );
                Ok(())
            }
            Op::Softmax { x, axis, .. } => {
                let xv = &values[*x];
                let size = xv.dims[axis - 1];
                let inner: usize = xv.dims[*axis..].iter().product();
                softmax(f32s(read(*x)?)?, f32s_mut(out)?, size, inner);
                Ok(())
            }
            Op::ChannelAffine {
                x, scale, shift, ..
            } => {
                let channels = values[*x].dims[0];
                let x = f32s(read(*x)?)?;
                let y = f32s_mut(out)?;
                let (scale, shift): (&[f32], &[f32]) =
                    (self.blob(data, *scale)?, self.blob(data, *shift)?);
                let inner = x.len() / batch / channels;
                for (i, (dst, src)) in y
                    .chunks_exact_mut(inner)
                    .zip(x.chunks_exact(inner))
                    .enumerate()
                {
                    let c = i % channels;
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d = s * scale[c] + shift[c];
                    }
                }
                Ok(())
            }
            Op::LayerNorm {
                x,
                size,
                epsilon,
                gamma,
                beta,
                ..
            } => {
                let x = f32s(read(*x)?)?;
                let y = f32s_mut(out)?;
                let gamma: &[f32] = self.blob(data, *gamma)?;
                let beta: Option<&[f32]> = beta.map(|b| self.blob(data, b)).transpose()?;
                for (dst, src) in y.chunks_exact_mut(*size).zip(x.chunks_exact(*size)) {
                    let mean = src.iter().sum::<f32>() / *size as f32;
                    let var =
                        src.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / *size as f32;
                    let inv = 1.0 / (var + epsilon).sqrt();
                    for (i, (d, s)) in dst.iter_mut().zip(src).enumerate() {
                        *d = (s - mean) * inv * gamma[i] + beta.map_or(0.0, |b| b[i]);
                    }
                }
                Ok(())
            }
            Op::Quantize {
                x,
                scale,
                zero_point,
                ..
            } => k::quantize_u8(isa, f32s(read(*x)?)?, *scale, *zero_point, out)
                .map_err(|e| e.to_string()),
            Op::Dequantize {
                x,
                scale,
                zero_point,
                ..
            } => k::dequantize_u8(isa, read(*x)?, *scale, *zero_point, f32s_mut(out)?)
                .map_err(|e| e.to_string()),
            Op::Copy { x, .. } => {
                out.copy_from_slice(read(*x)?);
                Ok(())
            }
            Op::Transpose { x, perm, .. } => {
                let xv = &values[*x];
                match xv.dtype {
                    DType::U8 => transpose(read(*x)?, out, &xv.dims, perm, batch),
                    _ => transpose(f32s(read(*x)?)?, f32s_mut(out)?, &xv.dims, perm, batch),
                }
                Ok(())
            }
            Op::Concat { xs, axis, y } => {
                let size = values[*y].dtype.size();
                let yv = &values[*y];
                let outer = batch * yv.dims[..axis - 1].iter().product::<usize>();
                let inner: usize = yv.dims[*axis..].iter().product::<usize>() * size;
                let mut at = 0;
                for o in 0..outer {
                    for &x in xs {
                        let chunk = values[x].dims[axis - 1] * inner;
                        let src = read(x)?;
                        out[at..at + chunk].copy_from_slice(&src[o * chunk..(o + 1) * chunk]);
                        at += chunk;
                    }
                }
                Ok(())
            }
            Op::Gather {
                x,
                table,
                rows,
                width,
                ..
            } => {
                let x = f32s(read(*x)?)?;
                let y = f32s_mut(out)?;
                let table: &[f32] = self.blob(data, *table)?;
                for (dst, &index) in y.chunks_exact_mut(*width).zip(x) {
                    let row = index as i64;
                    let row = if row < 0 { row + *rows as i64 } else { row };
                    if index.fract() != 0.0 || row < 0 || row >= *rows as i64 {
                        return Err(format!("index {index} is outside a table of {rows} rows"));
                    }
                    let row = row as usize;
                    dst.copy_from_slice(&table[row * width..(row + 1) * width]);
                }
                Ok(())
            }
        }
    }
}

fn f32s(bytes: &[u8]) -> RunResult<&[f32]> {
    bytemuck::try_cast_slice(bytes).map_err(|e| format!("f32 view: {e}"))
}

fn f32s_mut(bytes: &mut [u8]) -> RunResult<&mut [f32]> {
    bytemuck::try_cast_slice_mut(bytes).map_err(|e| format!("f32 view: {e}"))
}

/// Scratch sizes for every op of the plan.
fn needs(plan: &Plan) -> Needs {
    let mut n = Needs::default();
    let values = &plan.manifest.values;
    for op in &plan.manifest.ops {
        match op {
            Op::Conv {
                window: w,
                weights,
                pool,
                ..
            } => {
                if *pool {
                    n.unpooled = n.unpooled.max(w.c_out * w.h_out * w.w_out);
                }
                n.masks += mask_count(op);
                n.packed_bytes = n
                    .packed_bytes
                    .max(k::packed_len_f32(w.k(), w.h_out * w.w_out) * 4);
                if let Weights::F16(_) = weights {
                    n.widened = n.widened.max(w.c_out * w.k());
                }
            }
            Op::WinogradConv {
                window: w,
                weights: Weights::F16(_),
                ..
            } => {
                n.widened = n.widened.max(16 * w.c_out * w.c_in);
            }
            Op::QConv { window: w, .. } => {
                n.masks += mask_count(op);
                let cols = w.h_out * w.w_out;
                n.packed_bytes = n.packed_bytes.max(k::packed_len_q8(w.k(), cols));
                n.acc_per_call = n.acc_per_call.max(w.c_out / w.groups * cols);
            }
            Op::QDense {
                x, k: kk, n: cols, ..
            } => {
                let rows = values[*x].len() / kk;
                n.acc_per_sample = n.acc_per_sample.max(rows * cols);
                n.rows_per_sample = n.rows_per_sample.max(rows * padded_k(*kk));
            }
            _ => {}
        }
    }
    n
}

/// The kernels' description of a 3x3 convolution's window (validated by the plan: 3x3,
/// stride 1, dilation 1, one group for the ops that take it; even output when pooling).
fn conv3x3_shape(w: &Window, pool: bool) -> k::Conv3x3 {
    k::Conv3x3 {
        c_in: w.c_in,
        c_out: w.c_out,
        h_in: w.h_in,
        w_in: w.w_in,
        h_out: w.h_out,
        w_out: w.w_out,
        pad: w.pad,
        pool,
    }
}

/// Whether a float convolution fits the direct kernel: 3x3, stride 1, dilation 1, one
/// group and at most [`DIRECT_MAX_CHANNELS`] input channels (the unfolded GEMM's K of 9
/// to 36 is too short for it to pay).
fn fits_direct(w: &Window) -> bool {
    w.is_3x3_stride_1() && w.c_in <= DIRECT_MAX_CHANNELS
}

/// The most input channels of a convolution [`fits_direct`] takes.
const DIRECT_MAX_CHANNELS: usize = 4;

/// The f32 scratch the Winograd convolutions of `plan` need at `batch` (the largest any
/// one needs: they run one after another), `None` on overflow.
fn winograd_scratch(plan: &Plan, batch: usize) -> Option<usize> {
    plan.manifest
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::WinogradConv { window, pool, .. } => {
                Some(conv3x3_shape(window, *pool).scratch_len(batch))
            }
            _ => None,
        })
        .try_fold(0, |most, len| (len != usize::MAX).then_some(most.max(len)))
}

/// The window of a convolution that unfolds straight into panels: stride 1 with output
/// rows as wide as input rows, not a 1x1 read in place, and at most [`MAX_TAPS`] taps.
fn shifted_window(op: &Op) -> Option<&Window> {
    let w = match op {
        Op::Conv { window, .. } if !is_direct(window) => window,
        Op::QConv { window, .. } => window,
        _ => return None,
    };
    let fits = w.stride == [1, 1] && w.w_out == w.w_in && w.kh * w.kw <= MAX_TAPS;
    fits.then_some(w)
}

/// The lane masks [`op_masks`] makes for `op`: one per panel and tap.
fn mask_count(op: &Op) -> usize {
    shifted_window(op).map_or(0, |w| (w.h_out * w.w_out).div_ceil(k::NR) * w.kh * w.kw)
}

/// The lane masks of `op` when it unfolds straight into panels, else none.
fn op_masks(op: &Op) -> Vec<u16> {
    let Some(w) = shifted_window(op) else {
        return Vec::new();
    };
    let n = w.h_out * w.w_out;
    let mut masks = vec![0; mask_count(op)];
    match Shifted::new(w, w.k(), n) {
        Some(sh) if sh.fill_masks(w, n, &mut masks) => masks,
        _ => Vec::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn epilogue(
    isa: Isa,
    q: &QuantOut,
    m: usize,
    n: usize,
    acc: &[i32],
    bias: k::IntBias<'_>,
    scale: k::Scale<'_>,
    out: &mut [u8],
    at: Range<usize>,
) -> RunResult<()> {
    match q {
        QuantOut::U8 { zero_point, lo, hi } => {
            let dst = out.get_mut(at).ok_or("output out of range")?;
            k::requantize_u8(
                isa,
                m,
                n,
                acc,
                n,
                bias,
                scale,
                *zero_point as i32,
                *lo,
                *hi,
                dst,
                n,
            )
        }
        QuantOut::F32 { lo, hi } => {
            let all = f32s_mut(out)?;
            let dst = all.get_mut(at.start..at.end).ok_or("output out of range")?;
            k::dequantize_acc_f32(isa, m, n, acc, n, bias, scale, *lo, *hi, dst, n)
        }
    }
    .map_err(|e| e.to_string())
}

/// The output positions `lo..hi` along one axis whose input index
/// `o * stride + k * dilation - pad` lies inside `0..size`, clamped to `0..out`.
fn valid_range(
    out: usize,
    size: usize,
    stride: usize,
    offset: usize,
    pad: usize,
) -> (usize, usize) {
    // o * stride + offset >= pad  and  o * stride + offset < size + pad
    let lo = pad.saturating_sub(offset).div_ceil(stride).min(out);
    let hi = if size + pad > offset {
        ((size + pad - offset - 1) / stride + 1).min(out)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// Unfolds one group of one sample (im2col) into the `[k, positions]` matrix `col`,
/// writing only the positions that read the image: the others hold the padding value
/// since the buffer was made (see [`unfolded`]).
fn im2col<T: Copy>(w: &Window, x: &[T], col: &mut [T]) {
    let n = w.h_out * w.w_out;
    let mut rows = col.chunks_exact_mut(n);
    for plane in x.chunks_exact(w.h_in * w.w_in).take(w.c_in / w.groups) {
        for ki in 0..w.kh {
            let (y_lo, y_hi) =
                valid_range(w.h_out, w.h_in, w.stride[0], ki * w.dilation[0], w.pad[0]);
            for kj in 0..w.kw {
                let Some(dst) = rows.next() else { return };
                let (x_lo, x_hi) =
                    valid_range(w.w_out, w.w_in, w.stride[1], kj * w.dilation[1], w.pad[1]);
                if x_lo == x_hi {
                    continue;
                }
                let ix_lo = x_lo * w.stride[1] + kj * w.dilation[1] - w.pad[1];
                for oy in y_lo..y_hi {
                    let iy = oy * w.stride[0] + ki * w.dilation[0] - w.pad[0];
                    let src = &plane[iy * w.w_in + ix_lo..(iy + 1) * w.w_in];
                    let line = &mut dst[oy * w.w_out + x_lo..oy * w.w_out + x_hi];
                    if w.stride[1] == 1 {
                        line.copy_from_slice(&src[..line.len()]);
                    } else {
                        for (d, s) in line.iter_mut().zip(src.iter().step_by(w.stride[1])) {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}

/// The bytes of the buffer [`unfolded`] makes for `op`, `None` on overflow.
fn unfolded_bytes(op: &Op) -> Option<u64> {
    if let Some(bytes) = planes_bytes(op) {
        return Some(bytes as u64);
    }
    let len = |w: &Window, size: u64| {
        [w.k(), w.h_out, w.w_out]
            .iter()
            .try_fold(size, |acc, &d| acc.checked_mul(d as u64))
    };
    match op {
        Op::Conv { window: w, .. } if !is_direct(w) => len(w, 4),
        Op::QConv { window: w, .. } => len(w, 1),
        _ => Some(0),
    }
}

/// The unfolding buffer a convolution needs: room for its input planes and their margins
/// when it unfolds straight into panels ([`planes_bytes`]), else the im2col matrix with
/// its padding positions already holding the padding value (0, or the input's zero point).
fn unfolded(op: &Op) -> Vec<Line> {
    if let Some(bytes) = planes_bytes(op) {
        return lines(bytes);
    }
    match op {
        Op::Conv { window: w, .. } if !is_direct(w) => lines(w.k() * w.h_out * w.w_out * 4),
        Op::QConv {
            window: w,
            x_zero_point,
            ..
        } => {
            let len = w.k() * w.h_out * w.w_out;
            let mut buffer = lines(len);
            bytemuck::cast_slice_mut::<Line, u8>(&mut buffer)[..len].fill(*x_zero_point);
            buffer
        }
        _ => Vec::new(),
    }
}

/// The bytes of the plane copies, margins included, that an f32 convolution unfolded
/// straight into panels reads (`unfold_packed` in [`conv_f32`]); `None` for one that does
/// not unfold that way (the test [`op_masks`] makes), or on overflow. Its im2col matrix
/// would be about `kh * kw` times larger. (The int8 convolution still takes a whole im2col
/// matrix: it slices one before choosing how to unfold.)
fn planes_bytes(op: &Op) -> Option<usize> {
    let Op::Conv { .. } = op else {
        return None;
    };
    let w = shifted_window(op)?;
    let sh = Shifted::new(w, w.k(), w.h_out * w.w_out)?;
    (w.c_in / w.groups)
        .checked_mul(sh.stride)?
        .checked_mul(size_of::<f32>())
}

/// A 1x1 convolution that reads every input position once: its input is already the
/// `[k, positions]` matrix.
fn is_direct(w: &Window) -> bool {
    w.kh == 1
        && w.kw == 1
        && w.stride == [1, 1]
        && w.pad == [0, 0]
        && w.h_out * w.w_out == w.h_in * w.w_in
}

#[allow(clippy::too_many_arguments)]
fn conv_f32(
    isa: Isa,
    w: &Window,
    x: &[f32],
    y: &mut [f32],
    weights: &[f32],
    bias: Option<&[f32]>,
    lo: f32,
    hi: f32,
    batch: usize,
    col: &mut [Line],
    packed: &mut [Line],
    masks: &[u16],
) -> RunResult<()> {
    let (cin_g, cout_g) = (w.c_in / w.groups, w.c_out / w.groups);
    let (kk, n) = (w.k(), w.h_out * w.w_out);
    let plane = w.h_in * w.w_in;
    let direct = is_direct(w);
    // Stride 1 with output rows as wide as input rows: unfold straight into the packed
    // panels (see `unfold_packed`), skipping the im2col matrix and the packing pass. Its
    // lane masks were made with the state (`op_masks`); none means this path is off.
    let shifted = Shifted::new(w, kk, n).filter(|_| !direct && !masks.is_empty());
    let col = f32s_mut(bytemuck::cast_slice_mut(col))?;
    let packed = f32s_mut(bytemuck::cast_slice_mut(packed))?;
    let packed = packed
        .get_mut(..k::packed_len_f32(kk, n))
        .ok_or("scratch too small")?;
    for s in 0..batch {
        let xs = &x[s * w.c_in * plane..(s + 1) * w.c_in * plane];
        for g in 0..w.groups {
            let xg = &xs[g * cin_g * plane..(g + 1) * cin_g * plane];
            let unfolded = shifted
                .as_ref()
                .is_some_and(|sh| unfold_packed(isa, sh, masks, w, xg, n, packed, col));
            if !unfolded {
                let b = if direct {
                    xg
                } else {
                    let col = col.get_mut(..kk * n).ok_or("scratch too small")?;
                    im2col(w, xg, col);
                    col
                };
                k::pack_b_f32(b, kk, n, packed).map_err(|e| e.to_string())?;
            }
            let rows = g * cout_g..(g + 1) * cout_g;
            let bias = bias.map_or(Bias::None, |b| Bias::PerRow(&b[rows.clone()]));
            let at = (s * w.c_out + rows.start) * n;
            k::sgemm(
                isa,
                cout_g,
                n,
                kk,
                &weights[rows.start * kk..rows.end * kk],
                kk,
                packed,
                bias,
                lo,
                hi,
                &mut y[at..at + cout_g * n],
                n,
            )
            .map_err(|e| e.to_string())?;
        }
    }
    return Ok(());

    /// Unfolds one group of one sample straight into the packed panels of
    /// [`k::pack_b_f32`], for a stride-1 window whose output rows are as wide as its input
    /// rows. Returns false, having written nothing, when `scratch` or `masks` is too
    /// small; the caller then unfolds and packs in two steps.
    ///
    /// With equal row widths, output position `pos` of tap (ki, kj) reads input element
    /// `pos + shift(ki, kj)` of its plane, or padding (see [`Shifted`]). So the planes are
    /// first copied into `scratch` with margins wide enough that every tap's shifted
    /// 16-position piece is in bounds, then each piece is copied whole with the lanes that
    /// must read padding masked to zero ([`k::unfold_panel_f32`]). The masks depend only
    /// on the panel and the tap, so they are made once, with the state ([`op_masks`]).
    #[allow(clippy::too_many_arguments)]
    fn unfold_packed(
        isa: Isa,
        sh: &Shifted,
        masks: &[u16],
        w: &Window,
        x: &[f32],
        n: usize,
        packed: &mut [f32],
        scratch: &mut [f32],
    ) -> bool {
        const NR: usize = k::NR;
        let kk = sh.taps * (w.c_in / w.groups);
        let (plane, channels) = (w.h_in * w.w_in, w.c_in / w.groups);
        let Some(planes) = scratch.get_mut(..channels * sh.stride) else {
            return false;
        };
        if x.len() < channels * plane || masks.len() < n.div_ceil(NR) * sh.taps {
            return false;
        }
        // The margins keep whatever they hold: every lane that reads them is masked.
        for (dst, src) in planes
            .chunks_exact_mut(sh.stride)
            .zip(x.chunks_exact(plane))
        {
            dst[sh.left..sh.left + plane].copy_from_slice(src);
        }
        let panels = packed.chunks_exact_mut(kk * NR).take(n.div_ceil(NR));
        for (p, (panel, masks)) in panels.zip(masks.chunks_exact(sh.taps)).enumerate() {
            let src = k::PanelSource {
                planes,
                stride: sh.stride,
                channels,
                base: sh.left + p * NR,
                offsets: &sh.shifts[..sh.taps],
                masks,
            };
            if k::unfold_panel_f32(isa, src, panel.as_chunks_mut::<NR>().0).is_err() {
                // Not reached: the margins hold every shift. The caller packs instead.
                return false;
            }
        }
        true
    }
}

/// The common 2x2, stride 2 max pool with every window inside the input (a ceil-mode
/// pool's last window may not be), as the kernels' shape; `None` for any other window.
fn pool_2x2(w: &Window, batch: usize) -> Option<k::Pool2x2> {
    let simple = w.kh == 2
        && w.kw == 2
        && w.stride == [2, 2]
        && w.pad == [0, 0]
        && w.dilation == [1, 1]
        && 2 * w.h_out <= w.h_in
        && 2 * w.w_out <= w.w_in;
    simple.then(|| k::Pool2x2 {
        // Saturating: a product no arena holds fails the kernel's length check.
        planes: batch.saturating_mul(w.c_in),
        h_in: w.h_in,
        w_in: w.w_in,
        h_out: w.h_out,
        w_out: w.w_out,
    })
}

/// The shifts and margins of a stride-1 window whose output rows are as wide as its input
/// rows: output position `pos` of tap `t` reads element `pos + shifts[t]` of its plane, or
/// padding.
struct Shifted {
    taps: usize,
    shifts: [isize; MAX_TAPS],
    /// Margin before each plane copy, and the distance between plane copies.
    left: usize,
    stride: usize,
    /// The output rows each kernel row may read, and the columns each kernel column may.
    rows: [(usize, usize); MAX_TAPS],
    cols: [(usize, usize); MAX_TAPS],
}

/// Taps the unfold-into-panels paths handle.
const MAX_TAPS: usize = 64;

impl Shifted {
    /// `None` when the kernel has more than [`MAX_TAPS`] taps, the output has no columns,
    /// or `kk` is not channels times taps.
    fn new(w: &Window, kk: usize, n: usize) -> Option<Shifted> {
        let (plane, channels, taps) = (w.h_in * w.w_in, w.c_in / w.groups, w.kh * w.kw);
        let end = n.div_ceil(k::NR) * k::NR;
        if taps > MAX_TAPS || w.w_out == 0 || kk != channels * taps {
            return None;
        }
        let mut shifts = [0isize; MAX_TAPS];
        for (t, s) in shifts[..taps].iter_mut().enumerate() {
            let (dy, dx) = (t / w.kw * w.dilation[0], t % w.kw * w.dilation[1]);
            *s = (dy as isize - w.pad[0] as isize) * w.w_in as isize + dx as isize
                - w.pad[1] as isize;
        }
        let lowest = shifts[..taps].iter().copied().min().unwrap_or(0);
        let highest = shifts[..taps].iter().copied().max().unwrap_or(0);
        let left = lowest.min(0).unsigned_abs();
        let right = (end as isize + highest - plane as isize).max(0) as usize;
        let (mut rows, mut cols) = ([(0, 0); MAX_TAPS], [(0, 0); MAX_TAPS]);
        for (ki, range) in rows.iter_mut().enumerate().take(w.kh) {
            *range = valid_range(w.h_out, w.h_in, 1, ki * w.dilation[0], w.pad[0]);
        }
        for (kj, range) in cols.iter_mut().enumerate().take(w.kw) {
            *range = valid_range(w.w_out, w.w_in, 1, kj * w.dilation[1], w.pad[1]);
        }
        Some(Shifted {
            taps,
            shifts,
            left,
            stride: left + plane + right,
            rows,
            cols,
        })
    }

    /// Per panel and tap, which of the 16 lanes read the image (bit j: lane j): the masks
    /// of panel `p` are `out[p * taps..][..taps]`. False, having written nothing, when
    /// `out` is shorter than that.
    fn fill_masks(&self, w: &Window, n: usize, out: &mut [u16]) -> bool {
        let panels = n.div_ceil(k::NR);
        let Some(out) = out.get_mut(..panels * self.taps) else {
            return false;
        };
        for (p, masks) in out.chunks_exact_mut(self.taps).enumerate() {
            let bits = self.panel_masks(w, n, p);
            for (m, b) in masks.iter_mut().zip(bits) {
                *m = b as u16;
            }
        }
        true
    }

    /// Per tap, which of the 16 lanes of panel `p` read the image (bit j: lane j).
    fn panel_masks(&self, w: &Window, n: usize, p: usize) -> [u32; MAX_TAPS] {
        let (mut row_ok, mut col_ok) = ([0u32; MAX_TAPS], [0u32; MAX_TAPS]);
        let (mut oy, mut ox) = (p * k::NR / w.w_out, p * k::NR % w.w_out);
        for j in 0..k::NR.min(n - p * k::NR) {
            for (bits, &(lo, hi)) in row_ok.iter_mut().zip(&self.rows).take(w.kh) {
                *bits |= u32::from(lo <= oy && oy < hi) << j;
            }
            for (bits, &(lo, hi)) in col_ok.iter_mut().zip(&self.cols).take(w.kw) {
                *bits |= u32::from(lo <= ox && ox < hi) << j;
            }
            ox += 1;
            if ox == w.w_out {
                (oy, ox) = (oy + 1, 0);
            }
        }
        let mut out = [0u32; MAX_TAPS];
        for (t, bits) in out[..self.taps].iter_mut().enumerate() {
            *bits = row_ok[t / w.kw] & col_ok[t % w.kw];
        }
        out
    }
}

/// The u8 form of `conv_f32`'s `unfold_packed`: unfolds one group of one sample straight
/// into the packed panels of [`k::pack_b_u8`], writing exactly the bytes that im2col (with
/// `zero_point` in the padding) and packing would. Returns false, having written nothing,
/// when the geometry does not qualify or `scratch` is too small.
#[allow(clippy::too_many_arguments)]
fn unfold_packed_u8(
    isa: Isa,
    sh: &Shifted,
    masks: &[u16],
    w: &Window,
    x: &[u8],
    n: usize,
    packed: &mut [u8],
    scratch: &mut [u8],
    zero_point: u8,
) -> bool {
    const NR: usize = k::NR;
    let kk = sh.taps * (w.c_in / w.groups);
    let (plane, channels) = (w.h_in * w.w_in, w.c_in / w.groups);
    let kp = padded_k(kk);
    let panels = n.div_ceil(NR);
    let Some(planes) = scratch.get_mut(..channels * sh.stride) else {
        return false;
    };
    if packed.len() < panels * NR * kp
        || x.len() < channels * plane
        || masks.len() < panels * sh.taps
    {
        return false;
    }
    // The margins keep whatever they hold: every lane that reads them is replaced.
    for (dst, src) in planes
        .chunks_exact_mut(sh.stride)
        .zip(x.chunks_exact(plane))
    {
        dst[sh.left..sh.left + plane].copy_from_slice(src);
    }
    let panels = packed.chunks_exact_mut(kp * NR).take(panels);
    for (p, (panel, masks)) in panels.zip(masks.chunks_exact(sh.taps)).enumerate() {
        // Padding lanes hold the zero point, lanes past n hold 0 (as packing writes).
        let real = NR.min(n - p * NR);
        let fill: [u8; NR] = std::array::from_fn(|j| if j < real { zero_point } else { 0 });
        let src = k::PanelSource {
            planes,
            stride: sh.stride,
            channels,
            base: sh.left + p * NR,
            offsets: &sh.shifts[..sh.taps],
            masks,
        };
        if k::unfold_panel_u8(isa, src, &fill, panel.as_chunks_mut::<64>().0).is_err() {
            // Not reached: the margins hold every shift. The caller unfolds the slow way.
            return false;
        }
    }
    true
}

/// Max pooling of NCHW samples (f32 or u8), any window: the general loop for what
/// [`pool_2x2`] does not cover.
fn max_pool<T: Copy + PartialOrd>(w: &Window, batch: usize, x: &[T], y: &mut [T]) {
    let max = |a: T, b: T| if b > a { b } else { a };
    each_window(w, batch, x, y, |window| {
        let mut best: Option<T> = None;
        window.for_each(|v| best = Some(best.map_or(v, |b| max(b, v))));
        // Compile-time geometry guarantees every window overlaps the input.
        best
    });
}

/// Average pooling of NCHW u8 samples in exact integer arithmetic (see `Op::QAvgPool`).
fn quantized_avg_pool(
    w: &Window,
    batch: usize,
    x: &[u8],
    y: &mut [u8],
    zero_point: u8,
    count_pad: bool,
) {
    let zp = zero_point as i64;
    each_window(w, batch, x, y, |window| {
        let mut sum = 0i64;
        window.for_each(|v| sum += v as i64 - zp);
        let divisor = if count_pad {
            (w.kh * w.kw) as i64
        } else {
            window.len().max(1) as i64
        };
        Some((div_round_half_even(sum, divisor) + zp).clamp(0, 255) as u8)
    });
}

/// Average pooling of NCHW f32 samples.
fn avg_pool(w: &Window, batch: usize, x: &[f32], y: &mut [f32], count_pad: bool) {
    each_window(w, batch, x, y, |window| {
        let mut sum = 0.0f32;
        window.for_each(|v| sum += v);
        let divisor = if count_pad {
            w.kh * w.kw
        } else {
            window.len().max(1)
        };
        Some(sum / divisor as f32)
    });
}

/// The walk the general pooling loops share: every window of every plane (samples times
/// channels) in output order; the output element of each is what `reduce` makes of the
/// window, or stays as it is when `reduce` gives `None`.
fn each_window<T: Copy, U>(
    w: &Window,
    batch: usize,
    x: &[T],
    y: &mut [U],
    mut reduce: impl FnMut(&PoolWindow<'_, T>) -> Option<U>,
) {
    let (plane_in, plane_out) = (w.h_in * w.w_in, w.h_out * w.w_out);
    for (src, dst) in x
        .chunks_exact(plane_in)
        .zip(y.chunks_exact_mut(plane_out))
        .take(batch * w.c_in)
    {
        for oy in 0..w.h_out {
            for ox in 0..w.w_out {
                let window = PoolWindow {
                    src,
                    w,
                    at: (oy, ox),
                    rows: taps(w, 0, oy),
                    cols: taps(w, 1, ox),
                };
                if let Some(v) = reduce(&window) {
                    dst[oy * w.w_out + ox] = v;
                }
            }
        }
    }
}

/// One pooling window over one input plane: the output position `at` (row, column) and
/// the kernel taps along each axis that read the input (see [`taps`]).
struct PoolWindow<'a, T> {
    src: &'a [T],
    w: &'a Window,
    at: (usize, usize),
    rows: Range<usize>,
    cols: Range<usize>,
}

impl<T: Copy> PoolWindow<'_, T> {
    /// How many input elements the window reads.
    fn len(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    /// `f` on each input element the window reads, row by row. Only the taps inside the
    /// input: a window far larger than its input costs no more than the input (the plan
    /// bounds this work).
    fn for_each(&self, mut f: impl FnMut(T)) {
        let (w, (oy, ox)) = (self.w, self.at);
        for ki in self.rows.clone() {
            let iy = oy * w.stride[0] + ki * w.dilation[0] - w.pad[0];
            for kj in self.cols.clone() {
                let ix = ox * w.stride[1] + kj * w.dilation[1] - w.pad[1];
                f(self.src[iy * w.w_in + ix]);
            }
        }
    }
}

/// `n / d` rounded to the nearest integer, ties to even (`d > 0`).
fn div_round_half_even(n: i64, d: i64) -> i64 {
    let q = n.div_euclid(d);
    let r = n.rem_euclid(d);
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

/// The kernel taps along `axis` (0: rows, 1: columns) of output position `o` that read
/// the input rather than the padding: `t` with `0 <= o * stride + t * dilation - pad < size`.
/// Pooling loops over these alone, so a kernel far larger than its input (a file may
/// declare 2^13 x 2^13 over a 4 x 4 input) costs what the input holds, not its own area.
fn taps(w: &Window, axis: usize, o: usize) -> Range<usize> {
    let (k, size) = [(w.kh, w.h_in), (w.kw, w.w_in)][axis];
    let (stride, pad, dilation) = (w.stride[axis], w.pad[axis], w.dilation[axis]);
    let origin = o * stride;
    let first = pad.saturating_sub(origin).div_ceil(dilation);
    let end = (pad + size).saturating_sub(origin).div_ceil(dilation);
    first.min(k)..end.min(k).max(first.min(k))
}

fn unary(f: UnaryFn, x: &[f32], y: &mut [f32]) {
    match f {
        UnaryFn::Relu => {
            for (d, s) in y.iter_mut().zip(x) {
                *d = s.max(0.0);
            }
        }
        _ => {
            for (d, s) in y.iter_mut().zip(x) {
                *d = f.apply(*s);
            }
        }
    }
}

fn softmax(x: &[f32], y: &mut [f32], size: usize, inner: usize) {
    for (src, dst) in x
        .chunks_exact(size * inner)
        .zip(y.chunks_exact_mut(size * inner))
    {
        for i in 0..inner {
            let max = (0..size)
                .map(|j| src[j * inner + i])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for j in 0..size {
                let e = (src[j * inner + i] - max).exp();
                dst[j * inner + i] = e;
                sum += e;
            }
            for j in 0..size {
                dst[j * inner + i] /= sum;
            }
        }
    }
}

/// A shape of at most [`MAX_RANK`] axes held without allocating.
#[derive(Clone, Copy)]
struct Dims {
    len: usize,
    axes: [usize; MAX_RANK],
}

/// The plan allows 6 axes per sample, plus the batch.
const MAX_RANK: usize = 7;

impl Dims {
    fn of(dims: &[usize]) -> Dims {
        let mut axes = [1; MAX_RANK];
        let len = dims.len().min(MAX_RANK);
        axes[..len].copy_from_slice(&dims[..len]);
        Dims { len, axes }
    }

    fn with_batch(batch: usize, dims: &[usize]) -> Dims {
        let mut out = Dims::of(&[batch]);
        let len = (dims.len() + 1).min(MAX_RANK);
        out.axes[1..len].copy_from_slice(&dims[..len - 1]);
        out.len = len;
        out
    }

    fn as_slice(&self) -> &[usize] {
        &self.axes[..self.len]
    }
}

/// Numpy-style broadcasting of two operands into `shape`.
fn binary(
    f: BinaryFn,
    a: &[f32],
    ad: &[usize],
    b: &[f32],
    bd: &[usize],
    y: &mut [f32],
    shape: &[usize],
) {
    if ad == shape && bd == shape {
        for ((d, &p), &q) in y.iter_mut().zip(a).zip(b) {
            *d = f.apply(p, q);
        }
        return;
    }
    let strides = |dims: &[usize]| -> [usize; MAX_RANK] {
        // Strides of `dims` aligned to `shape`, 0 along broadcast axes.
        let mut out = [0; MAX_RANK];
        let mut stride = 1;
        for (i, &d) in dims.iter().enumerate().rev() {
            let axis = shape.len() - dims.len() + i;
            out[axis] = if d == 1 { 0 } else { stride };
            stride *= d;
        }
        out
    };
    let (sa, sb) = (strides(ad), strides(bd));
    let mut index = [0usize; MAX_RANK];
    for d in y.iter_mut() {
        let (mut ia, mut ib) = (0, 0);
        for axis in 0..shape.len() {
            ia += index[axis] * sa[axis];
            ib += index[axis] * sb[axis];
        }
        *d = f.apply(a[ia], b[ib]);
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

/// Permutes the per-sample axes of each sample.
fn transpose<T: Copy>(x: &[T], y: &mut [T], dims: &[usize], perm: &[usize], batch: usize) {
    let per: usize = dims.iter().product();
    let mut strides = [1usize; MAX_RANK];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    let rank = dims.len();
    let (mut out_dims, mut out_strides) = ([1usize; MAX_RANK], [0usize; MAX_RANK]);
    for (i, &p) in perm.iter().enumerate().take(MAX_RANK) {
        out_dims[i] = dims[p];
        out_strides[i] = strides[p];
    }
    let (out_dims, out_strides) = (&out_dims[..rank], &out_strides[..rank]);
    for s in 0..batch {
        let src = &x[s * per..(s + 1) * per];
        let dst = &mut y[s * per..(s + 1) * per];
        let mut index = [0usize; MAX_RANK];
        for d in dst.iter_mut() {
            let at: usize = index
                .iter()
                .zip(out_strides.iter())
                .map(|(i, s)| i * s)
                .sum();
            *d = src[at];
            for axis in (0..out_dims.len()).rev() {
                index[axis] += 1;
                if index[axis] < out_dims[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn division_rounds_half_to_even() {
        let cases = [
            (5, 2, 2),
            (7, 2, 4),
            (-5, 2, -2),
            (-7, 2, -4),
            (9, 4, 2),
            (10, 4, 2),
            (11, 4, 3),
            (-10, 4, -2),
            (0, 3, 0),
            (-1, 3, 0),
            (-2, 3, -1),
        ];
        for (n, d, expected) in cases {
            assert_eq!(div_round_half_even(n, d), expected, "{n} / {d}");
        }
    }

    #[test]
    fn two_by_two_max_pool_matches_the_general_loop_at_every_batch_size() {
        // The kernels' 2x2 path against the window loop, for batches 1, 2, 3, 32 and odd
        // planes (floor mode skips the last row or column). Values are distinct from zero
        // and finite, so the order of the maxima cannot show; results must be equal.
        for (h_in, w_in, c_in) in [(28, 28, 3), (14, 14, 2), (7, 9, 1), (5, 33, 2), (2, 2, 1)] {
            let w = Window {
                c_in,
                c_out: c_in,
                h_in,
                w_in,
                h_out: h_in / 2,
                w_out: w_in / 2,
                kh: 2,
                kw: 2,
                stride: [2, 2],
                pad: [0, 0],
                dilation: [1, 1],
                groups: 1,
            };
            for batch in [1, 2, 3, 32] {
                let len = batch * c_in * h_in * w_in;
                let x: Vec<f32> = (0..len).map(|i| (i * 7919 % 1009) as f32 - 504.5).collect();
                let q: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
                let out = batch * c_in * w.h_out * w.w_out;
                let p = pool_2x2(&w, batch).expect("a 2x2 stride-2 window");
                for isa in Isa::available() {
                    let (mut want, mut got) = (vec![0.0f32; out], vec![1.0f32; out]);
                    max_pool(&w, batch, &x, &mut want);
                    k::max_pool_2x2_f32(isa, p, &x, &mut got).unwrap();
                    assert_eq!(got, want, "{isa} f32 {w:?} batch {batch}");
                    let (mut want, mut got) = (vec![0u8; out], vec![1u8; out]);
                    max_pool(&w, batch, &q, &mut want);
                    k::max_pool_2x2_u8(isa, p, &q, &mut got).unwrap();
                    assert_eq!(got, want, "{isa} u8 {w:?} batch {batch}");
                }
            }
        }
    }

    #[test]
    fn unfolding_u8_into_panels_writes_what_im2col_and_packing_write() {
        // Stride-1 windows whose output rows are as wide as their input rows: 3x3 pad 1,
        // 5x5 pad 2, 3x3 dilation 2 pad 2, 1x1, and 2x2 with the padding on the right and
        // none below (one output row fewer). Channel counts make k not a multiple of 4, and
        // widths make n not a multiple of 16.
        let shapes = [
            (3, 3, [1, 1], [1, 1], 0),
            (5, 5, [2, 2], [1, 1], 0),
            (3, 3, [2, 2], [2, 2], 0),
            (1, 1, [0, 0], [1, 1], 0),
            (2, 2, [0, 1], [1, 1], 1),
        ];
        for (kh, kw, pad, dilation, fewer_rows) in shapes {
            for (c_in, h_in, w_in) in [(4, 14, 14), (5, 3, 17), (7, 6, 5), (32, 7, 7)] {
                let w = Window {
                    c_in,
                    c_out: 8,
                    h_in,
                    w_in,
                    h_out: h_in - fewer_rows,
                    w_out: w_in,
                    kh,
                    kw,
                    stride: [1, 1],
                    pad,
                    dilation,
                    groups: 1,
                };
                let (kk, n) = (w.k(), w.h_out * w.w_out);
                let zero_point = 3;
                let x: Vec<u8> = (0..c_in * h_in * w_in)
                    .map(|i| (i * 7919 % 251) as u8)
                    .collect();
                let mut col = vec![zero_point; kk * n];
                im2col(&w, &x, &mut col);
                let mut want = vec![0xa5u8; k::packed_len_q8(kk, n)];
                k::pack_b_u8(&col, kk, n, &mut want).unwrap();
                for isa in Isa::available() {
                    let mut got = vec![0x5au8; want.len()];
                    let mut scratch = vec![0x77u8; kk * n + 64 * c_in];
                    let done = Shifted::new(&w, kk, n).is_some_and(|sh| {
                        let mut masks = vec![0; n.div_ceil(k::NR) * kh * kw];
                        sh.fill_masks(&w, n, &mut masks)
                            && unfold_packed_u8(
                                isa,
                                &sh,
                                &masks,
                                &w,
                                &x,
                                n,
                                &mut got,
                                &mut scratch,
                                zero_point,
                            )
                    });
                    assert!(done, "{isa} {w:?} was not unfolded");
                    assert_eq!(got, want, "{isa} {w:?}");
                }

                // The f32 form against im2col and packing, through `conv_f32` at several
                // batch sizes: a convolution with identity weights (one output channel
                // per im2col row) returns the unfolded matrix itself, in the same order.
                let xf: Vec<f32> = x.iter().map(|&v| v as f32 - 100.5).collect();
                let mut colf = vec![0.0f32; kk * n];
                im2col(&w, &xf, &mut colf);
                let eye: Vec<f32> = (0..kk * kk)
                    .map(|i| if i / kk == i % kk { 1.0 } else { 0.0 })
                    .collect();
                let wide = Window {
                    c_out: kk,
                    ..w.clone()
                };
                let op = Op::Conv {
                    x: 0,
                    y: 0,
                    window: wide.clone(),
                    weights: Weights::F32(0),
                    bias: None,
                    lo: f32::NEG_INFINITY,
                    hi: f32::INFINITY,
                    pool: false,
                };
                // The unfolding buffer a call state gets, as large as the limits count it.
                let col = unfolded(&op);
                let counted = unfolded_bytes(&op).unwrap();
                assert_eq!(col.len() as u64, counted.div_ceil(64), "{w:?}");
                for isa in Isa::available() {
                    for batch in [1, 2, 3] {
                        let xs: Vec<f32> =
                            xf.iter().copied().cycle().take(batch * xf.len()).collect();
                        let mut y = vec![f32::NAN; batch * kk * n];
                        let mut col = col.clone();
                        let mut packed = lines(k::packed_len_f32(kk, n) * 4);
                        conv_f32(
                            isa,
                            &wide,
                            &xs,
                            &mut y,
                            &eye,
                            None,
                            f32::NEG_INFINITY,
                            f32::INFINITY,
                            batch,
                            &mut col,
                            &mut packed,
                            &op_masks(&op),
                        )
                        .unwrap();
                        for s in 0..batch {
                            assert_eq!(
                                &y[s * kk * n..(s + 1) * kk * n],
                                &colf[..],
                                "{isa} {w:?} {s}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn quantized_average_pool_is_exact() {
        // One channel of 2x4, two 2x2 windows, zero point 10. First: sums 2 (a tie at 0.5,
        // rounds to 0) and -4 (exactly -1). Then: 6 (a tie at 1.5, rounds to 2) and -40
        // (-10, clamped at 0 after adding the zero point).
        let w = Window {
            c_in: 1,
            c_out: 1,
            h_in: 2,
            w_in: 4,
            h_out: 1,
            w_out: 2,
            kh: 2,
            kw: 2,
            stride: [2, 2],
            pad: [0, 0],
            dilation: [1, 1],
            groups: 1,
        };
        let x = [11u8, 11, 9, 9, 10, 10, 9, 9];
        let mut y = [0u8; 2];
        quantized_avg_pool(&w, 1, &x, &mut y, 10, false);
        assert_eq!(y, [10, 9]);
        let x = [13u8, 11, 0, 0, 11, 11, 0, 0];
        quantized_avg_pool(&w, 1, &x, &mut y, 10, false);
        assert_eq!(y, [12, 0]);
    }

    #[test]
    fn pooling_taps_are_the_kernel_positions_inside_the_input() {
        // Every small geometry, against the definition: tap t reads the input when
        // 0 <= o * stride + t * dilation - pad < size.
        for size in 1..5 {
            for k in 1..6 {
                for stride in 1..4 {
                    for pad in 0..4 {
                        for dilation in 1..3 {
                            check_taps(size, k, stride, pad, dilation);
                        }
                    }
                }
            }
        }
    }

    fn check_taps(size: usize, k: usize, stride: usize, pad: usize, dilation: usize) {
        let w = Window {
            c_in: 1,
            c_out: 1,
            h_in: size,
            w_in: 1,
            h_out: (size + 2 * pad) / stride + 1,
            w_out: 1,
            kh: k,
            kw: 1,
            stride: [stride, 1],
            pad: [pad, 0],
            dilation: [dilation, 1],
            groups: 1,
        };
        for o in 0..w.h_out {
            let expected: Vec<usize> = (0..k)
                .filter(|&t| {
                    let at = (o * stride + t * dilation) as isize - pad as isize;
                    (0..size as isize).contains(&at)
                })
                .collect();
            assert_eq!(
                taps(&w, 0, o).collect::<Vec<_>>(),
                expected,
                "{w:?}, output {o}"
            );
        }
    }

    #[test]
    fn average_pooling_with_a_kernel_far_larger_than_its_input_is_quick() {
        // 2^13 x 2^13 over 4 x 4, stride 2: output (oy, ox) is the mean of rows 2*oy..4
        // and columns 2*ox..4. Visiting all 2^26 taps per output made this take seconds.
        let w = Window {
            c_in: 1,
            c_out: 1,
            h_in: 4,
            w_in: 4,
            h_out: 2,
            w_out: 2,
            kh: 1 << 13,
            kw: 1 << 13,
            stride: [2, 2],
            pad: [0, 0],
            dilation: [1, 1],
            groups: 1,
        };
        let cells = |oy: usize, ox: usize| -> Vec<usize> {
            let rows = 2 * oy..4;
            rows.flat_map(|r| (2 * ox..4).map(move |c| r * 4 + c))
                .collect()
        };
        let outputs = [(0, 0), (0, 1), (1, 0), (1, 1)];
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let mut y = [0.0f32; 4];
        avg_pool(&w, 1, &x, &mut y, false);
        let expected = outputs.map(|(oy, ox)| {
            let at = cells(oy, ox);
            at.iter().map(|&i| x[i]).sum::<f32>() / at.len() as f32
        });
        assert_eq!(y, expected);
        let q: Vec<u8> = (0..16).collect();
        let mut qy = [0u8; 4];
        quantized_avg_pool(&w, 1, &q, &mut qy, 0, false);
        let expected = outputs.map(|(oy, ox)| {
            let at = cells(oy, ox);
            let sum = at.iter().map(|&i| q[i] as i64).sum::<i64>();
            div_round_half_even(sum, at.len() as i64) as u8
        });
        assert_eq!(qy, expected);
    }
}
