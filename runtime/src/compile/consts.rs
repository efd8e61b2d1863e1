//! Constant tensors of an ONNX graph: decoding initializers and `Constant` nodes, and the
//! small integer arithmetic that exporters use to compute shapes.

use half::f16;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

/// The largest constant accepted, in elements (2^28: 1 GiB of f32).
const MAX_ELEMENTS: usize = 1 << 28;

/// The elements of a constant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Data {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

impl Data {
    pub(crate) fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F16(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::U8(v) => v.len(),
        }
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Data::F32(_) => "float",
            Data::F16(_) => "float16",
            Data::I64(_) => "int64",
            Data::I32(_) => "int32",
            Data::I8(_) => "int8",
            Data::U8(_) => "uint8",
        }
    }

    /// Every element as f64 (exact for all these types).
    pub(crate) fn to_f64(&self) -> Vec<f64> {
        match self {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I8(v) => v.iter().map(|&x| x as f64).collect(),
            Data::U8(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    pub(crate) fn to_f32(&self) -> Vec<f32> {
        match self {
            Data::F32(v) => v.clone(),
            other => other.to_f64().into_iter().map(|x| x as f32).collect(),
        }
    }

    /// Integers (shapes, axes, indices); `None` for float data.
    pub(crate) fn to_i64(&self) -> Option<Vec<i64>> {
        match self {
            Data::I64(v) => Some(v.clone()),
            Data::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::I8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::U8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::F32(_) | Data::F16(_) => None,
        }
    }
}

/// A constant tensor with its full ONNX shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Const {
    pub dims: Vec<usize>,
    pub data: Data,
}

impl Const {
    pub(crate) fn f32(dims: Vec<usize>, data: Vec<f32>) -> Const {
        Const {
            dims,
            data: Data::F32(data),
        }
    }

    pub(crate) fn i64(dims: Vec<usize>, data: Vec<i64>) -> Const {
        Const {
            dims,
            data: Data::I64(data),
        }
    }

    pub(crate) fn is_scalar(&self) -> bool {
        self.data.len() == 1
    }
}

/// Decodes an ONNX tensor. Errors are one-line reasons.
pub(crate) fn decode(t: &pb::TensorProto) -> Result<Const, String> {
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
        return Err("weights stored in an external file are not supported".to_string());
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<Vec<usize>, String>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| format!("dimensions {dims:?} exceed {MAX_ELEMENTS} elements"))?;
    let raw = &t.raw_data;
    let wrong =
        |found: usize| format!("holds {found} elements where its dimensions {dims:?} need {count}");
    let from_raw = |size: usize| -> Result<Option<&[u8]>, String> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.len() != count * size {
            return Err(format!(
                "holds {} bytes where its dimensions {dims:?} need {}",
                raw.len(),
                count * size
            ));
        }
        Ok(Some(raw))
    };
    let data = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) => Data::F32(match from_raw(4)? {
            Some(r) => r
                .as_chunks::<4>()
                .0
                .iter()
                .map(|c| f32::from_le_bytes(*c))
                .collect(),
            None => t.float_data.clone(),
        }),
        Ok(DataType::Float16) => Data::F16(match from_raw(2)? {
            Some(r) => r
                .as_chunks::<2>()
                .0
                .iter()
                .map(|c| f16::from_le_bytes(*c))
                .collect(),
            None => t
                .int32_data
                .iter()
                .map(|&x| f16::from_bits(x as u16))
                .collect(),
        }),
        Ok(DataType::Int64) => Data::I64(match from_raw(8)? {
            Some(r) => r
                .as_chunks::<8>()
                .0
                .iter()
                .map(|c| i64::from_le_bytes(*c))
                .collect(),
            None => t.int64_data.clone(),
        }),
        Ok(DataType::Int32) => Data::I32(match from_raw(4)? {
            Some(r) => r
                .as_chunks::<4>()
                .0
                .iter()
                .map(|c| i32::from_le_bytes(*c))
                .collect(),
            None => t.int32_data.clone(),
        }),
        Ok(DataType::Int8) => Data::I8(match from_raw(1)? {
            Some(r) => r.iter().map(|&b| b as i8).collect(),
            None => t.int32_data.iter().map(|&x| x as i8).collect(),
        }),
        Ok(DataType::Uint8) => Data::U8(match from_raw(1)? {
            Some(r) => r.to_vec(),
            None => t.int32_data.iter().map(|&x| x as u8).collect(),
        }),
        _ => {
            return Err(format!(
                "element type {} is not supported (float, float16, int64, int32, int8, uint8 are)",
                t.data_type
            ));
        }
    };
    if data.len() != count {
        return Err(wrong(data.len()));
    }
    Ok(Const { dims, data })
}

/// Resolves an axis that may count from the end.
pub(crate) fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let resolved = if a < 0 { a.saturating_add(r) } else { a };
    if (0..r).contains(&resolved) {
        Ok(resolved as usize)
    } else {
        Err(format!("axis {a} is outside rank {rank}"))
    }
}

/// The output shape of an ONNX Reshape of `input` to `target` (0 copies, -1 infers).
pub(crate) fn reshape_dims(input: &[usize], target: &[i64]) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            0 => out.push(
                *input
                    .get(i)
                    .ok_or("a 0 in the target shape has no input axis")?,
            ),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            t if t > 0 => out.push(t as usize),
            t => return Err(format!("target dimension {t} is invalid")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {input:?} into {target:?}"));
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return Err(format!("cannot reshape {input:?} into {target:?}"));
    }
    Ok(out)
}

/// Numpy broadcasting of two shapes.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            (x, y) => Err(format!(
                "shapes {a:?} and {b:?} do not broadcast ({x} vs {y})"
            )),
        })
        .collect()
}

/// Elementwise integer or float arithmetic on constants (shape computations).
pub(crate) fn fold_binary(op: &str, a: &Const, b: &Const) -> Result<Const, String> {
    let dims = broadcast(&a.dims, &b.dims)?;
    let count: usize = dims.iter().product();
    let index = |c: &Const, i: usize| -> usize {
        // Index into `c` for flat output index `i` under broadcasting.
        let mut rem = i;
        let mut at = 0;
        let mut stride = 1;
        let offset = dims.len() - c.dims.len();
        let mut strides = vec![0; dims.len()];
        for (k, &d) in c.dims.iter().enumerate().rev() {
            strides[k + offset] = if d == 1 { 0 } else { stride };
            stride *= d;
        }
        for k in (0..dims.len()).rev() {
            at += (rem % dims[k]) * strides[k];
            rem /= dims[k];
        }
        at
    };
    match (a.data.to_i64(), b.data.to_i64()) {
        (Some(x), Some(y)) => {
            let f = |p: i64, q: i64| -> Result<i64, String> {
                match op {
                    "Add" => Ok(p.wrapping_add(q)),
                    "Sub" => Ok(p.wrapping_sub(q)),
                    "Mul" => Ok(p.wrapping_mul(q)),
                    "Div" if q != 0 => Ok(p.wrapping_div(q)),
                    "Div" => Err("integer division by zero".to_string()),
                    _ => Err(format!("{op} is not constant arithmetic")),
                }
            };
            let data = (0..count)
                .map(|i| f(x[index(a, i)], y[index(b, i)]))
                .collect::<Result<Vec<i64>, String>>()?;
            Ok(Const::i64(dims, data))
        }
        _ => {
            let (x, y) = (a.data.to_f32(), b.data.to_f32());
            let f = match op {
                "Add" => |p: f32, q: f32| p + q,
                "Sub" => |p: f32, q: f32| p - q,
                "Mul" => |p: f32, q: f32| p * q,
                "Div" => |p: f32, q: f32| p / q,
                _ => return Err(format!("{op} is not constant arithmetic")),
            };
            let data = (0..count)
                .map(|i| f(x[index(a, i)], y[index(b, i)]))
                .collect();
            Ok(Const::f32(dims, data))
        }
    }
}

/// Transposes a constant's data by `perm`.
pub(crate) fn transpose_f32(
    dims: &[usize],
    data: &[f32],
    perm: &[usize],
) -> (Vec<usize>, Vec<f32>) {
    let mut strides = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let mut out = Vec::with_capacity(data.len());
    let mut index = vec![0usize; dims.len()];
    for _ in 0..data.len() {
        let at: usize = index.iter().zip(perm).map(|(i, &p)| i * strides[p]).sum();
        out.push(data[at]);
        for axis in (0..out_dims.len()).rev() {
            index[axis] += 1;
            if index[axis] < out_dims[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    (out_dims, out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_axis_outside_the_rank_is_named_as_the_file_gives_it() {
        assert_eq!(super::axis(-1, 2), Ok(1));
        assert_eq!(super::axis(1, 2), Ok(1));
        assert_eq!(super::axis(-3, 2).unwrap_err(), "axis -3 is outside rank 2");
        assert_eq!(super::axis(2, 2).unwrap_err(), "axis 2 is outside rank 2");
        assert!(super::axis(i64::MIN, 2).is_err());
    }
}
