//! `StudentModel` at the boundary: the runtime's model behind a handle that can be unloaded.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use student_runtime as rt;

use crate::error::StudentError;
use crate::escalation::{EscalationHandler, hook_for};
use crate::records::{ClassifyOptions, Limits, ModelInfo, OpenOptions, PixelFormat, Prediction};
use crate::tensor::Tensor;

/// An opened student model. Safe to share between threads: calls run concurrently.
///
/// `unload()` releases the model once the calls already running have returned; later calls
/// fail with [`StudentError::Unloaded`]. Without it, the model is released when the app
/// drops its last reference (Kotlin: `close()` or `use {}`, which also invalidate the
/// handle; Swift: when the object is deinitialized). The name is not `close` because
/// uniffi's Kotlin objects already have a `close()` from `AutoCloseable`.
#[derive(Debug, uniffi::Object)]
pub struct StudentModel {
    model: RwLock<Option<Arc<rt::StudentModel>>>,
}

#[uniffi::export]
impl StudentModel {
    /// Opens the student at `path` (`.onnx` or compiled `.student`), read into memory the
    /// model owns: the file may be replaced or deleted once this returns.
    ///
    /// # Errors
    /// [`StudentError::Io`] when the file cannot be read; [`StudentError::InvalidModel`]
    /// when it is not a usable student.
    #[uniffi::constructor]
    pub fn open(path: String) -> Result<Arc<StudentModel>, StudentError> {
        Ok(StudentModel::wrap(rt::StudentModel::open(path)?))
    }

    /// Opens the student at `path` as `options` say: limits on what the file may declare,
    /// memory mapping, the kernel level, trusted keys.
    ///
    /// # Errors
    /// [`StudentError::InvalidInput`] for an unknown kernel name or one this CPU lacks, a
    /// malformed key, or a signature without keys; [`StudentError::InvalidModel`] when the
    /// file exceeds a limit (the message names it) or is not a usable or trusted student;
    /// [`StudentError::Io`] when it cannot be read.
    #[uniffi::constructor]
    pub fn open_with(
        path: String,
        options: OpenOptions,
    ) -> Result<Arc<StudentModel>, StudentError> {
        let options = options.to_runtime()?;
        Ok(StudentModel::wrap(rt::StudentModel::open_with(
            path, &options,
        )?))
    }

    /// Opens a student from bytes already in memory as `options` say (`memory_map` does
    /// not apply); `name` names them in errors and logs.
    ///
    /// # Errors
    /// As [`open_with`](StudentModel::open_with).
    #[uniffi::constructor(default(name = None))]
    pub fn from_bytes_with(
        bytes: Vec<u8>,
        options: OpenOptions,
        name: Option<String>,
    ) -> Result<Arc<StudentModel>, StudentError> {
        let options = options.to_runtime()?;
        let name = name.as_deref().unwrap_or("in-memory bytes");
        Ok(StudentModel::wrap(rt::StudentModel::from_bytes_named(
            &bytes, name, &options,
        )?))
    }

    /// Opens a student from bytes already in memory (an app asset, say); `name` names them
    /// in errors and logs.
    ///
    /// # Errors
    /// [`StudentError::InvalidModel`] when the bytes are not a usable student.
    #[uniffi::constructor(default(name = None))]
    pub fn from_bytes(
        bytes: Vec<u8>,
        name: Option<String>,
    ) -> Result<Arc<StudentModel>, StudentError> {
        let options = rt::OpenOptions::default();
        let model = match name {
            Some(name) => rt::StudentModel::from_bytes_named(&bytes, &name, &options)?,
            None => rt::StudentModel::from_bytes(&bytes, &options)?,
        };
        Ok(StudentModel::wrap(model))
    }

    /// Opens the student at `path` only if the signature file `path.sig` (made by
    /// `student sign`) signs it by one of `trusted_keys` (public keys as 64 hex digits, the
    /// contents of a `.pub` file from `student keygen`). The signature is checked before the
    /// model is parsed.
    ///
    /// # Errors
    /// [`StudentError::InvalidInput`] for a malformed key; [`StudentError::InvalidModel`]
    /// when the signature is missing, by another key, or for other bytes; otherwise as
    /// [`open`](StudentModel::open).
    #[uniffi::constructor]
    pub fn open_signed(
        path: String,
        trusted_keys: Vec<String>,
    ) -> Result<Arc<StudentModel>, StudentError> {
        let options = signed_options(&trusted_keys, None)?;
        Ok(StudentModel::wrap(rt::StudentModel::open_with(
            path, &options,
        )?))
    }

    /// Like [`from_bytes`](StudentModel::from_bytes), accepting the bytes only if
    /// `signature` (the contents of their `.sig` file) signs them by one of `trusted_keys`.
    ///
    /// # Errors
    /// As [`open_signed`](StudentModel::open_signed).
    #[uniffi::constructor(default(name = None))]
    pub fn from_signed_bytes(
        bytes: Vec<u8>,
        signature: Vec<u8>,
        trusted_keys: Vec<String>,
        name: Option<String>,
    ) -> Result<Arc<StudentModel>, StudentError> {
        let options = signed_options(&trusted_keys, Some(signature))?;
        let name = name.as_deref().unwrap_or("in-memory bytes");
        Ok(StudentModel::wrap(rt::StudentModel::from_bytes_named(
            &bytes, name, &options,
        )?))
    }

    /// The model card and facts about the file.
    pub fn info(&self) -> Result<ModelInfo, StudentError> {
        let model = self.get("info")?;
        Ok(ModelInfo::of(&model))
    }

    /// Raw logits for one sample of `info().input` size.
    pub fn logits(&self, input: Tensor) -> Result<Tensor, StudentError> {
        Ok(Tensor::from(self.get("logits")?.logits(input.as_slice())?))
    }

    /// Classifies one sample (`channels * height * width` floats, already normalized) and
    /// escalates it through `handler` when its score is below the threshold.
    ///
    /// # Errors
    /// [`StudentError::InvalidInput`] for a wrong length, a NaN or infinite value, or a
    /// threshold outside `[0, 1]`; [`StudentError::Execution`] when the model fails.
    /// A failing handler never fails the call: see [`Prediction::outcome`].
    #[uniffi::method(default(options = None, handler = None))]
    pub fn classify(
        &self,
        input: Tensor,
        options: Option<ClassifyOptions>,
        handler: Option<Arc<dyn EscalationHandler>>,
    ) -> Result<Prediction, StudentError> {
        let start = Instant::now();
        let model = self.get("classify")?;
        let hook = hook_for(handler, options.as_ref())?;
        let options = runtime_options(options.as_ref())?;
        classify_one(&model, input.as_slice(), &options, hook.as_deref(), start)
    }

    /// Classifies a raw image of any size: 8-bit grayscale or RGBA, `width x height`
    /// pixels, row-major. It is converted, resized to the card's input size and normalized
    /// as the card says (see `InputSpec::tensor_from_pixels` in `student-runtime`).
    ///
    /// # Errors
    /// [`StudentError::InvalidInput`] when the byte count does not match the size and
    /// format; otherwise as [`classify`](StudentModel::classify).
    #[uniffi::method(default(options = None, handler = None))]
    pub fn classify_image(
        &self,
        pixels: Vec<u8>,
        width: u32,
        height: u32,
        format: PixelFormat,
        options: Option<ClassifyOptions>,
        handler: Option<Arc<dyn EscalationHandler>>,
    ) -> Result<Prediction, StudentError> {
        let start = Instant::now();
        let model = self.get("classify_image")?;
        let input = model.input_spec().tensor_from_pixels(
            &pixels,
            width as usize,
            height as usize,
            format.into(),
        )?;
        let hook = hook_for(handler, options.as_ref())?;
        let options = runtime_options(options.as_ref())?;
        classify_one(&model, &input, &options, hook.as_deref(), start)
    }

    /// Classifies samples laid end to end in `inputs` (a whole number of samples), one
    /// prediction each, in order. Each latency covers its own sample.
    ///
    /// # Errors
    /// [`StudentError::InvalidInput`] when `inputs` is empty or not a whole number of
    /// samples; otherwise as [`classify`](StudentModel::classify), for the first sample
    /// that fails, its reason starting with the sample's 0-based index (`sample 2: ...`).
    #[uniffi::method(default(options = None, handler = None))]
    pub fn classify_batch(
        &self,
        inputs: Tensor,
        options: Option<ClassifyOptions>,
        handler: Option<Arc<dyn EscalationHandler>>,
    ) -> Result<Vec<Prediction>, StudentError> {
        let model = self.get("classify_batch")?;
        let per = model.input_spec().len();
        let values = inputs.as_slice();
        if values.is_empty() || values.len() % per != 0 {
            return Err(StudentError::InvalidInput {
                reason: format!(
                    "{} values is not a whole number of samples of {per} values",
                    values.len()
                ),
            });
        }
        let hook = hook_for(handler, options.as_ref())?;
        let options = runtime_options(options.as_ref())?;
        // The model is opened with a batch-1 plan, so samples run one at a time either way;
        // going through `classify` keeps escalation identical to single calls.
        values
            .chunks(per)
            .enumerate()
            .map(|(i, sample)| {
                let start = Instant::now();
                classify_one(&model, sample, &options, hook.as_deref(), start)
                    .map_err(|e| e.within(&format!("sample {i}")))
            })
            .collect()
    }

    /// Releases the model once running calls return; later calls fail with
    /// [`StudentError::Unloaded`]. Unloading twice is harmless.
    pub fn unload(&self) {
        *self.model.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl StudentModel {
    fn wrap(model: rt::StudentModel) -> Arc<StudentModel> {
        Arc::new(StudentModel {
            model: RwLock::new(Some(Arc::new(model))),
        })
    }

    /// The open model, kept alive for the length of one call even if another thread
    /// unloads it meanwhile.
    fn get(&self, call: &str) -> Result<Arc<rt::StudentModel>, StudentError> {
        self.model
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StudentError::Unloaded {
                reason: format!("{call}: the model was unloaded"),
            })
    }
}

/// The limits a model is opened with unless [`OpenOptions::limits`] says otherwise: a
/// starting point for an app that changes one of them.
#[uniffi::export]
pub fn default_limits() -> Limits {
    Limits::from(rt::Limits::default())
}

/// The call's options, or the card's defaults.
fn runtime_options(options: Option<&ClassifyOptions>) -> Result<rt::ClassifyOptions, StudentError> {
    options.map_or_else(
        || Ok(rt::ClassifyOptions::default()),
        ClassifyOptions::to_runtime,
    )
}

fn classify_one(
    model: &rt::StudentModel,
    input: &[f32],
    options: &rt::ClassifyOptions,
    hook: Option<&dyn rt::EscalationHook>,
    start: Instant,
) -> Result<Prediction, StudentError> {
    let prediction = model.classify(input, options, hook)?;
    let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    Ok(Prediction::of(&prediction, micros))
}

/// Options that accept only models signed by one of `keys`; at least one key is needed.
fn signed_options(
    keys: &[String],
    signature: Option<Vec<u8>>,
) -> Result<rt::OpenOptions, StudentError> {
    if keys.is_empty() {
        return Err(StudentError::InvalidInput {
            reason: "no trusted keys given: a signed model needs at least one".to_string(),
        });
    }
    let trusted_keys = keys
        .iter()
        .map(|k| rt::signing::TrustedKey::from_hex(k))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rt::OpenOptions {
        trusted_keys,
        signature,
        ..rt::OpenOptions::default()
    })
}
