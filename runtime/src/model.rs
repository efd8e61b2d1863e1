//! `StudentModel`: an opened student, ready to classify.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use sha2::{Digest, Sha256};
use student_kernels::Isa;

use crate::card::{InputSpec, ModelCard, NonFinite};
use crate::compiled::exec::Executor;
#[cfg(feature = "onnx")]
use crate::engine::Engine;
use crate::error::Error;
use crate::escalation::{EscalationHook, EscalationRequest};
use crate::info::GraphInfo;
use crate::limits::{Check, Limit, Limits};
use crate::prediction::{AnsweredBy, Decision, EscalationOutcome, Prediction, Ranked};
use crate::score::{calibrated_probabilities, score_from_probabilities};
use crate::signing::{MAX_SIGNATURE_BYTES, TrustedKey, hex};
use crate::source::ModelBytes;

/// How a model is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    /// The batch size of the plan a compiled student uses for
    /// [`StudentModel::logits_batch`]. Single-input calls always use a batch-1 plan. Must
    /// be at least 1. An ONNX file runs every batch one sample at a time, so that each
    /// sample's answer is its own (its graph may read the batch size or mix samples).
    pub batch: usize,
    /// The kernels a compiled student runs with. `None` takes the `STUDENT_KERNELS`
    /// environment variable when it is set, else the best level this CPU has. Naming a
    /// level the CPU lacks is an error. ONNX files run through tract, not the kernels:
    /// naming a level for one is an error, and `STUDENT_KERNELS`, when set, must still
    /// name a level this CPU has.
    pub kernels: Option<Isa>,
    /// What the file may declare before it is refused (sizes of the file, tensors,
    /// weights, graph, strings, working memory), checked before anything of that size is
    /// allocated.
    pub limits: Limits,
    /// Memory-map the file instead of reading it into memory the model owns (the default).
    ///
    /// Mapping saves one copy of the file and shares its pages with other processes that
    /// map it, but a file truncated or rewritten in place while the model is open then
    /// faults the process (SIGBUS) or changes its answers. Set it only for files the app
    /// replaces by writing a new file and renaming it over the old one. Affects
    /// [`open`](StudentModel::open) only.
    pub memory_map: bool,
    /// When not empty, only models signed by one of these keys open: the signature is
    /// [`signature`](OpenOptions::signature), or else the file `MODEL.sig` next to the
    /// model (see [`signing`](crate::signing)). It is checked before the model is parsed.
    pub trusted_keys: Vec<TrustedKey>,
    /// The text of the model's signature file, for bytes opened from memory or a signature
    /// kept elsewhere than `MODEL.sig`.
    pub signature: Option<Vec<u8>>,
    /// Run an ONNX file through tract even where it uses an operator, or an attribute
    /// value, that the project has not compared with onnxruntime (by default such a file is
    /// refused as [`Error::Unsupported`]). tract departs from ONNX on some forms and then
    /// answers all the same, so check the model's answers yourself before shipping it.
    /// Forms known to be computed wrongly are refused either way. Compiled files ignore it.
    pub unchecked_operators: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            batch: 1,
            kernels: None,
            limits: Limits::default(),
            memory_map: false,
            trusted_keys: Vec::new(),
            signature: None,
            unchecked_operators: false,
        }
    }
}

/// Per-call choices for [`StudentModel::classify`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyOptions {
    /// Overrides the card's threshold; must lie in `[0, 1]`.
    pub threshold: Option<f32>,
    /// How many ranked classes the prediction lists (at least 1 is always listed).
    pub top_k: usize,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        ClassifyOptions {
            threshold: None,
            top_k: 3,
        }
    }
}

impl OpenOptions {
    /// Default options with batch size `batch`.
    pub fn with_batch(batch: usize) -> Self {
        OpenOptions {
            batch,
            ..OpenOptions::default()
        }
    }
}

impl ClassifyOptions {
    /// Options that accept every prediction (threshold 0): no escalation happens.
    pub fn accept_all() -> Self {
        ClassifyOptions {
            threshold: Some(0.0),
            top_k: 1,
        }
    }
}

/// An opened student model. `Send + Sync`: one instance serves concurrent callers.
pub struct StudentModel {
    origin: String,
    /// Hex SHA-256 of the bytes: computed at open for ONNX files, on first request for
    /// compiled files (whose own checksum is verified at open).
    sha256: std::sync::OnceLock<String>,
    file_size: u64,
    info: GraphInfo,
    card: ModelCard,
    backend: Backend,
}

/// The bytes a model is opened from. A compiled student keeps them (its weights are read
/// in place), so borrowed bytes are copied into an aligned buffer; an ONNX file is only
/// read while it is planned, so borrowed bytes are read where they are.
enum Source<'a> {
    Mapped(ModelBytes),
    Borrowed(&'a [u8]),
}

impl Source<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Source::Mapped(bytes) => bytes.as_slice(),
            Source::Borrowed(bytes) => bytes,
        }
    }

    fn into_owned(self) -> ModelBytes {
        match self {
            Source::Mapped(bytes) => bytes,
            Source::Borrowed(bytes) => ModelBytes::copy(bytes),
        }
    }
}

/// What runs the graph.
enum Backend {
    /// A compiled student: the executor reads its weights in place from `bytes`.
    Compiled {
        bytes: ModelBytes,
        executor: Executor,
        batch: usize,
    },
    /// An ONNX file through tract, planned for one sample: a batch runs sample by sample
    /// (see `parse_onnx`).
    #[cfg(feature = "onnx")]
    Tract { single: Engine },
}

impl std::fmt::Debug for StudentModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StudentModel")
            .field("origin", &self.origin)
            .field("name", &self.card.name)
            .field("classes", &self.info.classes)
            .finish_non_exhaustive()
    }
}

/// The kernel level `options` ask for: theirs, else `STUDENT_KERNELS`, else the best this
/// CPU has. Errors if it names a level this CPU cannot run or no level at all.
fn chosen_kernels(options: &OpenOptions) -> Result<Isa, Error> {
    match options.kernels {
        Some(isa) if isa.is_available() => Ok(isa),
        Some(isa) => Err(Error::InvalidOption {
            name: "kernels",
            reason: format!(
                "this CPU cannot run {}; the best it has is {}",
                isa.name(),
                Isa::best().name()
            ),
        }),
        None => student_kernels::isa_from_env().map_err(|e| Error::InvalidOption {
            name: "kernels",
            reason: match e {
                // This one names the variable itself.
                student_kernels::KernelError::UnknownIsa { .. } => e.to_string(),
                _ => format!("{}: {e}", student_kernels::ENV_VAR),
            },
        }),
    }
}

impl StudentModel {
    /// Opens a student (an ONNX file or a compiled `.student` file) by reading `path` into
    /// memory, with a batch-1 plan.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::NotOnnx`] or
    /// [`Error::NotCompiled`] when it is empty, truncated or in no format this runtime
    /// reads; [`Error::TooLarge`] when it declares more than the default [`Limits`];
    /// [`Error::Malformed`] when its structure is broken; [`Error::Unsupported`] when the
    /// graph is not a single-input, single-output classifier with fixed sample dimensions;
    /// [`Error::InvalidCard`] when the model card is malformed; [`Error::Plan`] when the
    /// engine cannot plan the graph.
    pub fn open(path: impl AsRef<Path>) -> Result<StudentModel, Error> {
        StudentModel::open_with(path, &OpenOptions::default())
    }

    /// Like [`open`](StudentModel::open), with options; [`Error::Signature`] when
    /// `options.trusted_keys` is set and the model is not signed by one of them.
    pub fn open_with(path: impl AsRef<Path>, options: &OpenOptions) -> Result<StudentModel, Error> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let check = Check {
            limits: &options.limits,
            origin: &origin,
        };
        let bytes = if options.memory_map {
            ModelBytes::map(path, &check)?
        } else {
            ModelBytes::read(path, &check)?
        };
        if !options.trusted_keys.is_empty() {
            let signature = match &options.signature {
                Some(text) => text.clone(),
                None => read_signature(path, &origin)?,
            };
            verify_signature(bytes.as_slice(), &signature, options, &origin)?;
        }
        let model =
            StudentModel::parse(Source::Mapped(bytes), &path.display().to_string(), options)?;
        log::info!(
            "opened {} ({}, {} classes, {} parameters)",
            path.display(),
            model.card.name,
            model.info.classes,
            model.info.params
        );
        Ok(model)
    }

    /// Opens a student from bytes already in memory (for example, bundled in an app).
    /// With `options.trusted_keys` set, `options.signature` must hold the signature.
    pub fn from_bytes(bytes: &[u8], options: &OpenOptions) -> Result<StudentModel, Error> {
        StudentModel::from_bytes_named(bytes, "in-memory bytes", options)
    }

    /// Like [`from_bytes`](StudentModel::from_bytes), naming the bytes `origin` (a file
    /// name, say) in errors and logs.
    pub fn from_bytes_named(
        bytes: &[u8],
        origin: &str,
        options: &OpenOptions,
    ) -> Result<StudentModel, Error> {
        let check = Check {
            limits: &options.limits,
            origin,
        };
        check.within(Limit::File, Some(bytes.len() as u64), || {
            "the model's size".to_string()
        })?;
        if !options.trusted_keys.is_empty() {
            let Some(signature) = &options.signature else {
                return Err(Error::Signature {
                    origin: origin.to_string(),
                    reason: "no signature was given (OpenOptions::signature) and trusted keys \
                             are set"
                        .to_string(),
                });
            };
            verify_signature(bytes, signature, options, origin)?;
        }
        StudentModel::parse(Source::Borrowed(bytes), origin, options)
    }

    fn parse(
        bytes: Source<'_>,
        origin: &str,
        options: &OpenOptions,
    ) -> Result<StudentModel, Error> {
        if options.batch == 0 {
            return Err(Error::InvalidOption {
                name: "batch",
                reason: "batch size must be at least 1".to_string(),
            });
        }
        if crate::compiled::format::is_compiled(bytes.as_slice()) {
            return StudentModel::parse_compiled(bytes.into_owned(), origin, options);
        }
        // A compiled student whose magic was damaged would otherwise be reported as "not
        // an ONNX model", which sends its owner looking for the wrong problem.
        let wrong_magic = || Error::NotCompiled {
            origin: origin.to_string(),
            reason: crate::compiled::format::wrong_magic(bytes.as_slice()),
        };
        if crate::compiled::format::near_magic(bytes.as_slice()) {
            return Err(wrong_magic());
        }
        #[cfg(feature = "onnx")]
        {
            match StudentModel::parse_onnx(bytes.as_slice(), origin, options) {
                // Named as a compiled student, read as neither: say what a compiled
                // student lacks. (A renamed ONNX file still opens.)
                Err(Error::NotOnnx { .. }) if origin.ends_with(".student") => Err(wrong_magic()),
                other => other,
            }
        }
        #[cfg(not(feature = "onnx"))]
        {
            Err(Error::NotCompiled {
                origin: origin.to_string(),
                reason: "not a compiled student; this build runs only `.student` files (compile \
                         ONNX files with `student compile`)"
                    .to_string(),
            })
        }
    }

    fn parse_compiled(
        bytes: ModelBytes,
        origin: &str,
        options: &OpenOptions,
    ) -> Result<StudentModel, Error> {
        let isa = chosen_kernels(options)?;
        let check = Check {
            limits: &options.limits,
            origin,
        };
        let (executor, info) =
            crate::compiled::open(bytes.as_slice(), origin, isa, &check, options.batch)?;
        let card = info.card(origin)?;
        for default in card.defaults_applied() {
            log::warn!("{origin}: model card lacks {default}");
        }
        Ok(StudentModel {
            origin: origin.to_string(),
            sha256: std::sync::OnceLock::new(),
            file_size: bytes.as_slice().len() as u64,
            info,
            card,
            backend: Backend::Compiled {
                bytes,
                executor,
                batch: options.batch,
            },
        })
    }

    #[cfg(feature = "onnx")]
    fn parse_onnx(
        bytes: &[u8],
        origin: &str,
        options: &OpenOptions,
    ) -> Result<StudentModel, Error> {
        // A level asked for and silently not used would pass tract's figures off as the
        // kernels' (a benchmark at `--kernels portable`, say).
        if let Some(isa) = options.kernels {
            return Err(Error::InvalidOption {
                name: "kernels",
                reason: format!(
                    "{origin} is an ONNX file, which runs through tract, not at a kernel level \
                     such as {}; compile it with `student compile` to choose its kernels",
                    isa.name()
                ),
            });
        }
        chosen_kernels(options)?;
        let check = Check {
            limits: &options.limits,
            origin,
        };
        let mut proto = crate::onnx_wire::decode_checked(bytes, &check)?;
        crate::limits::check_onnx(&proto, &check, options.batch as u64)?;
        let info = GraphInfo::read(&proto, origin)?;
        let card = info.card(origin)?;
        crate::onnx_info::check_tract_forms(&proto, origin, options.unchecked_operators)?;
        // Shape annotations of intermediate tensors are hints that exporters and shape
        // inference write with their own batch symbol; tract would hold the plan to them and
        // refuse a fixed batch size. The graph determines the shapes without them.
        if let Some(graph) = proto.graph.as_mut() {
            graph.value_info.clear();
            crate::onnx_info::name_nodes_apart(graph);
        }
        // The card is read: tract need not copy the entries into each plan (a million tiny
        // entries took 3.2 s and 710 MB to open through it, 0.3 s and 250 MB without).
        proto.metadata_props.clear();
        let sample_dims = &info.input_dims[1..];
        let single = Engine::plan(&proto, sample_dims, info.classes, &check)?;
        // One plan, for one sample: a batch runs sample by sample. An ONNX graph may read
        // its batch size or mix the samples of a batch (a mean over them, used only when one
        // of them holds a trigger value), and through a batched plan a sample's answer
        // would then depend on what it is batched with: `eval` reported 92% for a model
        // that answers 1% of images right one at a time. No check of the graph proved
        // cheap and sound; tract runs a batch of 64 about 1.5x faster than 64 single
        // samples on the shipped models, and compiled students are the fast path.
        // Logged once the model is known to open, so a refused file gets one message.
        for default in card.defaults_applied() {
            log::warn!("{origin}: model card lacks {default}");
        }
        Ok(StudentModel {
            origin: origin.to_string(),
            sha256: std::sync::OnceLock::from(hex(&Sha256::digest(bytes))),
            file_size: bytes.len() as u64,
            info,
            card,
            backend: Backend::Tract { single },
        })
    }

    /// What runs the model: the kernels of a compiled student (`avx512vnni`, `neon`, ...),
    /// or `tract` for an ONNX file.
    pub fn kernels(&self) -> &'static str {
        match &self.backend {
            Backend::Compiled { executor, .. } => executor.isa().name(),
            #[cfg(feature = "onnx")]
            Backend::Tract { .. } => "tract",
        }
    }

    /// The ops of a compiled student by name with their counts (`conv-int8`, `dense-f32`,
    /// ...), sorted by name; empty for an ONNX file.
    pub fn compiled_ops(&self) -> Vec<(String, usize)> {
        #[allow(irrefutable_let_patterns)] // Without the `onnx` feature there is one backend.
        let Backend::Compiled { executor, .. } = &self.backend else {
            return Vec::new();
        };
        let mut counts = std::collections::BTreeMap::new();
        for op in &executor.plan().manifest.ops {
            *counts.entry(op.name().to_string()).or_insert(0) += 1;
        }
        counts.into_iter().collect()
    }

    /// Runs `input`, a whole number of samples, through the backend.
    fn run(&self, input: &[f32], samples: usize) -> Result<Vec<f32>, Error> {
        let run_error = |e: String| Error::Run { source: e.into() };
        match &self.backend {
            Backend::Compiled {
                bytes,
                executor,
                batch,
            } => {
                let per = self.card.input.len();
                let mut out = Vec::with_capacity(samples * self.info.classes);
                for chunk in input.chunks(per * batch) {
                    let logits = executor
                        .run(bytes.as_slice(), chunk, chunk.len() / per)
                        .map_err(run_error)?;
                    out.extend(logits);
                }
                Ok(out)
            }
            #[cfg(feature = "onnx")]
            Backend::Tract { single } => {
                if samples == 1 {
                    return single.run(input);
                }
                let per = self.card.input.len();
                let mut out = Vec::with_capacity(samples * self.info.classes);
                for sample in input.chunks(per) {
                    out.extend(single.run(sample)?);
                }
                Ok(out)
            }
        }
    }

    /// The model card (with defaults filled in where the file lacked sections).
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// The declared input: one sample holds `input_spec().len()` values.
    pub fn input_spec(&self) -> &InputSpec {
        &self.card.input
    }

    /// Number of classes the model outputs.
    pub fn classes(&self) -> usize {
        self.info.classes
    }

    /// Number of parameters (elements of all initializers).
    pub fn params(&self) -> u64 {
        self.info.params
    }

    /// The operator types in the graph with their counts, sorted by name.
    pub fn operators(&self) -> &[(String, usize)] {
        &self.info.operators
    }

    /// The size in bytes of the opened file or buffer.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// SHA-256 of the opened file or buffer, hex encoded.
    pub fn sha256(&self) -> &str {
        self.sha256.get_or_init(|| match &self.backend {
            Backend::Compiled { bytes, .. } => hex(&Sha256::digest(bytes.as_slice())),
            // Set at open.
            #[cfg(feature = "onnx")]
            Backend::Tract { .. } => String::new(),
        })
    }

    /// Where the model was opened from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Raw logits for one sample.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `input` does not hold exactly one sample or holds a NaN
    /// or infinite value; [`Error::Run`] or [`Error::NonFiniteOutput`] when execution fails.
    pub fn logits(&self, input: &[f32]) -> Result<Vec<f32>, Error> {
        Ok(self.sample_logits(input)?.1)
    }

    /// One sample's checked input (as the card's `non_finite` rule left it) and logits.
    fn sample_logits<'i>(
        &self,
        input: &'i [f32],
    ) -> Result<(std::borrow::Cow<'i, [f32]>, Vec<f32>), Error> {
        let input = self.check_input(input, 1)?;
        let logits = self.run(&input, 1)?;
        check_logits(&logits, self.info.classes, &self.origin)?;
        Ok((input, logits))
    }

    /// Raw logits for `input.len() / sample_len` samples, row after row. A compiled student
    /// runs full batches of the size chosen at open, then the remainder; an ONNX file runs
    /// sample by sample (see [`OpenOptions::batch`]).
    ///
    /// # Errors
    /// As [`logits`](StudentModel::logits); the input length must be a whole number of
    /// samples.
    pub fn logits_batch(&self, input: &[f32]) -> Result<Vec<f32>, Error> {
        let per = self.card.input.len();
        if input.is_empty() || input.len() % per != 0 {
            return Err(Error::InvalidInput(format!(
                "{} values is not a whole number of samples of {per} values",
                input.len()
            )));
        }
        let n = input.len() / per;
        let input = self.check_input(input, n)?;
        let out = self.run(&input, n)?;
        check_logits(&out, self.info.classes, &self.origin)?;
        Ok(out)
    }

    /// Classifies one sample and escalates it through `hook` when its score is below the
    /// threshold (the card's, or `options.threshold`).
    ///
    /// A failing hook never fails this call: the student's answer stays and the
    /// prediction's [`EscalationOutcome`] says what happened.
    ///
    /// # Errors
    /// As [`logits`](StudentModel::logits), and [`Error::InvalidOption`] for a threshold
    /// outside `[0, 1]`.
    pub fn classify(
        &self,
        input: &[f32],
        options: &ClassifyOptions,
        hook: Option<&dyn EscalationHook>,
    ) -> Result<Prediction, Error> {
        let (input, logits) = self.sample_logits(input)?;
        let mut prediction = self.predict_from_logits(&logits, options)?;
        let Some(hook) = hook.filter(|_| prediction.escalated()) else {
            return Ok(prediction);
        };
        let (outcome, answer) = self.run_hook(hook, &input, &prediction);
        if let (Some(index), EscalationOutcome::Answered { by, .. }) = (answer, &outcome) {
            prediction.final_index = index;
            prediction.final_label = self.card.labels[index].clone();
            prediction.answered_by = AnsweredBy::Hook(by.clone());
        }
        if let Decision::Escalated { outcome: slot, .. } = &mut prediction.decision {
            *slot = outcome;
        }
        Ok(prediction)
    }

    /// Turns one sample's logits into a prediction without escalating: the decision says
    /// whether it would escalate, with [`EscalationOutcome::NoHook`].
    ///
    /// This is the same decision [`classify`](StudentModel::classify) makes, exposed so that
    /// evaluations over precomputed logits agree with the runtime exactly.
    pub fn predict_from_logits(
        &self,
        logits: &[f32],
        options: &ClassifyOptions,
    ) -> Result<Prediction, Error> {
        if logits.len() != self.info.classes {
            return Err(Error::InvalidInput(format!(
                "{} logits, the model has {} classes",
                logits.len(),
                self.info.classes
            )));
        }
        check_logits(logits, self.info.classes, &self.origin)?;
        let threshold = self.threshold(options)?;
        let probabilities = calibrated_probabilities(logits, self.card.calibration.temperature);
        let mut order: Vec<usize> = (0..probabilities.len()).collect();
        order.sort_by(|&a, &b| {
            probabilities[b]
                .total_cmp(&probabilities[a])
                .then(a.cmp(&b))
        });
        let top_k = order
            .iter()
            .take(options.top_k.max(1))
            .map(|&i| Ranked {
                index: i,
                label: self.card.labels[i].clone(),
                probability: probabilities[i],
            })
            .collect::<Vec<_>>();
        let best = order[0];
        let kind = self.card.escalation.score;
        let score = score_from_probabilities(&probabilities, kind);
        let decision = if score >= threshold {
            Decision::Accepted { threshold }
        } else {
            Decision::Escalated {
                threshold,
                outcome: EscalationOutcome::NoHook,
            }
        };
        Ok(Prediction {
            index: best,
            label: self.card.labels[best].clone(),
            confidence: probabilities[best],
            top_k,
            score_kind: kind,
            score,
            decision,
            final_index: best,
            final_label: self.card.labels[best].clone(),
            answered_by: AnsweredBy::Student,
        })
    }

    fn threshold(&self, options: &ClassifyOptions) -> Result<f32, Error> {
        match options.threshold {
            None => Ok(self.card.escalation.threshold),
            Some(t) if (0.0..=1.0).contains(&t) => Ok(t),
            Some(t) => Err(Error::InvalidOption {
                name: "threshold",
                reason: format!("{t} is outside [0, 1]"),
            }),
        }
    }

    /// Checks the length of `input`, and its values as the card's `non_finite` says:
    /// borrowed back unchanged, or copied with NaN and infinities replaced.
    fn check_input<'i>(
        &self,
        input: &'i [f32],
        samples: usize,
    ) -> Result<std::borrow::Cow<'i, [f32]>, Error> {
        let expected = self.card.input.len() * samples;
        if input.len() != expected {
            return Err(Error::InvalidInput(format!(
                "{} values, expected {expected} ({samples} x {}x{}x{})",
                input.len(),
                self.card.input.channels,
                self.card.input.height,
                self.card.input.width
            )));
        }
        let Some(i) = input.iter().position(|v| !v.is_finite()) else {
            return Ok(std::borrow::Cow::Borrowed(input));
        };
        match self.card.input.non_finite {
            NonFinite::Reject => Err(Error::InvalidInput(format!(
                "value {} at position {i} is not finite (the model card's input.non_finite \
                 is `reject`)",
                input[i]
            ))),
            NonFinite::Zero => Ok(std::borrow::Cow::Owned(
                input
                    .iter()
                    .map(|&v| if v.is_finite() { v } else { 0.0 })
                    .collect(),
            )),
        }
    }

    /// Calls the hook, containing its failures. Returns the outcome and, when the hook
    /// answered with a valid class, that class.
    fn run_hook(
        &self,
        hook: &dyn EscalationHook,
        input: &[f32],
        prediction: &Prediction,
    ) -> (EscalationOutcome, Option<usize>) {
        // The hook is app code: even its name may panic.
        let by = catch_unwind(AssertUnwindSafe(|| hook.name().to_string()))
            .unwrap_or_else(|_| "escalation hook".to_string());
        let request = EscalationRequest { input, prediction };
        let result = catch_unwind(AssertUnwindSafe(|| hook.escalate(&request)));
        match result {
            Err(_) => {
                log::warn!("escalation hook {by} panicked; keeping the student's answer");
                (
                    EscalationOutcome::Failed {
                        by,
                        error: "the hook panicked".to_string(),
                    },
                    None,
                )
            }
            Ok(Err(e)) => {
                log::warn!("escalation hook {by} failed: {e}; keeping the student's answer");
                (
                    EscalationOutcome::Failed {
                        by,
                        error: e.to_string(),
                    },
                    None,
                )
            }
            Ok(Ok(None)) => (EscalationOutcome::Declined { by }, None),
            Ok(Ok(Some(answer))) if answer.index >= self.info.classes => {
                let error = format!(
                    "the hook answered class {}, the model has {} classes",
                    answer.index, self.info.classes
                );
                (EscalationOutcome::Failed { by, error }, None)
            }
            Ok(Ok(Some(answer)))
                if answer.confidence.is_some_and(|c| !(0.0..=1.0).contains(&c)) =>
            {
                let error = format!(
                    "the hook answered with confidence {}, expected a value in [0, 1]",
                    answer.confidence.unwrap_or(f32::NAN)
                );
                (EscalationOutcome::Failed { by, error }, None)
            }
            Ok(Ok(Some(answer))) => (
                EscalationOutcome::Answered {
                    by,
                    confidence: answer.confidence,
                },
                Some(answer.index),
            ),
        }
    }
}

/// Reads the signature file `MODEL.sig` kept next to `path`.
fn read_signature(path: &Path, origin: &str) -> Result<Vec<u8>, Error> {
    let mut name = path.as_os_str().to_owned();
    name.push(".sig");
    let sig_path = std::path::PathBuf::from(name);
    let missing = |reason: String| Error::Signature {
        origin: origin.to_string(),
        reason,
    };
    crate::source::read_bounded(&sig_path, MAX_SIGNATURE_BYTES).map_err(|e| {
        missing(format!(
            "cannot read the signature {} ({e}); sign the model with `student sign`",
            sig_path.display()
        ))
    })
}

fn verify_signature(
    bytes: &[u8],
    signature: &[u8],
    options: &OpenOptions,
    origin: &str,
) -> Result<(), Error> {
    let key = crate::signing::verify(bytes, signature, &options.trusted_keys, origin)?;
    log::info!("{origin}: signed by trusted key {}", key.to_hex());
    Ok(())
}

fn check_logits(logits: &[f32], classes: usize, origin: &str) -> Result<(), Error> {
    match logits.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::NonFiniteOutput {
            origin: origin.to_string(),
            index: i % classes.max(1),
        }),
        None => Ok(()),
    }
}
