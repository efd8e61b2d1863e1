//! Evaluation of a student (and its cascade to a teacher) on a labelled data set, through
//! the runtime: the figures describe the exported files exactly as an app would run them.

use serde::Serialize;
use student_runtime::{ClassifyOptions, StudentModel};

use crate::calibrate::argmax;
use crate::dataset::Dataset;
use crate::error::Error;
use crate::progress::Progress;

/// What a student achieves on a data set, alone and in a cascade.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// The data set's name.
    pub data: String,
    /// Number of images evaluated.
    pub samples: usize,
    /// Student top-1 accuracy.
    pub accuracy: f64,
    /// The threshold applied.
    pub threshold: f32,
    /// Fraction of inputs whose score fell below the threshold.
    pub escalation_rate: f64,
    /// Accuracy of the predictions that were accepted; `None` when none was.
    pub accepted_accuracy: Option<f64>,
    /// Accuracy when escalated inputs take the teacher's answer; without a teacher, the
    /// student's accuracy.
    pub cascade_accuracy: f64,
    /// Teacher top-1 accuracy, when a teacher was given.
    pub teacher_accuracy: Option<f64>,
    /// Fraction of inputs where student and teacher give the same class.
    pub agreement: Option<f64>,
    /// Student parameter count.
    pub params: u64,
    /// Teacher parameter count.
    pub teacher_params: Option<u64>,
    /// Student accuracy per class, in label order; `None` (JSON `null`) for a class with
    /// no image in the data, which has no accuracy to report.
    pub per_class_accuracy: Vec<Option<f64>>,
    /// Teacher accuracy per class, in label order; `None` as for the student.
    pub teacher_per_class_accuracy: Option<Vec<Option<f64>>>,
}

/// Runs `student` (and `teacher`) over `data` and measures accuracy, escalation and
/// agreement. `threshold` overrides the student's card.
///
/// # Errors
/// [`Error::Data`] when the data's image size or class count does not match the model;
/// runtime errors from running the models.
pub fn evaluate(
    student: &StudentModel,
    teacher: Option<&StudentModel>,
    data: &Dataset,
    threshold: Option<f32>,
    progress: &mut dyn Progress,
) -> Result<EvalReport, Error> {
    for model in std::iter::once(student).chain(teacher) {
        check_labels(model, data)?;
    }
    let student_logits = logits(student, data, progress)?;
    let teacher_logits = teacher.map(|t| logits(t, data, progress)).transpose()?;
    evaluate_logits(
        student,
        teacher,
        data,
        &student_logits,
        teacher_logits.as_deref(),
        threshold,
    )
}

/// Refuses a model whose card names its classes otherwise than the data set: answers are
/// scored by class index, so it would be scored against other classes. A card without
/// labels (classes by index) is taken as it is.
pub(crate) fn check_labels(model: &StudentModel, data: &Dataset) -> Result<(), Error> {
    let card = model.card();
    let labelled = !card
        .defaults_applied()
        .iter()
        .any(|d| d.starts_with("labels:"));
    if labelled && card.labels != data.classes {
        return Err(Error::Data(format!(
            "{} has labels [{}], the data set {} [{}]: it would be scored against other \
             classes",
            model.origin(),
            card.labels.join(", "),
            data.name,
            data.classes.join(", ")
        )));
    }
    Ok(())
}

/// As [`evaluate`], over logits already computed (`data.len()` rows each).
pub fn evaluate_logits(
    student: &StudentModel,
    teacher: Option<&StudentModel>,
    data: &Dataset,
    student_logits: &[f32],
    teacher_logits: Option<&[f32]>,
    threshold: Option<f32>,
) -> Result<EvalReport, Error> {
    let classes = student.classes();
    let n = data.len();
    if n == 0 || student_logits.len() != n * classes {
        return Err(Error::Data(format!(
            "{} student logits for {n} images of {classes} classes",
            student_logits.len()
        )));
    }
    let options = ClassifyOptions {
        threshold,
        top_k: 1,
    };
    let mut student_correct = vec![false; n];
    let mut escalated = vec![false; n];
    let mut predicted = vec![0usize; n];
    for i in 0..n {
        let p = student
            .predict_from_logits(&student_logits[i * classes..(i + 1) * classes], &options)?;
        predicted[i] = p.index;
        student_correct[i] = p.index == data.labels[i] as usize;
        escalated[i] = p.escalated();
    }
    let teacher_predicted = teacher_logits
        .map(|l| argmax_rows(l, classes, n))
        .transpose()?;
    let frac = |count: usize, of: usize| {
        if of == 0 {
            1.0
        } else {
            count as f64 / of as f64
        }
    };
    let escalations = escalated.iter().filter(|&&e| e).count();
    let accepted_correct = (0..n)
        .filter(|&i| !escalated[i] && student_correct[i])
        .count();
    let cascade_correct = (0..n)
        .filter(|&i| {
            let answer = match (&teacher_predicted, escalated[i]) {
                (Some(t), true) => t[i],
                _ => predicted[i],
            };
            answer == data.labels[i] as usize
        })
        .count();
    let per_class = |pred: &[usize]| -> Vec<Option<f64>> {
        (0..classes)
            .map(|c| {
                let of: Vec<usize> = (0..n).filter(|&i| data.labels[i] as usize == c).collect();
                let right = of.iter().filter(|&&i| pred[i] == c).count();
                (!of.is_empty()).then(|| frac(right, of.len()))
            })
            .collect()
    };
    Ok(EvalReport {
        data: data.name.clone(),
        samples: n,
        accuracy: frac(student_correct.iter().filter(|&&c| c).count(), n),
        // predict_from_logits has validated an override by now.
        threshold: threshold.unwrap_or(student.card().escalation.threshold),
        escalation_rate: frac(escalations, n),
        accepted_accuracy: (escalations < n).then(|| frac(accepted_correct, n - escalations)),
        cascade_accuracy: frac(cascade_correct, n),
        teacher_accuracy: teacher_predicted.as_ref().map(|t| {
            frac(
                (0..n).filter(|&i| t[i] == data.labels[i] as usize).count(),
                n,
            )
        }),
        agreement: teacher_predicted
            .as_ref()
            .map(|t| frac((0..n).filter(|&i| t[i] == predicted[i]).count(), n)),
        params: student.params(),
        teacher_params: teacher.map(|t| t.params()),
        per_class_accuracy: per_class(&predicted),
        teacher_per_class_accuracy: teacher_predicted.as_deref().map(per_class),
    })
}

/// Logits of `model` over every image of `data`, in batches, with progress.
pub(crate) fn logits(
    model: &StudentModel,
    data: &Dataset,
    progress: &mut dyn Progress,
) -> Result<Vec<f32>, Error> {
    let spec = model.input_spec();
    if spec.height != data.height || spec.width != data.width {
        return Err(Error::Data(format!(
            "{} holds {}x{} images, {} expects {}x{}",
            data.name,
            data.width,
            data.height,
            model.origin(),
            spec.width,
            spec.height
        )));
    }
    if model.classes() != data.classes.len() {
        return Err(Error::Data(format!(
            "{} has {} classes, {} outputs {}",
            data.name,
            data.classes.len(),
            model.origin(),
            model.classes()
        )));
    }
    progress.stage(
        &format!("run {} on {}", model.card().name, data.name),
        data.len() as u64,
    );
    let mut out = Vec::with_capacity(data.len() * model.classes());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(1024) {
        out.extend(model.logits_batch(&data.tensor(spec, chunk)?)?);
        progress.advance(chunk.len() as u64);
    }
    let plural = if data.len() == 1 { "" } else { "s" };
    progress.finish(&format!(
        "{}: {} image{plural}",
        model.card().name,
        data.len()
    ));
    Ok(out)
}

fn argmax_rows(logits: &[f32], classes: usize, n: usize) -> Result<Vec<usize>, Error> {
    if logits.len() != n * classes {
        return Err(Error::Data(format!(
            "{} teacher logits for {n} images of {classes} classes",
            logits.len()
        )));
    }
    Ok(logits.chunks_exact(classes).map(argmax).collect())
}
