//! The operations of a compiled student, as stored in its manifest.
//!
//! Every value is an activation tensor whose first axis is the batch; `Value::dims` holds
//! the other axes, so one plan serves any batch size. Weights live in blobs: ranges of the
//! file's data section, used in place from the memory map. The compiler writes these types
//! and the executor reads them; [`Manifest::validate`](super::format) checks every index,
//! size and shape before anything runs.

use serde::{Deserialize, Serialize};

/// Index into [`Manifest::values`].
pub(crate) type ValueId = usize;
/// Index into [`Manifest::blobs`].
pub(crate) type BlobId = usize;

/// Element types of values and blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DType {
    F32,
    F16,
    U8,
    I8,
    I32,
}

impl DType {
    pub(crate) fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::U8 | DType::I8 => 1,
        }
    }
}

/// An activation: f32 or u8 (quantized), `dims` per sample (the batch axis left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Value {
    pub dtype: DType,
    pub dims: Vec<usize>,
}

impl Value {
    /// Elements per sample.
    pub(crate) fn len(&self) -> usize {
        self.dims.iter().product()
    }
}

/// A weight array in the data section: `offset` from the section's start, 64-byte aligned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Blob {
    pub offset: u64,
    pub len: u64,
    pub dtype: DType,
}

/// The geometry of a 2-D convolution or pooling window over one NCHW sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Window {
    pub c_in: usize,
    pub c_out: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub h_out: usize,
    pub w_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    /// Top and left padding; bottom and right follow from the output size.
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Window {
    /// Columns of one group's im2col matrix: input channels per group times the kernel area.
    pub(crate) fn k(&self) -> usize {
        self.c_in / self.groups.max(1) * self.kh * self.kw
    }

    /// Whether this is the window the 3x3 kernels take (`student_kernels::Conv3x3`): 3x3,
    /// stride 1, dilation 1, one group.
    pub(crate) fn is_3x3_stride_1(&self) -> bool {
        (self.kh, self.kw, self.stride, self.dilation, self.groups) == (3, 3, [1, 1], [1, 1], 1)
    }
}

/// For error messages: `1x28x28 -> 8x28x28, kernel 3x3, stride 1x1, top-left padding 1x1,
/// dilation 1x1, 1 group(s)`.
impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{}x{} -> {}x{}x{}, kernel {}x{}, stride {}x{}, top-left padding {}x{}, \
             dilation {}x{}, {} group(s)",
            self.c_in,
            self.h_in,
            self.w_in,
            self.c_out,
            self.h_out,
            self.w_out,
            self.kh,
            self.kw,
            self.stride[0],
            self.stride[1],
            self.pad[0],
            self.pad[1],
            self.dilation[0],
            self.dilation[1],
            self.groups
        )
    }
}

/// Float weights of a convolution or dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Weights {
    F32(BlobId),
    /// fp16 storage, f32 arithmetic.
    F16(BlobId),
}

/// Where the result of an integer convolution or dense layer goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum QuantOut {
    /// Requantized to u8 with this zero point, clamped to `[lo, hi]` (a fused Relu/Clip).
    U8 { zero_point: u8, lo: u8, hi: u8 },
    /// Kept in f32 (logits), clamped to `[lo, hi]`.
    F32 {
        #[serde(with = "lower")]
        lo: f32,
        #[serde(with = "upper")]
        hi: f32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum PoolKind {
    Max,
    /// Average; `count_pad` counts padded positions in the divisor.
    Avg {
        count_pad: bool,
    },
}

/// Elementwise functions of one f32.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum UnaryFn {
    Relu,
    Clip {
        #[serde(with = "lower")]
        lo: f32,
        #[serde(with = "upper")]
        hi: f32,
    },
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    Tanh,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Gelu,
    Exp,
    Sqrt,
    Neg,
    Abs,
    Erf,
}

impl UnaryFn {
    pub(crate) fn apply(self, x: f32) -> f32 {
        match self {
            UnaryFn::Relu => x.max(0.0),
            UnaryFn::Clip { lo, hi } => x.max(lo).min(hi),
            UnaryFn::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            UnaryFn::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryFn::Tanh => x.tanh(),
            UnaryFn::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            UnaryFn::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            UnaryFn::Gelu => 0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2)),
            UnaryFn::Exp => x.exp(),
            UnaryFn::Sqrt => x.sqrt(),
            UnaryFn::Neg => -x,
            UnaryFn::Abs => x.abs(),
            UnaryFn::Erf => erf(x),
        }
    }
}

/// The error function, to within 1.5e-7 (Abramowitz and Stegun 7.1.26), for Gelu.
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() as f64);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-(x as f64) * (x as f64)).exp();
    (if x < 0.0 { -y } else { y }) as f32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BinaryFn {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryFn {
    pub(crate) fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryFn::Add => a + b,
            BinaryFn::Sub => a - b,
            BinaryFn::Mul => a * b,
            BinaryFn::Div => a / b,
        }
    }
}

/// An operand of a binary op: an activation, or a constant f32 blob of shape `dims`
/// (the full numpy-style shape, broadcast against `[batch, value dims...]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum Operand {
    Value(ValueId),
    Const { blob: BlobId, dims: Vec<usize> },
}

/// One step of the plan. Every op reads values written by earlier ops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Unknown fields are refused: a field this runtime does not know may change what an op
// computes (as `pool` did), so ignoring it could give wrong answers without a word.
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Op {
    /// Float convolution: weights `[c_out, k]` row-major, optional f32 bias per output
    /// channel, output clamped to `[lo, hi]`.
    Conv {
        x: ValueId,
        y: ValueId,
        window: Window,
        weights: Weights,
        bias: Option<BlobId>,
        #[serde(with = "lower")]
        lo: f32,
        #[serde(with = "upper")]
        hi: f32,
        /// A 2x2, stride-2 max pool fused into the output, as for `WinogradConv`.
        #[serde(default, skip_serializing_if = "is_false")]
        pool: bool,
    },
    /// Float 3x3 convolution (stride 1, dilation 1, one group) by Winograd's F(2x2, 3x3)
    /// (see `student_kernels::conv3x3_winograd_f32`): `weights` are the kernels
    /// transformed at compile time, `U = G g G^T`, as 16 row-major `[c_out, c_in]`
    /// matrices (matrix `xi = 4 * row + column` of the 4x4 transform first at element
    /// `xi * c_out * c_in`); bias and clamp as for `Conv`.
    WinogradConv {
        x: ValueId,
        y: ValueId,
        window: Window,
        weights: Weights,
        bias: Option<BlobId>,
        #[serde(with = "lower")]
        lo: f32,
        #[serde(with = "upper")]
        hi: f32,
        /// A 2x2, stride-2 max pool fused into the output transform: `y` is then
        /// `[c_out, h_out / 2, w_out / 2]`, the window's output size being even.
        #[serde(default, skip_serializing_if = "is_false")]
        pool: bool,
    },
    /// Float dense layer over the last axis: `y[.., n] = x[.., k] * W + bias`, with `W`
    /// packed in the kernels' panel layout.
    Dense {
        x: ValueId,
        y: ValueId,
        k: usize,
        n: usize,
        weights: Weights,
        bias: Option<BlobId>,
        #[serde(with = "lower")]
        lo: f32,
        #[serde(with = "upper")]
        hi: f32,
    },
    /// Integer convolution of a u8 input: weights i8 `[c_out, k rounded up to 4]`, their row
    /// sums, an i32 bias that already holds `-x_zero_point * row sum`, and the f32 scale
    /// per output channel `x_scale * w_scale / y_scale` (or `x_scale * w_scale` for a float
    /// output).
    QConv {
        x: ValueId,
        y: ValueId,
        window: Window,
        x_zero_point: u8,
        weights: BlobId,
        row_sums: BlobId,
        bias: BlobId,
        scale: BlobId,
        out: QuantOut,
        /// A 2x2, stride-2 max pool fused in (u8 output only): each window's largest sum is
        /// requantized (see `student_kernels::requantize_max_pool_2x2_u8`), and `y` is
        /// `[c_out, h_out / 2, w_out / 2]`, the window's output size being even.
        #[serde(default, skip_serializing_if = "is_false")]
        pool: bool,
    },
    /// Integer dense layer of a u8 input: weights i8 packed, their column sums, i32 bias
    /// (zero point folded in as for `QConv`) and f32 scale per output column.
    QDense {
        x: ValueId,
        y: ValueId,
        k: usize,
        n: usize,
        x_zero_point: u8,
        weights: BlobId,
        col_sums: BlobId,
        bias: BlobId,
        scale: BlobId,
        out: QuantOut,
    },
    /// Max or average pooling (f32 or u8; a u8 average rounds half to even).
    Pool {
        x: ValueId,
        y: ValueId,
        kind: PoolKind,
        window: Window,
    },
    /// Average pooling of a u8 value whose output keeps its quantization: exactly
    /// `round_half_even(sum(q - zero_point) / count) + zero_point`, the QDQ result in real
    /// arithmetic (padding counts as zero when `count_pad`).
    QAvgPool {
        x: ValueId,
        y: ValueId,
        window: Window,
        zero_point: u8,
        count_pad: bool,
    },
    /// Mean over each channel's spatial positions (f32).
    GlobalAvgPool {
        x: ValueId,
        y: ValueId,
    },
    Unary {
        x: ValueId,
        y: ValueId,
        f: UnaryFn,
    },
    /// Elementwise u8 -> u8 through a 256-entry table: a quantized elementwise function,
    /// computed exactly as dequantize, apply, quantize.
    Lut {
        x: ValueId,
        y: ValueId,
        table: Vec<u8>,
    },
    Binary {
        a: Operand,
        b: Operand,
        y: ValueId,
        f: BinaryFn,
    },
    /// Softmax along `axis` of the full shape (the batch is axis 0, so `axis >= 1`).
    Softmax {
        x: ValueId,
        y: ValueId,
        axis: usize,
    },
    /// Per-channel affine map `y = x * scale[c] + shift[c]` over NC... values (a batch norm
    /// that had no convolution to fold into).
    ChannelAffine {
        x: ValueId,
        y: ValueId,
        scale: BlobId,
        shift: BlobId,
    },
    /// Layer normalization over the last `size` elements, with f32 gamma and beta.
    LayerNorm {
        x: ValueId,
        y: ValueId,
        size: usize,
        epsilon: f32,
        gamma: BlobId,
        beta: Option<BlobId>,
    },
    /// f32 -> u8 (ONNX QuantizeLinear: round half to even, saturate).
    Quantize {
        x: ValueId,
        y: ValueId,
        scale: f32,
        zero_point: u8,
    },
    /// u8 -> f32 (ONNX DequantizeLinear).
    Dequantize {
        x: ValueId,
        y: ValueId,
        scale: f32,
        zero_point: u8,
    },
    /// Same elements, new shape (Reshape, Flatten, Squeeze, Unsqueeze).
    Copy {
        x: ValueId,
        y: ValueId,
    },
    /// Permutes the per-sample axes (the batch axis stays first).
    Transpose {
        x: ValueId,
        y: ValueId,
        perm: Vec<usize>,
    },
    /// Joins values along `axis` of the full shape (`axis >= 1`).
    Concat {
        xs: Vec<ValueId>,
        y: ValueId,
        axis: usize,
    },
    /// Rows of an f32 table `[rows, width]` picked by the (integral f32) indices in `x`.
    Gather {
        x: ValueId,
        y: ValueId,
        table: BlobId,
        rows: usize,
        width: usize,
    },
}

/// Whether every value of a blob of `dtype` is finite (integers always are): an exponent
/// of all ones is an infinity or a NaN.
pub(crate) fn blob_is_finite(bytes: &[u8], dtype: DType) -> bool {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .all(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 != 0x7f80_0000),
        DType::F16 => bytes
            .chunks_exact(2)
            .all(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 != 0x7c00),
        DType::U8 | DType::I8 | DType::I32 => true,
    }
}

/// Whether a scale blob's bytes (f32, little-endian) are all finite.
pub(crate) fn scales_are_finite(bytes: &[u8]) -> bool {
    scales(bytes).all(f32::is_finite)
}

/// A scale blob's values.
fn scales(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Whether a scale blob's bytes (f32, little-endian) are all positive numbers: then
/// requantizing never decreases as the sum grows, and a max pool may be taken before it
/// (`Op::QConv`'s `pool`). The compiler fuses only then, and opening checks it again.
pub(crate) fn scales_allow_pooling(bytes: &[u8]) -> bool {
    scales(bytes).all(|s| s.is_finite() && s > 0.0)
}

impl Op {
    /// The float blobs whose every value must be finite: weights, biases, scales, shifts
    /// and tables. A NaN or infinity there makes every answer meaningless or every call
    /// fail. Constant operands of binary ops are left out: an additive mask may hold
    /// -inf on purpose.
    pub(crate) fn finite_blobs(&self) -> Vec<BlobId> {
        let weights = |w: &Weights| match *w {
            Weights::F32(b) | Weights::F16(b) => b,
        };
        match self {
            Op::Conv {
                weights: w, bias, ..
            }
            | Op::WinogradConv {
                weights: w, bias, ..
            }
            | Op::Dense {
                weights: w, bias, ..
            } => std::iter::once(weights(w)).chain(*bias).collect(),
            Op::ChannelAffine { scale, shift, .. } => vec![*scale, *shift],
            Op::LayerNorm { gamma, beta, .. } => std::iter::once(*gamma).chain(*beta).collect(),
            Op::Gather { table, .. } => vec![*table],
            _ => Vec::new(),
        }
    }

    /// The values this op reads.
    pub(crate) fn inputs(&self) -> Vec<ValueId> {
        match self {
            Op::Conv { x, .. }
            | Op::WinogradConv { x, .. }
            | Op::Dense { x, .. }
            | Op::QConv { x, .. }
            | Op::QDense { x, .. }
            | Op::Pool { x, .. }
            | Op::QAvgPool { x, .. }
            | Op::GlobalAvgPool { x, .. }
            | Op::Unary { x, .. }
            | Op::Lut { x, .. }
            | Op::Softmax { x, .. }
            | Op::ChannelAffine { x, .. }
            | Op::LayerNorm { x, .. }
            | Op::Quantize { x, .. }
            | Op::Dequantize { x, .. }
            | Op::Copy { x, .. }
            | Op::Transpose { x, .. }
            | Op::Gather { x, .. } => vec![*x],
            Op::Binary { a, b, .. } => [a, b]
                .into_iter()
                .filter_map(|o| match o {
                    Operand::Value(v) => Some(*v),
                    Operand::Const { .. } => None,
                })
                .collect(),
            Op::Concat { xs, .. } => xs.clone(),
        }
    }

    /// The value this op writes.
    pub(crate) fn output(&self) -> ValueId {
        match self {
            Op::Conv { y, .. }
            | Op::WinogradConv { y, .. }
            | Op::Dense { y, .. }
            | Op::QConv { y, .. }
            | Op::QDense { y, .. }
            | Op::Pool { y, .. }
            | Op::QAvgPool { y, .. }
            | Op::GlobalAvgPool { y, .. }
            | Op::Unary { y, .. }
            | Op::Lut { y, .. }
            | Op::Binary { y, .. }
            | Op::Softmax { y, .. }
            | Op::ChannelAffine { y, .. }
            | Op::LayerNorm { y, .. }
            | Op::Quantize { y, .. }
            | Op::Dequantize { y, .. }
            | Op::Copy { y, .. }
            | Op::Transpose { y, .. }
            | Op::Concat { y, .. }
            | Op::Gather { y, .. } => *y,
        }
    }

    /// The operator's name as `student inspect` lists it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::Conv {
                weights: Weights::F32(_),
                pool: true,
                ..
            } => "conv-f32+max-pool",
            Op::Conv {
                weights: Weights::F16(_),
                pool: true,
                ..
            } => "conv-f16+max-pool",
            Op::WinogradConv {
                weights: Weights::F32(_),
                pool: true,
                ..
            } => "conv-winograd-f32+max-pool",
            Op::WinogradConv {
                weights: Weights::F16(_),
                pool: true,
                ..
            } => "conv-winograd-f16+max-pool",
            Op::Conv {
                weights: Weights::F32(_),
                ..
            } => "conv-f32",
            Op::Conv {
                weights: Weights::F16(_),
                ..
            } => "conv-f16",
            Op::WinogradConv {
                weights: Weights::F32(_),
                ..
            } => "conv-winograd-f32",
            Op::WinogradConv {
                weights: Weights::F16(_),
                ..
            } => "conv-winograd-f16",
            Op::Dense {
                weights: Weights::F32(_),
                ..
            } => "dense-f32",
            Op::Dense {
                weights: Weights::F16(_),
                ..
            } => "dense-f16",
            Op::QConv { pool: true, .. } => "conv-int8+max-pool",
            Op::QConv { .. } => "conv-int8",
            Op::QDense { .. } => "dense-int8",
            Op::Pool {
                kind: PoolKind::Max,
                ..
            } => "max-pool",
            Op::Pool { .. } => "average-pool",
            Op::QAvgPool { .. } => "average-pool-int8",
            Op::GlobalAvgPool { .. } => "global-average-pool",
            Op::Unary { .. } => "elementwise",
            Op::Lut { .. } => "elementwise-int8",
            Op::Binary { .. } => "binary",
            Op::Softmax { .. } => "softmax",
            Op::ChannelAffine { .. } => "channel-affine",
            Op::LayerNorm { .. } => "layer-norm",
            Op::Quantize { .. } => "quantize",
            Op::Dequantize { .. } => "dequantize",
            Op::Copy { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Concat { .. } => "concat",
            Op::Gather { .. } => "gather",
        }
    }
}

/// Everything in a compiled file except the weights. Unknown fields are refused here as in
/// the ops: whatever a newer compiler adds may matter to what the file computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    /// The program and version that compiled the file.
    pub producer: String,
    /// SHA-256 of the ONNX file it was compiled from.
    pub source_sha256: String,
    /// The ONNX `metadata_props` (the model card), unchanged.
    pub metadata: Vec<(String, String)>,
    /// Parameter count and operator counts of the source graph (for `inspect`).
    pub params: u64,
    pub source_operators: Vec<(String, usize)>,
    pub values: Vec<Value>,
    pub blobs: Vec<Blob>,
    pub ops: Vec<Op>,
    pub input: ValueId,
    pub output: ValueId,
}

/// Whether a flag is off (`skip_serializing_if` for flags that default to off).
fn is_false(flag: &bool) -> bool {
    !flag
}

/// Clamp bounds in JSON: an unbounded side (infinite) is written as `null`.
macro_rules! bound {
    ($name:ident, $infinity:expr) => {
        mod $name {
            use serde::{Deserialize, Deserializer, Serializer};

            pub(crate) fn serialize<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
                if v.is_finite() {
                    s.serialize_f32(*v)
                } else {
                    s.serialize_none()
                }
            }

            pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
                Ok(Option::<f32>::deserialize(d)?.unwrap_or($infinity))
            }
        }
    };
}
bound!(lower, f32::NEG_INFINITY);
bound!(upper, f32::INFINITY);
