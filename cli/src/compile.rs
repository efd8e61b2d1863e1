//! `student compile`: an ONNX student compiled into a `.student` file, checked against the
//! ONNX file before it is written, and not written if the two disagree.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::json;
use student_distill::{replace_file, same_file};
use student_runtime::{
    Error, OpenOptions, QUANTIZED_SOFTMAX_ADVICE, StudentModel, compile_onnx, starts_like_compiled,
};

/// How many inputs the compiled file is checked on.
const CHECK_INPUTS: usize = 16;

/// `--tolerance`: a fraction of the logits' span, finite and not negative.
pub fn parse_tolerance(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err("expected a fraction of the logits' span: a number, 0 or more".to_string()),
    }
}

pub fn compile(model: &Path, output: &Path, tolerance: f32, as_json: bool) -> Result<()> {
    if same_file(model, output) {
        bail!(
            "--output {} is the input model; choose another file",
            output.display()
        );
    }
    refuse_to_replace_another_kind(output)?;
    let bytes = std::fs::read(model).with_context(|| format!("cannot read {}", model.display()))?;
    let compiled = compile_onnx(&bytes, &model.display().to_string())?;
    // Check the compiled file against the ONNX file through tract on inputs spread over the
    // input's range, before anything is written.
    // tract refuses a graph with a quantized Softmax, which it computes wrongly: there is
    // nothing to compare with here. The compiled form of such files is checked against
    // onnxruntime by tests/ort_crosscheck.py. Operators that tract has not been checked on
    // are run all the same: they are only the reference, and a disagreement stops the
    // compile.
    let reference = OpenOptions {
        unchecked_operators: true,
        ..OpenOptions::default()
    };
    let onnx =
        match StudentModel::from_bytes_named(&bytes, &model.display().to_string(), &reference) {
            Ok(onnx) => Some(onnx),
            Err(Error::Unsupported { reason, .. }) if reason.contains(QUANTIZED_SOFTMAX_ADVICE) => {
                None
            }
            Err(e) => return Err(e.into()),
        };
    let student = StudentModel::from_bytes_named(
        &compiled.bytes,
        &output.display().to_string(),
        &OpenOptions::default(),
    )?;
    let check = match &onnx {
        Some(onnx) => Some(check_against_tract(
            onnx,
            &student,
            tolerance,
            &compiled.ops,
            output,
        )?),
        None => None,
    };
    replace_file(output, &compiled.bytes)?;
    let ops: Vec<String> = compiled
        .ops
        .iter()
        .map(|(op, n)| format!("{op} x{n}"))
        .collect();
    const NOT_CHECKED: &str = "not run: tract computes this graph's quantized Softmax wrongly, \
                               so there is no reference here (the compiler's quantized Softmax \
                               is checked against onnxruntime by the project's tests)";
    if as_json {
        let check = match check {
            Some((max_diff, scale, same_class)) => json!({
                "inputs": CHECK_INPUTS,
                "max_abs_logit_difference": max_diff,
                "logit_span": scale,
                "same_class": same_class,
            }),
            None => json!({ "skipped": NOT_CHECKED }),
        };
        let out = json!({
            "input": model.display().to_string(),
            "output": output.display().to_string(),
            "bytes": compiled.bytes.len(),
            "onnx_bytes": bytes.len(),
            "ops": compiled.ops.iter().map(|(op, n)| json!({"op": op, "count": n})).collect::<Vec<_>>(),
            "kernels": student.kernels(),
            "check": check,
        });
        out!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        out!(
            "wrote {} ({} bytes, from {} bytes of ONNX)",
            output.display(),
            compiled.bytes.len(),
            bytes.len()
        );
        out!("ops     {}", ops.join(", "));
        match check {
            Some((max_diff, scale, same_class)) => out!(
                "check   {CHECK_INPUTS} inputs against the ONNX file through tract: largest logit difference {max_diff:.3e} (logits spanning up to {scale:.3}), same class on {same_class}/{CHECK_INPUTS}"
            ),
            None => out!("check   {NOT_CHECKED}"),
        }
        out!("kernels {} on this CPU", student.kernels());
    }
    Ok(())
}

/// Runs the ONNX file (through tract) and the compiled file on the check inputs. Returns
/// the largest difference of centred logits, the widest logit span and how many inputs
/// get the same class; refuses when the difference is over `tolerance` of the span.
fn check_against_tract(
    onnx: &StudentModel,
    student: &StudentModel,
    tolerance: f32,
    compiled_ops: &[(String, usize)],
    output: &Path,
) -> Result<(f32, f32, usize)> {
    let per = onnx.input_spec().len();
    let inputs = check_inputs(per, CHECK_INPUTS);
    let expected = onnx.logits_batch(&inputs)?;
    let got = student.logits_batch(&inputs)?;
    let classes = onnx.classes();
    // Probabilities ignore a constant added to a sample's logits, so each sample's logits
    // are compared centred on their mean, and the scale is the widest spread of one
    // sample's logits: adding 1000 to every logit neither hides nor makes a difference.
    // A NaN on either side counts as an infinite difference (`f32::max` would skip it).
    let centred = |logits: &[f32]| -> Vec<f32> {
        let mean = logits.iter().sum::<f32>() / logits.len().max(1) as f32;
        logits.iter().map(|v| v - mean).collect()
    };
    let max_diff = expected
        .chunks(classes)
        .zip(got.chunks(classes))
        .flat_map(|(a, b)| {
            centred(a)
                .into_iter()
                .zip(centred(b))
                .map(|(a, b)| (a - b).abs())
        })
        .map(|d| if d.is_nan() { f32::INFINITY } else { d })
        .fold(0.0f32, f32::max);
    let scale = expected
        .chunks(classes)
        .map(|a| {
            let (lo, hi) = a
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            hi - lo
        })
        .fold(0.0f32, f32::max)
        .max(1e-6);
    let same_class = expected
        .chunks(classes)
        .zip(got.chunks(classes))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    // The file would answer differently from the model it was compiled from: a fault in
    // the compiler, or in tract (README, "Limits today": quantized Softmax). Which one only
    // another runtime can tell, so nothing is written unless the user raises the tolerance.
    if max_diff > tolerance * scale {
        let quantized = compiled_ops
            .iter()
            .any(|(op, _)| op.contains("int8") || op.contains("quantize"));
        let advice = if quantized {
            "tract runs some quantized graphs wrongly (README, Limits today): if onnxruntime \
             agrees with the compiled file, compile again with a larger --tolerance"
        } else {
            "the graph is not quantized, so the compiler has most likely misread it: run the \
             .onnx file as it is (through tract)"
        };
        bail!(
            "the compiled file's logits differ from the ONNX file's (through tract) by up to \
             {max_diff:.3e} on {CHECK_INPUTS} check inputs, with one input's logits spanning \
             up to {scale:.3} and the same class on {same_class}/{CHECK_INPUTS}: more than \
             --tolerance {tolerance} of that span; {} was not written. {advice}",
            output.display()
        );
    }
    Ok((max_diff, scale, same_class))
}

/// Deterministic inputs: a ramp, its mirror, and pseudo-random values in [-1, 2].
fn check_inputs(per: usize, count: usize) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut out = Vec::with_capacity(per * count);
    for s in 0..count {
        for i in 0..per {
            let t = i as f32 / per as f32;
            out.push(match s {
                0 => t,
                1 => 1.0 - t,
                _ => next() * 3.0 - 1.0,
            });
        }
    }
    out
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv { (i, x) } else { (bi, bv) }
        })
        .0
}

/// Refuses an `--output` that holds something other than a compiled student (an ONNX
/// model, a text file): replacing it would lose it. An earlier compiled file, an empty
/// file and a new path are fine.
fn refuse_to_replace_another_kind(output: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(output) else {
        return Ok(());
    };
    if meta.is_dir() {
        bail!("--output {} is a folder; name a file", output.display());
    }
    if !meta.is_file() || meta.len() == 0 {
        return Ok(());
    }
    let compiled =
        is_compiled_file(output).with_context(|| format!("cannot read {}", output.display()))?;
    if !compiled {
        bail!(
            "--output {} exists and is not a compiled student; compile replaces only an \
             earlier compiled file (remove it first, or choose another file)",
            output.display()
        );
    }
    Ok(())
}

/// Whether the file `path` starts with the compiled format's magic.
pub fn is_compiled_file(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = Vec::with_capacity(8);
    std::fs::File::open(path)?.take(8).read_to_end(&mut head)?;
    Ok(starts_like_compiled(&head))
}
