//! Compiling an ONNX student into a `.student` file (needs the `onnx` feature).
//!
//! The compiler reads the ONNX graph itself rather than tract's typed graph: tract folds a
//! QDQ graph's integer weights back into floats, while the compiler must see them to run
//! the graph in integer arithmetic. It walks the nodes in order and:
//!
//! - folds constants, shape computations, `Constant` nodes and dequantized weights;
//! - folds a batch norm into the convolution before it, and a Relu or Clip into the
//!   convolution or dense layer before it;
//! - turns `DequantizeLinear -> Conv/Gemm/MatMul [-> Relu/Clip] [-> QuantizeLinear]` with
//!   int8 weights into one integer op (u8 x i8 -> i32, per-channel requantization);
//! - runs max pooling and reshapes directly on u8 values (they commute with dequantizing),
//!   drops `QuantizeLinear` of a value dequantized with the same parameters, and turns a
//!   quantized elementwise function into a 256-entry table;
//! - computes everything else in f32 between explicit quantize and dequantize steps, which
//!   is exactly what the QDQ graph specifies (a quantized Softmax, say, is dequantized,
//!   normalized along its axis in f32, and quantized again);
//! - packs dense weights in the kernels' panel layout, and keeps fp16 weights in fp16.
//!
//! Every activation keeps the batch as its first axis, so one compiled file serves any
//! batch size. An operator outside this set is an error naming the node.

mod consts;

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use half::f16;
use sha2::{Digest, Sha256};
use tract_onnx::pb;

use crate::compiled::format;
use crate::compiled::ir::{
    BinaryFn, BlobId, DType, Manifest, Op, Operand, PoolKind, QuantOut, UnaryFn, Value, ValueId,
    Weights, Window,
};
use crate::error::Error;
use crate::info::GraphInfo;
use consts::{Const, Data};

/// A compiled file and what the compiler made of the graph.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The `.student` file.
    pub bytes: Vec<u8>,
    /// The compiled ops by name with their counts, sorted by name (`conv-int8: 2`, ...).
    pub ops: Vec<(String, usize)>,
}

/// Compiles the ONNX student in `bytes` (named `origin` in errors).
///
/// # Errors
/// [`Error::NotOnnx`], [`Error::Unsupported`], [`Error::TooLarge`] (default [`Limits`](crate::Limits))
/// and [`Error::Malformed`] as for opening, [`Error::InvalidCard`]
/// for a malformed model card, and [`Error::Compile`] naming the node the compiler cannot
/// translate and why.
pub fn compile_onnx(bytes: &[u8], origin: &str) -> Result<Compiled, Error> {
    let not_onnx = |reason: String| Error::NotOnnx {
        origin: origin.to_string(),
        reason,
    };
    if format::is_compiled(bytes) {
        return Err(not_onnx(
            "it is already a compiled student; compile the ONNX file it was made from".to_string(),
        ));
    }
    // The default limits bound what the compiler decodes and folds, as they bound opening.
    let limits = crate::Limits::default();
    let check = crate::limits::Check {
        limits: &limits,
        origin,
    };
    let proto = crate::onnx_wire::decode_checked(bytes, &check)?;
    crate::limits::check_onnx(&proto, &check, 1)?;
    let Some(graph) = &proto.graph else {
        return Err(not_onnx("no graph".to_string()));
    };
    let info = GraphInfo::read(&proto, origin)?;
    // The card must be valid before anything is written.
    info.card(origin)?;
    let compile_error = |node: String, reason: String| Error::Compile {
        origin: origin.to_string(),
        node,
        reason,
    };
    // The compiler checks what it reads and reports errors; should a malformed graph still
    // reach a broken invariant, the panic becomes an error instead of reaching the caller.
    // The default domain's opset: it decides what some operators mean. A model that
    // imports none is read with today's meanings.
    let opset = crate::onnx_info::opset_version(&proto.opset_import, "").unwrap_or(i64::MAX);
    catch_unwind(AssertUnwindSafe(|| {
        compile_graph(bytes, graph, &info, origin, opset)
    }))
    .unwrap_or_else(|_| {
        Err(compile_error(
            "the graph".to_string(),
            "the compiler failed on an unexpected graph structure".to_string(),
        ))
    })
}

fn compile_graph(
    bytes: &[u8],
    graph: &pb::GraphProto,
    info: &GraphInfo,
    origin: &str,
    opset: i64,
) -> Result<Compiled, Error> {
    let compile_error = |node: String, reason: String| Error::Compile {
        origin: origin.to_string(),
        node,
        reason,
    };
    let mut b = Builder::new(graph).map_err(|(node, reason)| compile_error(node, reason))?;
    b.opset = opset;
    let input_name = b.input_name.clone();
    let input = b.new_value(DType::F32, info.input_dims[1..].to_vec());
    b.names.insert(input_name, Tensor::Value(input));
    for i in 0..graph.node.len() {
        if b.done[i] {
            continue;
        }
        let node = &graph.node[i];
        b.done[i] = true;
        b.lower(node).map_err(|reason| {
            let name = if node.name.is_empty() {
                format!("#{i}")
            } else {
                format!("`{}`", node.name)
            };
            compile_error(format!("{} {name}", node.op_type), reason)
        })?;
    }
    let output_name = graph
        .output
        .first()
        .map(|o| o.name.clone())
        .unwrap_or_default();
    let output = b
        .float_value(&output_name)
        .map_err(|reason| compile_error(format!("output `{output_name}`"), reason))?;
    let out_dims = &b.values[output].dims;
    if out_dims != &[info.classes] {
        return Err(compile_error(
            format!("output `{output_name}`"),
            format!(
                "computes dimensions {out_dims:?} per sample, expected [{}]",
                info.classes
            ),
        ));
    }
    b.fuse_int8_max_pools(output);
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    for op in &b.ops {
        *counts.entry(op.name()).or_default() += 1;
    }
    let mut ops: Vec<(String, usize)> = counts
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    ops.sort();
    let mut manifest = Manifest {
        producer: format!("student-runtime {}", env!("CARGO_PKG_VERSION")),
        source_sha256: Sha256::digest(bytes)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect(),
        metadata: info.metadata.clone(),
        params: info.params,
        source_operators: info.operators.clone(),
        values: b.values,
        blobs: b.blobs,
        ops: b.ops,
        input,
        output,
    };
    let bytes = format::write(&mut manifest, &b.blob_data);
    // What is written must open: the checks of opening (a NaN weight from the graph, a
    // scale that overflowed) are run on it here, so that an app never receives a file
    // from the compiler that its runtime then refuses.
    let limits = crate::Limits::default();
    let check = crate::limits::Check {
        limits: &limits,
        origin,
    };
    if let Err(e) = crate::compiled::open(&bytes, origin, student_kernels::Isa::Portable, &check, 1)
    {
        let why = match e {
            Error::NotCompiled { reason, .. } => reason,
            other => other.to_string(),
        };
        return Err(compile_error(
            "the graph".to_string(),
            format!("the file it would write does not open: {why}"),
        ));
    }
    Ok(Compiled { bytes, ops })
}

/// What an ONNX tensor name stands for while compiling.
#[derive(Debug, Clone)]
enum Tensor {
    Const(Const),
    Value(ValueId),
    /// A u8 value dequantized lazily: its f32 form is materialized only when an op needs
    /// it, so integer ops can read the u8 value directly.
    Deq {
        src: ValueId,
        scale: f32,
        zero_point: u8,
        float: Option<ValueId>,
    },
}

impl Tensor {
    /// The run-time value `y`, lazily dequantized when `quantization` (scale, zero point)
    /// is given.
    fn of(y: ValueId, quantization: Option<(f32, u8)>) -> Tensor {
        match quantization {
            Some((scale, zero_point)) => Tensor::Deq {
                src: y,
                scale,
                zero_point,
                float: None,
            },
            None => Tensor::Value(y),
        }
    }
}

/// Int8 weights behind a folded `DequantizeLinear`.
#[derive(Debug, Clone)]
struct QWeight {
    data: Vec<i8>,
    dims: Vec<usize>,
    /// One scale, or one per index of `axis`.
    scales: Vec<f32>,
    axis: usize,
}

struct Builder<'g> {
    nodes: &'g [pb::NodeProto],
    input_name: String,
    outputs: Vec<String>,
    values: Vec<Value>,
    blobs: Vec<crate::compiled::ir::Blob>,
    blob_data: Vec<Vec<u8>>,
    ops: Vec<Op>,
    names: HashMap<String, Tensor>,
    qweights: HashMap<String, QWeight>,
    halves: HashMap<String, Vec<f16>>,
    consumers: HashMap<String, Vec<usize>>,
    done: Vec<bool>,
    /// The opset of the default domain (`i64::MAX` when the model imports none).
    opset: i64,
}

fn attr<'n>(node: &'n pb::NodeProto, name: &str) -> Option<&'n pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_i(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

fn attr_f(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn attr_s(node: &pb::NodeProto, name: &str) -> String {
    attr(node, name).map_or_else(String::new, |a| String::from_utf8_lossy(&a.s).into_owned())
}

fn to_usize(v: &[i64], what: &str) -> Result<Vec<usize>, String> {
    v.iter()
        .map(|&x| usize::try_from(x).map_err(|_| format!("{what} {x} is negative")))
        .collect()
}

/// ONNX QuantizeLinear of one value: round half to even, saturate to u8.
fn quantize(x: f32, scale: f32, zero_point: u8) -> u8 {
    ((x / scale).round_ties_even() + zero_point as f32).clamp(0.0, 255.0) as u8
}

fn dequantize(q: u8, scale: f32, zero_point: u8) -> f32 {
    (q as i32 - zero_point as i32) as f32 * scale
}

impl<'g> Builder<'g> {
    fn new(graph: &'g pb::GraphProto) -> Result<Builder<'g>, (String, String)> {
        let mut names = HashMap::new();
        let qweights = HashMap::new();
        for t in &graph.initializer {
            let c = consts::decode(t).map_err(|r| (format!("initializer `{}`", t.name), r))?;
            names.insert(t.name.clone(), Tensor::Const(c));
        }
        let input_name = graph
            .input
            .iter()
            .find(|i| !names.contains_key(&i.name))
            .map(|i| i.name.clone())
            .unwrap_or_default();
        let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for input in node.input.iter().filter(|s| !s.is_empty()) {
                let list = consumers.entry(input.clone()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        Ok(Builder {
            nodes: &graph.node,
            input_name,
            outputs: graph.output.iter().map(|o| o.name.clone()).collect(),
            values: Vec::new(),
            blobs: Vec::new(),
            blob_data: Vec::new(),
            ops: Vec::new(),
            names,
            qweights,
            halves: HashMap::new(),
            opset: i64::MAX,
            consumers,
            done: vec![false; graph.node.len()],
        })
    }

    fn new_value(&mut self, dtype: DType, dims: Vec<usize>) -> ValueId {
        self.values.push(Value { dtype, dims });
        self.values.len() - 1
    }

    fn blob(&mut self, dtype: DType, bytes: Vec<u8>) -> BlobId {
        self.blobs.push(crate::compiled::ir::Blob {
            offset: 0,
            len: 0,
            dtype,
        });
        self.blob_data.push(bytes);
        self.blobs.len() - 1
    }

    fn blob_f32(&mut self, data: &[f32]) -> BlobId {
        self.blob(DType::F32, bytemuck::cast_slice(data).to_vec())
    }

    fn blob_i32(&mut self, data: &[i32]) -> BlobId {
        self.blob(DType::I32, bytemuck::cast_slice(data).to_vec())
    }

    /// Fuses into an integer convolution with a u8 output the 2x2, stride-2 max pool that
    /// is its output's only reader. Requantizing each window's largest sum gives the bytes
    /// that pooling the requantized sums gives as long as requantizing never decreases as
    /// the sum grows, which holds when every scale of the convolution is positive (weight
    /// scales are not checked elsewhere, so they are here). It is a quarter of the
    /// requantizing and no pass over the full-size output.
    fn fuse_int8_max_pools(&mut self, output: ValueId) {
        let mut i = 0;
        while i < self.ops.len() {
            if let Some((at, pooled)) = self.int8_pool_after(i, output) {
                self.ops.remove(at);
                if let Op::QConv { y, pool, .. } = &mut self.ops[i] {
                    *y = pooled;
                    *pool = true;
                }
            }
            i += 1;
        }
    }

    /// For `fuse_int8_max_pools`: the index and output value of the pool that op `i`
    /// can take in.
    fn int8_pool_after(&self, i: usize, output: ValueId) -> Option<(usize, ValueId)> {
        let Op::QConv {
            y,
            window: w,
            scale,
            out: QuantOut::U8 { .. },
            pool: false,
            ..
        } = &self.ops[i]
        else {
            return None;
        };
        let positive = crate::compiled::ir::scales_allow_pooling(&self.blob_data[*scale]);
        if *y == output || !positive || w.h_out % 2 == 1 || w.w_out % 2 == 1 {
            return None;
        }
        let mut readers = (0..self.ops.len()).filter(|&j| self.ops[j].inputs().contains(y));
        let (at, None) = (readers.next()?, readers.next()) else {
            return None;
        };
        let Op::Pool {
            kind: PoolKind::Max,
            window: p,
            y: pooled,
            ..
        } = &self.ops[at]
        else {
            return None;
        };
        let plain = (p.kh, p.kw, p.stride, p.pad, p.dilation) == (2, 2, [2, 2], [0, 0], [1, 1])
            && (p.h_out, p.w_out) == (w.h_out / 2, w.w_out / 2);
        plain.then_some((at, *pooled))
    }

    fn get(&self, name: &str) -> Result<&Tensor, String> {
        self.names
            .get(name)
            .ok_or_else(|| format!("input `{name}` is not produced by any earlier node"))
    }

    fn constant(&self, name: &str) -> Result<&Const, String> {
        match self.get(name)? {
            Tensor::Const(c) => Ok(c),
            _ => Err(format!(
                "input `{name}` must be a constant (an initializer), but it is computed at run time"
            )),
        }
    }

    fn opt_const(&self, node: &pb::NodeProto, i: usize) -> Result<Option<&Const>, String> {
        match node.input.get(i).filter(|s| !s.is_empty()) {
            Some(name) => self.constant(name).map(Some),
            None => Ok(None),
        }
    }

    /// The f32 activation behind `name`, dequantizing a u8 value if needed.
    fn float_value(&mut self, name: &str) -> Result<ValueId, String> {
        match self.get(name)?.clone() {
            Tensor::Value(v) if self.values[v].dtype == DType::F32 => Ok(v),
            Tensor::Value(_) => Err(format!(
                "`{name}` is quantized (uint8) where a float tensor is expected"
            )),
            Tensor::Deq { float: Some(v), .. } => Ok(v),
            Tensor::Deq {
                src,
                scale,
                zero_point,
                float: None,
            } => {
                let y = self.new_value(DType::F32, self.values[src].dims.clone());
                self.ops.push(Op::Dequantize {
                    x: src,
                    y,
                    scale,
                    zero_point,
                });
                self.names.insert(
                    name.to_string(),
                    Tensor::Deq {
                        src,
                        scale,
                        zero_point,
                        float: Some(y),
                    },
                );
                Ok(y)
            }
            Tensor::Const(_) => Err(format!(
                "`{name}` is a constant where a run-time tensor is expected"
            )),
        }
    }

    /// The run-time value behind `name`, with its quantization when it is a lazily
    /// dequantized u8 value.
    fn activation(&self, name: &str) -> Result<(ValueId, Option<(f32, u8)>), String> {
        match self.get(name)? {
            Tensor::Value(v) => Ok((*v, None)),
            Tensor::Deq {
                src,
                scale,
                zero_point,
                ..
            } => Ok((*src, Some((*scale, *zero_point)))),
            Tensor::Const(_) => Err(format!(
                "`{name}` is a constant mixed with run-time shape inputs, which is not supported"
            )),
        }
    }

    fn dims(&self, v: ValueId) -> Vec<usize> {
        self.values[v].dims.clone()
    }

    /// The one node reading `name`, when exactly one does and it is not a graph output.
    /// A reader without the inputs and output its kind needs is never fused: it is lowered
    /// on its own, and refused there ([`check_arity`]).
    fn sole_consumer(&self, name: &str) -> Option<usize> {
        if self.outputs.iter().any(|o| o == name) {
            return None;
        }
        match self.consumers.get(name).map(Vec::as_slice) {
            Some([i]) if !self.done[*i] && check_arity(&self.nodes[*i]).is_ok() => Some(*i),
            _ => None,
        }
    }

    /// A Relu or Clip with constant bounds as the sole reader of `name`: its bounds, output
    /// name and node.
    fn follow_activation(&self, name: &str) -> Option<(f32, f32, String, usize)> {
        let i = self.sole_consumer(name)?;
        let node = &self.nodes[i];
        let (lo, hi) = match node.op_type.as_str() {
            "Relu" => (0.0, f32::INFINITY),
            "Clip" => self.clip_bounds(node).ok()?,
            _ => return None,
        };
        Some((lo, hi, node.output.first()?.clone(), i))
    }

    /// The output value of a float convolution whose output (`dims`) is named `out_name`,
    /// and whether a 2x2 max pool reading it is fused in: then the value is the pool's
    /// output, `out_name` becomes the pool's, and the pool node is done.
    fn conv_output(&mut self, out_name: &mut String, dims: [usize; 3]) -> (ValueId, bool) {
        match self.follow_max_pool_2x2(out_name, dims) {
            Some((name, i)) => {
                self.done[i] = true;
                *out_name = name;
                let [c, h, w] = dims;
                (self.new_value(DType::F32, vec![c, h / 2, w / 2]), true)
            }
            None => (self.new_value(DType::F32, dims.to_vec()), false),
        }
    }

    /// A MaxPool over 2x2 windows with stride 2 as the sole reader of `name`, a
    /// `[channels, height, width]` value of even height and width: its output name and
    /// node, for a convolution to fuse into its output. Padding at the end, or ceil mode,
    /// changes nothing on even sizes and is accepted; any other window is left alone.
    fn follow_max_pool_2x2(&self, name: &str, dims: [usize; 3]) -> Option<(String, usize)> {
        let i = self.sole_consumer(name)?;
        let node = &self.nodes[i];
        let indices = node.output.iter().skip(1).any(|o| !o.is_empty());
        if node.op_type != "MaxPool" || indices || attr_ints(node, "kernel_shape")? != [2, 2] {
            return None;
        }
        let [c, h, w] = dims;
        if h % 2 == 1 || w % 2 == 1 {
            return None;
        }
        let win = self.window(node, &dims, [2, 2], c, 1).ok()?;
        let plain = (win.stride, win.pad, win.dilation) == ([2, 2], [0, 0], [1, 1])
            && (win.h_out, win.w_out) == (h / 2, w / 2);
        plain.then(|| node.output.first().map(|o| (o.clone(), i)))?
    }

    fn clip_bounds(&self, node: &pb::NodeProto) -> Result<(f32, f32), String> {
        let bound = |i: usize, default: f32| -> Result<f32, String> {
            match self.opt_const(node, i)? {
                Some(c) if c.is_scalar() => Ok(c.data.to_f32()[0]),
                Some(_) => Err("Clip bounds must be scalars".to_string()),
                None => Ok(default),
            }
        };
        let lo = bound(1, attr_f(node, "min", f32::NEG_INFINITY))?;
        let hi = bound(2, attr_f(node, "max", f32::INFINITY))?;
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(format!("Clip bounds [{lo}, {hi}] are empty"));
        }
        Ok((lo, hi))
    }

    /// The scale and zero point of a QuantizeLinear/DequantizeLinear of activations.
    ///
    /// Activations quantized as int8 are kept as uint8 with the zero point moved up by 128:
    /// `q + 128` with zero point `z + 128` dequantizes to the same value, and quantizing
    /// saturates at the same values. The shift is invisible outside, since the model's
    /// input and output are float.
    fn qparams(&self, node: &pb::NodeProto) -> Result<(f32, u8), String> {
        let scale = self.opt_const(node, 1)?.ok_or("the scale is missing")?;
        if !scale.is_scalar() {
            return Err(
                "per-channel quantization of activations is not supported (one scale per tensor is)"
                    .to_string(),
            );
        }
        let s = scale.data.to_f32()[0];
        if !(s.is_finite() && s > 0.0) {
            return Err(format!("scale {s} is not a positive finite number"));
        }
        let zp = match self.opt_const(node, 2)? {
            None => 0,
            Some(Const {
                data: Data::U8(z), ..
            }) if z.len() == 1 => z[0],
            Some(Const {
                data: Data::I8(z), ..
            }) if z.len() == 1 => (z[0] as i16 + 128) as u8,
            Some(c) => {
                return Err(format!(
                    "activations quantized as {} are not supported; quantize activations as uint8 or int8 with one zero point",
                    c.data.type_name()
                ));
            }
        };
        Ok((s, zp))
    }

    /// A QuantizeLinear as the sole reader of `name`: its parameters, output and node.
    fn follow_quantize(&self, name: &str) -> Option<(f32, u8, String, usize)> {
        let i = self.sole_consumer(name)?;
        let node = &self.nodes[i];
        if node.op_type != "QuantizeLinear" {
            return None;
        }
        let (s, zp) = self.qparams(node).ok()?;
        Some((s, zp, node.output.first()?.clone(), i))
    }

    fn lower(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        if !node.domain.is_empty() && node.domain != "ai.onnx" {
            return Err(format!(
                "operators of domain `{}` are not supported",
                node.domain
            ));
        }
        check_arity(node)?;
        let out = node.output[0].clone();
        if node.op_type == "Constant" {
            let t = attr(node, "value")
                .and_then(|a| a.t.as_ref())
                .ok_or("only tensor-valued Constant nodes are supported")?;
            self.names.insert(out, Tensor::Const(consts::decode(t)?));
            return Ok(());
        }
        if self.fold(node)? {
            return Ok(());
        }
        match node.op_type.as_str() {
            "Conv" => self.conv(node),
            "Gemm" | "MatMul" => self.dense(node),
            "QuantizeLinear" => self.quantize_linear(node),
            "DequantizeLinear" => self.dequantize_linear(node),
            "MaxPool" | "AveragePool" => self.pool(node),
            "GlobalAveragePool" => {
                let x = self.float_value(&node.input[0])?;
                let dims = self.dims(x);
                if dims.len() < 2 {
                    return Err(format!("input of dimensions {dims:?} has no spatial axes"));
                }
                let mut y_dims = vec![dims[0]];
                y_dims.extend(std::iter::repeat_n(1, dims.len() - 1));
                let y = self.new_value(DType::F32, y_dims);
                self.ops.push(Op::GlobalAvgPool { x, y });
                self.names.insert(out, Tensor::Value(y));
                Ok(())
            }
            "Relu" | "Sigmoid" | "Tanh" | "LeakyRelu" | "HardSigmoid" | "HardSwish" | "Clip"
            | "Gelu" | "Exp" | "Sqrt" | "Neg" | "Abs" | "Erf" => self.unary(node),
            "Add" | "Sub" | "Mul" | "Div" => self.binary(node),
            "Softmax" => {
                let x = self.float_value(&node.input[0])?;
                let dims = self.dims(x);
                // Before opset 13, Softmax normalizes over `axis` (1 by default) and every
                // axis after it together.
                let before_13 = self.opset < 13;
                let axis = consts::axis(
                    attr_i(node, "axis", if before_13 { 1 } else { -1 }),
                    dims.len() + 1,
                )?;
                if axis == 0 {
                    return Err("softmax over the batch axis is not supported".to_string());
                }
                if before_13 && dims[axis..].iter().any(|&d| d != 1) {
                    return Err(format!(
                        "at opset {} Softmax normalizes over axis {axis} and the axes after \
                         it (of sizes {:?}) together, which the compiler does not support; run the \
                         .onnx file through tract, or export it at opset 13 or later",
                        self.opset,
                        &dims[axis..]
                    ));
                }
                let y = self.new_value(DType::F32, dims);
                self.ops.push(Op::Softmax { x, y, axis });
                self.names.insert(out, Tensor::Value(y));
                Ok(())
            }
            "BatchNormalization" => {
                let x = self.float_value(&node.input[0])?;
                let (scale, shift) = self.batch_norm(node)?;
                let y = self.new_value(DType::F32, self.dims(x));
                let (scale, shift) = (self.blob_f32(&scale), self.blob_f32(&shift));
                self.ops.push(Op::ChannelAffine { x, y, scale, shift });
                self.names.insert(out, Tensor::Value(y));
                Ok(())
            }
            "LayerNormalization" => {
                let x = self.float_value(&node.input[0])?;
                let dims = self.dims(x);
                let axis = consts::axis(attr_i(node, "axis", -1), dims.len() + 1)?;
                if axis != dims.len() {
                    return Err(
                        "layer normalization over more than the last axis is not supported"
                            .to_string(),
                    );
                }
                let size = dims[dims.len() - 1];
                let gamma = self.constant(&node.input[1])?.data.to_f32();
                let beta = self.opt_const(node, 2)?.map(|c| c.data.to_f32());
                if gamma.len() != size || beta.as_ref().is_some_and(|b| b.len() != size) {
                    return Err(format!("scale and bias must hold {size} values"));
                }
                let gamma = self.blob_f32(&gamma);
                let beta = beta.map(|b| self.blob_f32(&b));
                let y = self.new_value(DType::F32, dims);
                self.ops.push(Op::LayerNorm {
                    x,
                    y,
                    size,
                    epsilon: attr_f(node, "epsilon", 1e-5),
                    gamma,
                    beta,
                });
                self.names.insert(out, Tensor::Value(y));
                Ok(())
            }
            "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" | "Identity" | "Dropout" => {
                self.reshape(node)
            }
            "Transpose" => self.transpose(node),
            "Concat" => self.concat(node),
            "Shape" => {
                let (x, _) = self.activation(&node.input[0])?;
                let dims: Vec<i64> = std::iter::once(1)
                    .chain(self.values[x].dims.iter().map(|&d| d as i64))
                    .collect();
                // `start` and `end` (opset 15) take a part of the shape, counted from the
                // back when negative and clamped to the rank.
                let rank = dims.len() as i64;
                let at = |v: i64| (if v < 0 { v.saturating_add(rank) } else { v }).clamp(0, rank);
                let start = at(attr_i(node, "start", 0)) as usize;
                let end = (at(attr_i(node, "end", rank)) as usize).max(start);
                let dims = dims[start..end].to_vec();
                self.names
                    .insert(out, Tensor::Const(Const::i64(vec![dims.len()], dims)));
                Ok(())
            }
            "Cast" => {
                let to = attr_i(node, "to", 0);
                let x = self.float_value(&node.input[0])?;
                if to != pb::tensor_proto::DataType::Float as i32 as i64 {
                    return Err(format!(
                        "casting a run-time tensor to type {to} is not supported (float is)"
                    ));
                }
                self.names.insert(out, Tensor::Value(x));
                Ok(())
            }
            "Gather" => {
                let table = self.constant(&node.input[0])?.clone();
                let x = self.float_value(&node.input[1])?;
                if attr_i(node, "axis", 0) != 0 || table.dims.len() != 2 {
                    return Err(
                        "only embedding lookups (a [rows, width] table, axis 0) are supported"
                            .to_string(),
                    );
                }
                let (rows, width) = (table.dims[0], table.dims[1]);
                let mut dims = self.dims(x);
                dims.push(width);
                let blob = self.blob_f32(&table.data.to_f32());
                let y = self.new_value(DType::F32, dims);
                self.ops.push(Op::Gather {
                    x,
                    y,
                    table: blob,
                    rows,
                    width,
                });
                self.names.insert(out, Tensor::Value(y));
                Ok(())
            }
            other => Err(format!(
                "operator {other} is not supported by the compiler (run the .onnx file through tract instead)"
            )),
        }
    }

    /// Folds a node whose inputs are all constants. Returns whether it did.
    fn fold(&mut self, node: &pb::NodeProto) -> Result<bool, String> {
        let inputs: Vec<&String> = node.input.iter().filter(|s| !s.is_empty()).collect();
        if inputs.is_empty()
            || !inputs
                .iter()
                .all(|n| matches!(self.names.get(n.as_str()), Some(Tensor::Const(_))))
        {
            return Ok(false);
        }
        let out = node.output.first().cloned().unwrap_or_default();
        let c = |i: usize| self.constant(&node.input[i]);
        let folded = match node.op_type.as_str() {
            "DequantizeLinear" => {
                let x = c(0)?.clone();
                let scale = self
                    .opt_const(node, 1)?
                    .ok_or("the scale is missing")?
                    .data
                    .to_f32();
                let zp = self.opt_const(node, 2)?.map(|z| z.data.to_f64());
                // ONNX gives the zero point the scale's shape: one value per scale.
                if scale.is_empty() {
                    return Err("the scale holds no values".to_string());
                }
                if let Some(z) = zp.as_ref().filter(|z| z.len() != scale.len()) {
                    return Err(format!(
                        "{} zero points for {} scales, expected one per scale",
                        z.len(),
                        scale.len()
                    ));
                }
                let axis = if scale.len() > 1 {
                    consts::axis(attr_i(node, "axis", 1), x.dims.len())?
                } else {
                    0
                };
                let per = if scale.len() > 1 {
                    if x.dims[axis] != scale.len() {
                        return Err(format!(
                            "{} scales for axis {axis} of {:?}",
                            scale.len(),
                            x.dims
                        ));
                    }
                    x.dims[axis + 1..].iter().product::<usize>()
                } else {
                    x.data.len().max(1)
                };
                let values = x.data.to_f64();
                let data: Vec<f32> = values
                    .iter()
                    .enumerate()
                    .map(|(i, &q)| {
                        let ch = if scale.len() > 1 {
                            (i / per) % scale.len()
                        } else {
                            0
                        };
                        let z = zp.as_ref().map_or(0.0, |z| z[ch]);
                        ((q - z) as f32) * scale[ch]
                    })
                    .collect();
                if let Data::I8(q) = &x.data {
                    if zp.as_ref().is_none_or(|z| z.iter().all(|&v| v == 0.0)) {
                        self.qweights.insert(
                            out.clone(),
                            QWeight {
                                data: q.clone(),
                                dims: x.dims.clone(),
                                scales: scale.clone(),
                                axis,
                            },
                        );
                    }
                }
                Const::f32(x.dims, data)
            }
            "Cast" => {
                let x = c(0)?.clone();
                let to = attr_i(node, "to", 0) as i32;
                use pb::tensor_proto::DataType as T;
                if let (Data::F16(h), true) = (&x.data, to == T::Float as i32) {
                    self.halves.insert(out.clone(), h.clone());
                }
                match to {
                    t if t == T::Float as i32 => Const::f32(x.dims, x.data.to_f32()),
                    t if t == T::Int64 as i32 => Const::i64(
                        x.dims,
                        x.data.to_f64().into_iter().map(|v| v as i64).collect(),
                    ),
                    t if t == T::Float16 as i32 => Const {
                        dims: x.dims,
                        data: Data::F16(x.data.to_f32().into_iter().map(f16::from_f32).collect()),
                    },
                    t => return Err(format!("constant cast to type {t} is not supported")),
                }
            }
            "Identity" => c(0)?.clone(),
            "Add" | "Sub" | "Mul" | "Div" => consts::fold_binary(&node.op_type, c(0)?, c(1)?)?,
            "Unsqueeze" | "Squeeze" | "Reshape" | "Flatten" => {
                let x = c(0)?.clone();
                let dims = self.reshaped(node, &x.dims)?;
                Const { dims, data: x.data }
            }
            "Concat" => {
                let parts: Vec<Const> = (0..node.input.len())
                    .map(|i| c(i).cloned())
                    .collect::<Result<_, _>>()?;
                let all: Option<Vec<i64>> = parts
                    .iter()
                    .map(|p| p.data.to_i64())
                    .collect::<Option<Vec<_>>>()
                    .map(|v| v.concat());
                match all {
                    Some(v) if parts.iter().all(|p| p.dims.len() == 1) => {
                        Const::i64(vec![v.len()], v)
                    }
                    _ => {
                        return Err(
                            "only 1-D integer constants are concatenated at compile time"
                                .to_string(),
                        );
                    }
                }
            }
            "Gather" => {
                let x = c(0)?;
                let idx = c(1)?.data.to_i64().ok_or("indices must be integers")?;
                let v = x
                    .data
                    .to_i64()
                    .ok_or("only integer constants are gathered at compile time")?;
                if x.dims.len() != 1 || attr_i(node, "axis", 0) != 0 {
                    return Err("only 1-D constants are gathered at compile time".to_string());
                }
                let picked = idx
                    .iter()
                    .map(|&i| {
                        let i = if i < 0 { i + v.len() as i64 } else { i };
                        v.get(i as usize)
                            .copied()
                            .ok_or(format!("index {i} out of range"))
                    })
                    .collect::<Result<Vec<i64>, String>>()?;
                Const::i64(c(1)?.dims.clone(), picked)
            }
            "Transpose" => {
                let x = c(0)?;
                let perm = match attr_ints(node, "perm") {
                    Some(p) => to_usize(&p, "axis")?,
                    None => (0..x.dims.len()).rev().collect(),
                };
                let (dims, data) = consts::transpose_f32(&x.dims, &x.data.to_f32(), &perm);
                Const::f32(dims, data)
            }
            _ => return Ok(false),
        };
        self.names.insert(out, Tensor::Const(folded));
        Ok(true)
    }

    /// The output dimensions of a shape-only node applied to `dims` (the full shape).
    fn reshaped(&self, node: &pb::NodeProto, dims: &[usize]) -> Result<Vec<usize>, String> {
        let axes = || -> Result<Vec<i64>, String> {
            match self.opt_const(node, 1)? {
                Some(c) => c.data.to_i64().ok_or("axes must be integers".to_string()),
                None => Ok(attr_ints(node, "axes").unwrap_or_default()),
            }
        };
        match node.op_type.as_str() {
            "Identity" | "Dropout" => Ok(dims.to_vec()),
            "Flatten" => {
                let axis = attr_i(node, "axis", 1);
                let axis = if axis < 0 {
                    axis + dims.len() as i64
                } else {
                    axis
                };
                if !(0..=dims.len() as i64).contains(&axis) {
                    return Err(format!("axis {axis} is outside rank {}", dims.len()));
                }
                let axis = axis as usize;
                Ok(vec![
                    dims[..axis].iter().product(),
                    dims[axis..].iter().product(),
                ])
            }
            "Reshape" => {
                let target = self
                    .constant(&node.input[1])?
                    .data
                    .to_i64()
                    .ok_or("the target shape must be integers")?;
                consts::reshape_dims(dims, &target)
            }
            "Squeeze" => {
                let axes = axes()?;
                let axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| consts::axis(a, dims.len()))
                    .collect::<Result<_, _>>()?;
                Ok(dims
                    .iter()
                    .enumerate()
                    .filter(|&(i, &d)| {
                        !(if axes.is_empty() {
                            d == 1
                        } else {
                            axes.contains(&i) && d == 1
                        })
                    })
                    .map(|(_, &d)| d)
                    .collect())
            }
            "Unsqueeze" => {
                let axes = axes()?;
                let rank = dims.len() + axes.len();
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| consts::axis(a, rank))
                    .collect::<Result<_, _>>()?;
                axes.sort_unstable();
                let mut out = dims.to_vec();
                for a in axes {
                    out.insert(a.min(out.len()), 1);
                }
                Ok(out)
            }
            other => Err(format!("{other} is not a shape operation")),
        }
    }

    fn reshape(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let out = node.output[0].clone();
        let (src, deq) = self.activation(&node.input[0])?;
        let full: Vec<usize> = std::iter::once(1).chain(self.dims(src)).collect();
        let dims = self.reshaped(node, &full)?;
        if dims.first() != Some(&1) || dims.len() < 2 {
            return Err(format!(
                "the result {dims:?} moves or removes the batch axis of {full:?}"
            ));
        }
        let dims = dims[1..].to_vec();
        let y = if dims == self.dims(src) {
            src
        } else {
            let y = self.new_value(self.values[src].dtype, dims);
            self.ops.push(Op::Copy { x: src, y });
            y
        };
        self.names.insert(out, Tensor::of(y, deq));
        Ok(())
    }

    fn transpose(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let (src, deq) = self.activation(&node.input[0])?;
        let dims = self.dims(src);
        let perm = match attr_ints(node, "perm") {
            Some(p) => to_usize(&p, "axis")?,
            None => (0..=dims.len()).rev().collect(),
        };
        if perm.first() != Some(&0) || perm.len() != dims.len() + 1 {
            return Err(format!("permutation {perm:?} moves the batch axis"));
        }
        let perm: Vec<usize> = perm[1..].iter().map(|p| p.wrapping_sub(1)).collect();
        if perm.iter().any(|&p| p >= dims.len()) {
            return Err("invalid permutation".to_string());
        }
        let y_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
        let y = self.new_value(self.values[src].dtype, y_dims);
        self.ops.push(Op::Transpose { x: src, y, perm });
        self.names
            .insert(node.output[0].clone(), Tensor::of(y, deq));
        Ok(())
    }

    fn concat(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let parts: Vec<Tensor> = node
            .input
            .iter()
            .map(|n| self.get(n).cloned())
            .collect::<Result<_, _>>()?;
        // Dequantized inputs that share their parameters concatenate as u8.
        let shared = match parts.first() {
            Some(Tensor::Deq {
                scale, zero_point, ..
            }) => parts.iter().all(|p| {
                matches!(p, Tensor::Deq { scale: s, zero_point: z, .. } if s == scale && z == zero_point)
            })
            .then_some((*scale, *zero_point)),
            _ => None,
        };
        let xs: Vec<ValueId> = match shared {
            Some(_) => parts
                .iter()
                .filter_map(|p| match p {
                    Tensor::Deq { src, .. } => Some(*src),
                    _ => None,
                })
                .collect(),
            None => node
                .input
                .iter()
                .map(|n| self.float_value(n))
                .collect::<Result<_, _>>()?,
        };
        let first = self.dims(xs[0]);
        let axis = consts::axis(attr_i(node, "axis", 1), first.len() + 1)?;
        if axis == 0 {
            return Err("concatenation along the batch axis is not supported".to_string());
        }
        let mut dims = first.clone();
        dims[axis - 1] = 0;
        for &x in &xs {
            let d = self.dims(x);
            if d.len() != first.len()
                || d.iter()
                    .zip(&first)
                    .enumerate()
                    .any(|(i, (p, q))| i != axis - 1 && p != q)
            {
                return Err(format!(
                    "inputs {first:?} and {d:?} do not concatenate along axis {axis}"
                ));
            }
            dims[axis - 1] += d[axis - 1];
        }
        let dtype = self.values[xs[0]].dtype;
        let y = self.new_value(dtype, dims);
        self.ops.push(Op::Concat { xs, y, axis });
        self.names
            .insert(node.output[0].clone(), Tensor::of(y, shared));
        Ok(())
    }

    fn unary_fn(&self, node: &pb::NodeProto) -> Result<UnaryFn, String> {
        Ok(match node.op_type.as_str() {
            "Relu" => UnaryFn::Relu,
            "Sigmoid" => UnaryFn::Sigmoid,
            "Tanh" => UnaryFn::Tanh,
            "LeakyRelu" => UnaryFn::LeakyRelu {
                alpha: attr_f(node, "alpha", 0.01),
            },
            "HardSigmoid" => UnaryFn::HardSigmoid {
                alpha: attr_f(node, "alpha", 0.2),
                beta: attr_f(node, "beta", 0.5),
            },
            "HardSwish" => UnaryFn::HardSwish,
            "Clip" => {
                let (lo, hi) = self.clip_bounds(node)?;
                UnaryFn::Clip { lo, hi }
            }
            "Gelu" => {
                if attr_s(node, "approximate") == "tanh" {
                    return Err("the tanh approximation of Gelu is not supported".to_string());
                }
                UnaryFn::Gelu
            }
            "Exp" => UnaryFn::Exp,
            "Sqrt" => UnaryFn::Sqrt,
            "Neg" => UnaryFn::Neg,
            "Abs" => UnaryFn::Abs,
            "Erf" => UnaryFn::Erf,
            other => return Err(format!("{other} is not elementwise")),
        })
    }

    fn unary(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let f = self.unary_fn(node)?;
        let out = node.output[0].clone();
        // A quantized elementwise function is a table from u8 to u8.
        if let Tensor::Deq {
            src,
            scale,
            zero_point,
            ..
        } = self.get(&node.input[0])?.clone()
        {
            if let Some((s, z, q_out, qi)) = self.follow_quantize(&out) {
                let table: Vec<u8> = (0..=255u8)
                    .map(|v| quantize(f.apply(dequantize(v, scale, zero_point)), s, z))
                    .collect();
                let y = self.new_value(DType::U8, self.dims(src));
                self.ops.push(Op::Lut { x: src, y, table });
                self.done[qi] = true;
                // The quantize's output is the u8 tensor; its float input had no other reader.
                self.names.insert(q_out, Tensor::Value(y));
                return Ok(());
            }
        }
        let x = self.float_value(&node.input[0])?;
        let y = self.new_value(DType::F32, self.dims(x));
        self.ops.push(Op::Unary { x, y, f });
        self.names.insert(out, Tensor::Value(y));
        Ok(())
    }

    fn binary(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let f = match node.op_type.as_str() {
            "Add" => BinaryFn::Add,
            "Sub" => BinaryFn::Sub,
            "Mul" => BinaryFn::Mul,
            _ => BinaryFn::Div,
        };
        let mut operands = Vec::new();
        let mut full_dims = Vec::new();
        for name in &node.input[..2] {
            match self.get(name)?.clone() {
                Tensor::Const(c) => {
                    let data = c.data.to_f32();
                    let blob = self.blob_f32(&data);
                    full_dims.push(c.dims.clone());
                    operands.push(Operand::Const { blob, dims: c.dims });
                }
                _ => {
                    let v = self.float_value(name)?;
                    full_dims.push(std::iter::once(1).chain(self.dims(v)).collect());
                    operands.push(Operand::Value(v));
                }
            }
        }
        let shape = consts::broadcast(&full_dims[0], &full_dims[1])?;
        let value_rank = full_dims
            .iter()
            .zip(&operands)
            .filter(|(_, o)| matches!(o, Operand::Value(_)))
            .map(|(d, _)| d.len())
            .max()
            .unwrap_or(0);
        if shape.len() != value_rank || shape[0] != 1 {
            return Err(format!(
                "a constant of dimensions {:?} would change the batch axis",
                full_dims
            ));
        }
        let y = self.new_value(DType::F32, shape[1..].to_vec());
        let [a, b]: [Operand; 2] = operands
            .try_into()
            .map_err(|_| "a binary operator needs two operands".to_string())?;
        self.ops.push(Op::Binary { a, b, y, f });
        self.names.insert(node.output[0].clone(), Tensor::Value(y));
        Ok(())
    }

    fn batch_norm(&self, node: &pb::NodeProto) -> Result<(Vec<f32>, Vec<f32>), String> {
        if attr_i(node, "spatial", 1) == 0 {
            return Err(
                "`spatial` 0 (statistics per position, opsets 7 and 8) is not supported \
                        by the compiler; run the .onnx file through tract"
                    .to_string(),
            );
        }
        let get = |i: usize| -> Result<Vec<f32>, String> {
            Ok(self.constant(&node.input[i])?.data.to_f32())
        };
        let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
        let eps = attr_f(node, "epsilon", 1e-5);
        let n = gamma.len();
        if [beta.len(), mean.len(), var.len()].iter().any(|&l| l != n) {
            return Err("batch norm parameters differ in length".to_string());
        }
        let scale: Vec<f32> = (0..n).map(|c| gamma[c] / (var[c] + eps).sqrt()).collect();
        let shift: Vec<f32> = (0..n).map(|c| beta[c] - mean[c] * scale[c]).collect();
        Ok((scale, shift))
    }

    fn window(
        &self,
        node: &pb::NodeProto,
        dims: &[usize],
        kernel: [usize; 2],
        c_out: usize,
        groups: usize,
    ) -> Result<Window, String> {
        let [c_in, h, w] = dims else {
            return Err(format!(
                "input of dimensions {dims:?} is not [channels, height, width]"
            ));
        };
        let two = |name: &str, default: usize| -> Result<[usize; 2], String> {
            match attr_ints(node, name) {
                Some(v) if v.len() == 2 => {
                    let v = to_usize(&v, name)?;
                    Ok([v[0], v[1]])
                }
                Some(v) => Err(format!("{name} {v:?} must have 2 values")),
                None => Ok([default, default]),
            }
        };
        let stride = two("strides", 1)?;
        let dilation = two("dilations", 1)?;
        if stride.contains(&0) || dilation.contains(&0) || kernel.contains(&0) {
            return Err("strides, dilations and kernel sizes must be positive".to_string());
        }
        let span = |i: usize| dilation[i] * (kernel[i] - 1) + 1;
        // "kernel 3x3 with dilation 4x4 spans 9x9": what is compared with the input.
        let window = || {
            format!(
                "kernel {}x{} with dilation {}x{} spans {}x{}",
                kernel[0],
                kernel[1],
                dilation[0],
                dilation[1],
                span(0),
                span(1)
            )
        };
        let ceil = attr_i(node, "ceil_mode", 0) == 1;
        let size = [*h, *w];
        // (A window with both auto_pad and pads was refused by `check_onnx`.)
        let (pad_begin, out) = match attr_s(node, "auto_pad").as_str() {
            "" | "NOTSET" => {
                let pads = match attr_ints(node, "pads") {
                    Some(p) if p.len() == 4 => to_usize(&p, "padding")?,
                    Some(p) => return Err(format!("pads {p:?} must have 4 values")),
                    None => vec![0; 4],
                };
                let mut out = [0; 2];
                let padded = [size[0] + pads[0] + pads[2], size[1] + pads[1] + pads[3]];
                for i in 0..2 {
                    let total = padded[i];
                    if total < span(i) {
                        return Err(format!(
                            "its window ({}) is larger than the padded input ({}x{})",
                            window(),
                            padded[0],
                            padded[1]
                        ));
                    }
                    let steps = total - span(i);
                    out[i] = if ceil {
                        steps.div_ceil(stride[i])
                    } else {
                        steps / stride[i]
                    } + 1;
                    // A window may not start in the bottom or right padding.
                    if ceil && (out[i] - 1) * stride[i] >= size[i] + pads[i] {
                        out[i] -= 1;
                    }
                }
                ([pads[0], pads[1]], out)
            }
            "VALID" => {
                let mut out = [0; 2];
                for i in 0..2 {
                    if size[i] < span(i) {
                        return Err(format!(
                            "its window ({}) is larger than the input ({}x{})",
                            window(),
                            size[0],
                            size[1]
                        ));
                    }
                    out[i] = (size[i] - span(i)) / stride[i] + 1;
                }
                ([0, 0], out)
            }
            mode @ ("SAME_UPPER" | "SAME_LOWER") => {
                let mut pad = [0; 2];
                let mut out = [0; 2];
                for i in 0..2 {
                    out[i] = size[i].div_ceil(stride[i]);
                    let total = ((out[i] - 1) * stride[i] + span(i)).saturating_sub(size[i]);
                    pad[i] = if mode == "SAME_UPPER" {
                        total / 2
                    } else {
                        total - total / 2
                    };
                }
                (pad, out)
            }
            other => return Err(format!("auto_pad {other} is not supported")),
        };
        Ok(Window {
            c_in: *c_in,
            c_out,
            h_in: *h,
            w_in: *w,
            h_out: out[0],
            w_out: out[1],
            kh: kernel[0],
            kw: kernel[1],
            stride,
            pad: pad_begin,
            dilation,
            groups,
        })
    }

    fn pool(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let kernel = attr_ints(node, "kernel_shape").ok_or("kernel_shape is missing")?;
        let kernel = to_usize(&kernel, "kernel size")?;
        let [kh, kw] = kernel[..] else {
            return Err(format!("only 2-D pooling is supported, kernel {kernel:?}"));
        };
        if node.output.len() > 1 && !node.output[1].is_empty() {
            return Err("MaxPool indices are not supported".to_string());
        }
        let max = node.op_type == "MaxPool";
        let kind = if max {
            PoolKind::Max
        } else {
            PoolKind::Avg {
                count_pad: attr_i(node, "count_include_pad", 0) == 1,
            }
        };
        if !max && attr_i(node, "ceil_mode", 0) == 1 {
            return Err("average pooling with ceil_mode is not supported".to_string());
        }
        // Average pooling whose output is quantized with its input's parameters runs on the
        // u8 values in exact integer arithmetic.
        if let (
            Tensor::Deq {
                src,
                scale,
                zero_point,
                ..
            },
            PoolKind::Avg { count_pad },
        ) = (self.get(&node.input[0])?.clone(), kind)
        {
            if let Some((s, z, q_out, qi)) = self.follow_quantize(&node.output[0]) {
                if (s, z) == (scale, zero_point) {
                    let dims = self.dims(src);
                    let window =
                        self.window(node, &dims, [kh, kw], dims.first().copied().unwrap_or(0), 1)?;
                    let y =
                        self.new_value(DType::U8, vec![window.c_out, window.h_out, window.w_out]);
                    self.ops.push(Op::QAvgPool {
                        x: src,
                        y,
                        window,
                        zero_point,
                        count_pad,
                    });
                    self.done[qi] = true;
                    self.names.insert(q_out, Tensor::Value(y));
                    return Ok(());
                }
            }
        }
        // Max pooling commutes with dequantizing: run it on the u8 values.
        let deq = match self.get(&node.input[0])?.clone() {
            Tensor::Deq {
                src,
                scale,
                zero_point,
                ..
            } if max => Some((src, scale, zero_point)),
            _ => None,
        };
        let x = match deq {
            Some((src, ..)) => src,
            None => self.float_value(&node.input[0])?,
        };
        let dims = self.dims(x);
        let window = self.window(node, &dims, [kh, kw], dims.first().copied().unwrap_or(0), 1)?;
        let y = self.new_value(
            self.values[x].dtype,
            vec![window.c_out, window.h_out, window.w_out],
        );
        self.ops.push(Op::Pool { x, y, kind, window });
        self.names.insert(
            node.output[0].clone(),
            Tensor::of(y, deq.map(|(_, scale, zero_point)| (scale, zero_point))),
        );
        Ok(())
    }

    fn quantize_linear(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let (scale, zero_point) = self.qparams(node)?;
        let out = node.output[0].clone();
        if let Tensor::Deq {
            src,
            scale: s,
            zero_point: z,
            ..
        } = self.get(&node.input[0])?.clone()
        {
            let y = if (s, z) == (scale, zero_point) {
                // Quantizing a dequantized value with the same parameters gives it back.
                src
            } else {
                let table = (0..=255u8)
                    .map(|v| quantize(dequantize(v, s, z), scale, zero_point))
                    .collect();
                let y = self.new_value(DType::U8, self.dims(src));
                self.ops.push(Op::Lut { x: src, y, table });
                y
            };
            self.names.insert(out, Tensor::Value(y));
            return Ok(());
        }
        let x = self.float_value(&node.input[0])?;
        let y = self.new_value(DType::U8, self.dims(x));
        self.ops.push(Op::Quantize {
            x,
            y,
            scale,
            zero_point,
        });
        self.names.insert(out, Tensor::Value(y));
        Ok(())
    }

    fn dequantize_linear(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let (scale, zero_point) = self.qparams(node)?;
        let src = match self.get(&node.input[0])? {
            Tensor::Value(v) if self.values[*v].dtype == DType::U8 => *v,
            _ => return Err("dequantizes a tensor that is not uint8".to_string()),
        };
        self.names.insert(
            node.output[0].clone(),
            Tensor::of(src, Some((scale, zero_point))),
        );
        Ok(())
    }

    /// Float weights as stored: fp16 when they were fp16 in the ONNX file. NaN or
    /// infinite weights are refused, naming them.
    fn float_weights(&mut self, name: &str, data: &[f32]) -> Result<Weights, String> {
        finite_weights(name, data)?;
        Ok(match self.halves.get(name) {
            Some(h) if h.len() == data.len() => {
                let halves: Vec<f16> = data.iter().map(|&v| f16::from_f32(v)).collect();
                Weights::F16(self.blob(DType::F16, bytemuck::cast_slice(&halves).to_vec()))
            }
            _ => Weights::F32(self.blob_f32(data)),
        })
    }

    fn conv(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let wname = node.input.get(1).ok_or("the weights are missing")?.clone();
        let w = self.constant(&wname)?.clone();
        let [c_out, cin_g, kh, kw] = w.dims[..] else {
            return Err(format!(
                "only 2-D convolutions are supported, weights {:?}",
                w.dims
            ));
        };
        let groups =
            usize::try_from(attr_i(node, "group", 1)).map_err(|_| "negative group count")?;
        if let Some(k) = attr_ints(node, "kernel_shape") {
            if to_usize(&k, "kernel size")? != [kh, kw] {
                return Err(format!(
                    "kernel_shape {k:?} disagrees with the weights {:?}",
                    w.dims
                ));
            }
        }
        let x_tensor = self.get(&node.input[0])?.clone();
        let x_dims = match &x_tensor {
            Tensor::Value(v) | Tensor::Deq { src: v, .. } => self.dims(*v),
            Tensor::Const(_) => return Err("the input is a constant".to_string()),
        };
        if groups == 0 || x_dims.first() != Some(&(cin_g * groups)) || c_out % groups != 0 {
            return Err(format!(
                "weights {:?} with {groups} groups do not fit input {x_dims:?}",
                w.dims
            ));
        }
        let window = self.window(node, &x_dims, [kh, kw], c_out, groups)?;
        let bias = self.opt_const(node, 2)?.map(|b| b.data.to_f32());
        if bias.as_ref().is_some_and(|b| b.len() != c_out) {
            return Err(format!("the bias does not hold {c_out} values"));
        }
        let out = node.output[0].clone();
        let kk = window.k();
        if let (
            Tensor::Deq {
                src,
                scale,
                zero_point,
                ..
            },
            Some(q),
        ) = (&x_tensor, self.qweights.get(&wname).cloned())
        {
            if q.dims == w.dims && (q.scales.len() == 1 || q.axis == 0) {
                let rows: Vec<Vec<i8>> = q.data.chunks(kk).map(|r| r.to_vec()).collect();
                return self.int8_layer(
                    &out,
                    *src,
                    *scale,
                    *zero_point,
                    window.clone(),
                    rows,
                    &q,
                    bias,
                );
            }
        }
        let x = self.float_value(&node.input[0])?;
        let mut weights = w.data.to_f32();
        let mut bias = bias;
        let mut out_name = out;
        // A batch norm right after folds into the weights and bias.
        if let Some(i) = self.sole_consumer(&out_name) {
            if self.nodes[i].op_type == "BatchNormalization" {
                let bn = &self.nodes[i];
                let (scale, shift) = self.batch_norm(bn)?;
                if scale.len() == c_out {
                    for (c, row) in weights.chunks_mut(kk).enumerate() {
                        row.iter_mut().for_each(|v| *v *= scale[c]);
                    }
                    let b = bias.get_or_insert_with(|| vec![0.0; c_out]);
                    for c in 0..c_out {
                        b[c] = b[c] * scale[c] + shift[c];
                    }
                    out_name = bn.output[0].clone();
                    self.done[i] = true;
                    self.halves.remove(&wname);
                }
            }
        }
        let (lo, hi, mut out_name) = match self.follow_activation(&out_name) {
            Some((lo, hi, name, i)) => {
                self.done[i] = true;
                (lo, hi, name)
            }
            None => (f32::NEG_INFINITY, f32::INFINITY, out_name),
        };
        if winograd_pays(&window) {
            finite_weights(&wname, &weights)?;
            // A 2x2 max pool right after folds into the output transform.
            let (y, pool) = self.conv_output(&mut out_name, [c_out, window.h_out, window.w_out]);
            let mut u = vec![0.0; 16 * c_out * window.c_in];
            student_kernels::winograd_weights_f32(&weights, c_out, window.c_in, &mut u)
                .map_err(|e| e.to_string())?;
            // Stored in f32 even for fp16 weights: the transform of fp16 values is not
            // fp16 (each entry sums up to 9 of them, scaled by 1/4), and rounding it to
            // fp16 again would change the function by about as much as fp16 storage
            // did, where the fp16 model promises f32 arithmetic on its widened weights.
            // The cost is the file: this layer takes 16 x 4 bytes per channel pair
            // instead of 9 x 2.
            let weights = Weights::F32(self.blob_f32(&u));
            let bias = bias.map(|b| self.blob_f32(&b));
            log::debug!(
                "conv `{}`: Winograd F(2x2, 3x3), {} -> {c_out} channels",
                node.name,
                window.c_in
            );
            self.ops.push(Op::WinogradConv {
                x,
                y,
                window,
                weights,
                bias,
                lo,
                hi,
                pool,
            });
            self.names.insert(out_name, Tensor::Value(y));
            return Ok(());
        }
        // A 2x2 max pool right after is fused too: into the direct kernel's registers
        // where it runs, or applied sample by sample while the output is in cache.
        let (y, pool) = self.conv_output(&mut out_name, [c_out, window.h_out, window.w_out]);
        let weights = self.float_weights(&wname, &weights)?;
        let bias = bias.map(|b| self.blob_f32(&b));
        self.ops.push(Op::Conv {
            x,
            y,
            window,
            weights,
            bias,
            lo,
            hi,
            pool,
        });
        self.names.insert(out_name, Tensor::Value(y));
        Ok(())
    }

    fn dense(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let gemm = node.op_type == "Gemm";
        if gemm && attr_i(node, "transA", 0) != 0 {
            return Err("Gemm with transA is not supported".to_string());
        }
        let wname = node.input.get(1).ok_or("the weights are missing")?.clone();
        let w = match self.get(&wname)? {
            Tensor::Const(c) => c.clone(),
            _ => {
                return Err(
                    "the second input must be constant weights (a product of two run-time tensors is not supported)"
                        .to_string(),
                );
            }
        };
        let [r, c] = w.dims[..] else {
            return Err(format!("weights {:?} must be 2-D", w.dims));
        };
        let trans_b = gemm && attr_i(node, "transB", 0) != 0;
        let (kk, n) = if trans_b { (c, r) } else { (r, c) };
        let (alpha, beta) = if gemm {
            (attr_f(node, "alpha", 1.0), attr_f(node, "beta", 1.0))
        } else {
            (1.0, 1.0)
        };
        let bias = match self.opt_const(node, 2)? {
            Some(b) if gemm => {
                let v = b.data.to_f32();
                match v.len() {
                    1 => Some(vec![v[0] * beta; n]),
                    l if l == n => Some(v.iter().map(|x| x * beta).collect()),
                    _ => {
                        return Err(format!(
                            "the bias of dimensions {:?} is not per output column",
                            b.dims
                        ));
                    }
                }
            }
            _ => None,
        };
        let x_tensor = self.get(&node.input[0])?.clone();
        let x_dims = match &x_tensor {
            Tensor::Value(v) | Tensor::Deq { src: v, .. } => self.dims(*v),
            Tensor::Const(_) => return Err("the input is a constant".to_string()),
        };
        if x_dims.last() != Some(&kk) || (gemm && x_dims.len() != 1) {
            return Err(format!(
                "input {x_dims:?} does not fit weights {:?}",
                w.dims
            ));
        }
        let out = node.output[0].clone();
        // The weight matrix as [k, n].
        let kn = |data: &[f32]| -> Vec<f32> {
            if trans_b {
                consts::transpose_f32(&[n, kk], data, &[1, 0]).1
            } else {
                data.to_vec()
            }
        };
        if let (
            Tensor::Deq {
                src,
                scale,
                zero_point,
                ..
            },
            Some(q),
            true,
        ) = (&x_tensor, self.qweights.get(&wname).cloned(), alpha == 1.0)
        {
            // The output channel axis of the stored weights.
            let out_axis = if trans_b { 0 } else { 1 };
            if q.dims == w.dims && (q.scales.len() == 1 || q.axis == out_axis) {
                let rows: Vec<Vec<i8>> = (0..n)
                    .map(|j| {
                        (0..kk)
                            .map(|i| {
                                if trans_b {
                                    q.data[j * kk + i]
                                } else {
                                    q.data[i * n + j]
                                }
                            })
                            .collect()
                    })
                    .collect();
                let mut y_dims = x_dims.clone();
                if let Some(last) = y_dims.last_mut() {
                    *last = n;
                }
                return self.int8_dense(
                    &out,
                    *src,
                    *scale,
                    *zero_point,
                    kk,
                    n,
                    rows,
                    &q,
                    bias,
                    y_dims,
                );
            }
        }
        let x = self.float_value(&node.input[0])?;
        let mut weights = kn(&w.data.to_f32());
        if alpha != 1.0 {
            weights.iter_mut().for_each(|v| *v *= alpha);
            self.halves.remove(&wname);
        }
        let mut out_name = out;
        let mut bias = bias;
        // MatMul followed by Add of a bias vector is a dense layer with bias.
        if !gemm {
            if let Some(i) = self.sole_consumer(&out_name) {
                let add = &self.nodes[i];
                if add.op_type == "Add" {
                    let other = if add.input[0] == out_name {
                        &add.input[1]
                    } else {
                        &add.input[0]
                    };
                    if let Ok(c) = self.constant(other) {
                        if c.data.len() == n
                            && c.dims.last() == Some(&n)
                            && c.dims.len() <= x_dims.len()
                        {
                            bias = Some(c.data.to_f32());
                            out_name = add.output[0].clone();
                            self.done[i] = true;
                        }
                    }
                }
            }
        }
        let (lo, hi, out_name) = match self.follow_activation(&out_name) {
            Some((lo, hi, name, i)) => {
                self.done[i] = true;
                (lo, hi, name)
            }
            None => (f32::NEG_INFINITY, f32::INFINITY, out_name),
        };
        let mut packed = vec![0f32; student_kernels::packed_len_f32(kk, n)];
        student_kernels::pack_b_f32(&weights, kk, n, &mut packed).map_err(|e| e.to_string())?;
        let weights = match self.float_weights(&wname, &weights)? {
            Weights::F16(_) => {
                // `float_weights` stored the unpacked halves; store the packed ones instead.
                self.blobs.pop();
                self.blob_data.pop();
                let halves: Vec<f16> = packed.iter().map(|&v| f16::from_f32(v)).collect();
                Weights::F16(self.blob(DType::F16, bytemuck::cast_slice(&halves).to_vec()))
            }
            Weights::F32(_) => {
                self.blobs.pop();
                self.blob_data.pop();
                Weights::F32(self.blob_f32(&packed))
            }
        };
        let bias = bias.map(|b| self.blob_f32(&b));
        let mut y_dims = x_dims;
        if let Some(last) = y_dims.last_mut() {
            *last = n;
        }
        let y = self.new_value(DType::F32, y_dims);
        self.ops.push(Op::Dense {
            x,
            y,
            k: kk,
            n,
            weights,
            bias,
            lo,
            hi,
        });
        self.names.insert(out_name, Tensor::Value(y));
        Ok(())
    }

    /// The fused activation and output quantization after an integer layer: the output's
    /// final name, its form, and its clamp in the float domain.
    fn int8_output(&mut self, out: &str) -> (String, QuantOut, Option<(f32, u8)>) {
        let (lo, hi, name) = match self.follow_activation(out) {
            Some((lo, hi, name, i)) => {
                self.done[i] = true;
                (lo, hi, name)
            }
            None => (f32::NEG_INFINITY, f32::INFINITY, out.to_string()),
        };
        match self.follow_quantize(&name) {
            Some((s, z, q_name, qi)) => {
                self.done[qi] = true;
                let qlo = if lo.is_finite() {
                    quantize(lo, s, z)
                } else {
                    0
                };
                let qhi = if hi.is_finite() {
                    quantize(hi, s, z)
                } else {
                    255
                };
                (
                    q_name,
                    QuantOut::U8 {
                        zero_point: z,
                        lo: qlo,
                        hi: qhi,
                    },
                    Some((s, z)),
                )
            }
            None => (name, QuantOut::F32 { lo, hi }, None),
        }
    }

    /// Per-output scale, bias with the input zero point folded in, and row sums. Errors if
    /// a scale is not a finite number: `x_scale * w_scale / y_scale` overflows for scales
    /// that are each finite, and a weight scale may be anything.
    #[allow(clippy::too_many_arguments)]
    fn int8_params(
        &mut self,
        rows: &[Vec<i8>],
        q: &QWeight,
        x_scale: f32,
        x_zero_point: u8,
        bias: Option<Vec<f32>>,
        y: Option<(f32, u8)>,
    ) -> Result<(BlobId, BlobId, BlobId), String> {
        let n = rows.len();
        let sums: Vec<i32> = rows
            .iter()
            .map(|r| r.iter().map(|&v| v as i32).sum())
            .collect();
        let w_scale = |j: usize| {
            if q.scales.len() == 1 {
                q.scales[0]
            } else {
                q.scales[j]
            }
        };
        let acc_scale: Vec<f32> = (0..n).map(|j| x_scale * w_scale(j)).collect();
        // The bias is added to the int32 accumulator, in steps of the accumulator's scale.
        // A bias beyond half of int32's range in those steps (any bias at all when a
        // channel's weight scale is 0) cannot be carried, and clamping it would change the
        // channel's outputs.
        let bound = i32::MAX as f64 / 2.0;
        let mut bias_i32 = Vec::with_capacity(n);
        for j in 0..n {
            let b = bias.as_ref().map_or(0.0, |b| b[j]);
            let q = if b == 0.0 {
                0.0
            } else {
                (b as f64 / acc_scale[j] as f64).round_ties_even()
            };
            if q.is_nan() || q.abs() > bound {
                return Err(format!(
                    "the bias {b} of output channel {j} is beyond what the int8 layer carries: \
                     its accumulator counts in steps of input scale {x_scale} x weight scale {}",
                    w_scale(j)
                ));
            }
            bias_i32.push((q as i32).saturating_sub(x_zero_point as i32 * sums[j]));
        }
        let scale: Vec<f32> = match y {
            Some((s, _)) => acc_scale.iter().map(|a| a / s).collect(),
            None => acc_scale,
        };
        if let Some(j) = scale.iter().position(|s| !s.is_finite()) {
            return Err(format!(
                "the scale of output channel {j}, input scale {x_scale} x weight scale {}{}, \
                 is {}, not a finite number",
                w_scale(j),
                y.map_or(String::new(), |(s, _)| format!(" / output scale {s}")),
                scale[j]
            ));
        }
        Ok((
            self.blob_i32(&sums),
            self.blob_i32(&bias_i32),
            self.blob_f32(&scale),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn int8_layer(
        &mut self,
        out: &str,
        x: ValueId,
        x_scale: f32,
        x_zero_point: u8,
        window: Window,
        rows: Vec<Vec<i8>>,
        q: &QWeight,
        bias: Option<Vec<f32>>,
    ) -> Result<(), String> {
        let (name, qout, y_params) = self.int8_output(out);
        let (row_sums, bias, scale) =
            self.int8_params(&rows, q, x_scale, x_zero_point, bias, y_params)?;
        let kp = crate::compiled::plan::padded_k(window.k());
        let mut padded = vec![0i8; rows.len() * kp];
        for (dst, src) in padded.chunks_mut(kp).zip(&rows) {
            dst[..src.len()].copy_from_slice(src);
        }
        let weights = self.blob(DType::I8, bytemuck::cast_slice(&padded).to_vec());
        let dtype = if y_params.is_some() {
            DType::U8
        } else {
            DType::F32
        };
        let y = self.new_value(dtype, vec![window.c_out, window.h_out, window.w_out]);
        self.ops.push(Op::QConv {
            x,
            y,
            window,
            x_zero_point,
            weights,
            row_sums,
            bias,
            scale,
            out: qout,
            pool: false,
        });
        // The quantized output is what QuantizeLinear produced: a u8 tensor.
        self.names.insert(name, Tensor::Value(y));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn int8_dense(
        &mut self,
        out: &str,
        x: ValueId,
        x_scale: f32,
        x_zero_point: u8,
        kk: usize,
        n: usize,
        rows: Vec<Vec<i8>>,
        q: &QWeight,
        bias: Option<Vec<f32>>,
        y_dims: Vec<usize>,
    ) -> Result<(), String> {
        let (name, qout, y_params) = self.int8_output(out);
        let (col_sums, bias, scale) =
            self.int8_params(&rows, q, x_scale, x_zero_point, bias, y_params)?;
        // Pack [k, n] from the per-output rows.
        let mut kn = vec![0i8; kk * n];
        for (j, row) in rows.iter().enumerate() {
            for (i, &v) in row.iter().enumerate() {
                kn[i * n + j] = v;
            }
        }
        let mut packed = vec![0i8; student_kernels::packed_len_q8(kk, n)];
        student_kernels::pack_b_s8(&kn, kk, n, &mut packed).map_err(|e| e.to_string())?;
        let weights = self.blob(DType::I8, bytemuck::cast_slice(&packed).to_vec());
        let dtype = if y_params.is_some() {
            DType::U8
        } else {
            DType::F32
        };
        let y = self.new_value(dtype, y_dims);
        self.ops.push(Op::QDense {
            x,
            y,
            k: kk,
            n,
            x_zero_point,
            weights,
            col_sums,
            bias,
            scale,
            out: qout,
        });
        // The quantized output is what QuantizeLinear produced: a u8 tensor.
        self.names.insert(name, Tensor::Value(y));
        Ok(())
    }
}

/// Refuses NaN or infinite weights (after any folded BatchNormalization), naming them: the
/// file would not open.
fn finite_weights(name: &str, data: &[f32]) -> Result<(), String> {
    match data.iter().find(|v| !v.is_finite()) {
        Some(v) => Err(format!(
            "the weights `{name}` hold {v}, not a finite number"
        )),
        None => Ok(()),
    }
}

/// Whether a float convolution runs as Winograd F(2x2, 3x3) rather than unfolded into a
/// GEMM: 3x3, stride 1, dilation 1, one group, and at least [`WINOGRAD_MIN_CHANNELS`]
/// input and output channels.
///
/// Winograd does 2.25x fewer multiplies, but each GEMM's inner dimension is `c_in`
/// instead of `9 c_in`, and the input and output transforms cost about as much per tile
/// as a few dozen multiply-adds per channel; with few channels those costs dominate
/// (the teacher's first layer, 1 -> 32 channels, is one such).
fn winograd_pays(w: &Window) -> bool {
    w.is_3x3_stride_1() && w.c_in >= WINOGRAD_MIN_CHANNELS && w.c_out >= WINOGRAD_MIN_CHANNELS
}

/// The fewest input and output channels for which [`winograd_pays`].
const WINOGRAD_MIN_CHANNELS: usize = 8;

/// Checks that `node` has the inputs its kind needs (leading, non-empty) and an output.
fn check_arity(node: &pb::NodeProto) -> Result<(), String> {
    let needed = match node.op_type.as_str() {
        "Constant" => 0,
        "BatchNormalization" => 5,
        "Conv" | "Gemm" | "MatMul" | "QuantizeLinear" | "DequantizeLinear" | "Add" | "Sub"
        | "Mul" | "Div" | "Reshape" | "Gather" | "LayerNormalization" => 2,
        _ => 1,
    };
    let present = node.input.iter().take_while(|s| !s.is_empty()).count();
    if present < needed || node.output.first().is_none_or(|o| o.is_empty()) {
        return Err(format!(
            "has {} inputs and {} outputs; it needs at least {needed} inputs and one output",
            node.input.len(),
            node.output.len()
        ));
    }
    Ok(())
}
