// The C layer under the generated Swift bindings, called the way Student.swift calls it:
// the header uniffi-bindgen wrote for Swift, the library built for release, and the
// uniffi wire format (big-endian integers, length-prefixed strings, 1-based enum tags).
// Run by bindings/tests/swift-c.sh; prints one line per failure and `N passed, N failed`.
//
// expected.h is extracted from Student.swift by the script: the contract version and the
// API checksums the Swift file refuses to run without.

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The header is written for clang, whose nullability qualifiers gcc does not know; they
// change nothing in the ABI.
#ifndef __clang__
#define _Nonnull
#define _Nullable
#endif
#include "StudentFFI.h"

static int passed, failed;

static void check(int ok, const char *what, ...) {
    if (ok) {
        passed++;
        return;
    }
    failed++;
    va_list args;
    va_start(args, what);
    printf("FAILED ");
    vprintf(what, args);
    printf("\n");
    va_end(args);
}

// Status codes of RustCallStatus.
enum { CALL_SUCCESS = 0, CALL_ERROR = 1, CALL_UNEXPECTED_ERROR = 2 };

// StudentError variants, 1-based, in declaration order.
enum { ERR_IO = 1, ERR_INVALID_MODEL, ERR_INVALID_INPUT, ERR_EXECUTION, ERR_UNLOADED };

// EscalationOutcome variants.
enum { NOT_ESCALATED = 1, NO_HANDLER, ANSWERED, DECLINED, FAILED };

static RustCallStatus ok_status(void) {
    RustCallStatus s;
    memset(&s, 0, sizeof s);
    return s;
}

// Rust writes the status only when a call fails: each call gets a fresh one.
static RustCallStatus *fresh(RustCallStatus *s) {
    *s = ok_status();
    return s;
}

static void free_buffer(RustBuffer buf) {
    RustCallStatus s = ok_status();
    ffi_student_ffi_rustbuffer_free(buf, &s);
}

// Writing arguments: a growable byte array turned into a RustBuffer owned by Rust.

typedef struct {
    uint8_t bytes[8192];
    size_t len;
} Writer;

static void put(Writer *w, const void *data, size_t n) {
    if (w->len + n > sizeof w->bytes) {
        fprintf(stderr, "writer overflow\n");
        exit(2);
    }
    memcpy(w->bytes + w->len, data, n);
    w->len += n;
}

static void put_u8(Writer *w, uint8_t v) { put(w, &v, 1); }

static void put_u32(Writer *w, uint32_t v) {
    uint8_t b[4] = {v >> 24, v >> 16, v >> 8, v};
    put(w, b, 4);
}

static void put_u64(Writer *w, uint64_t v) {
    put_u32(w, (uint32_t)(v >> 32));
    put_u32(w, (uint32_t)v);
}

static void put_f32(Writer *w, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(w, v);
}

static void put_string(Writer *w, const char *s) {
    put_u32(w, (uint32_t)strlen(s));
    put(w, s, strlen(s));
}

static RustBuffer to_buffer(const void *data, size_t n) {
    RustCallStatus s = ok_status();
    ForeignBytes bytes = {(int32_t)n, data};
    return ffi_student_ffi_rustbuffer_from_bytes(bytes, &s);
}

static RustBuffer done(Writer *w) { return to_buffer(w->bytes, w->len); }

// A top-level string argument is its UTF-8 bytes, without a length.
static RustBuffer string_arg(const char *s) { return to_buffer(s, strlen(s)); }

// A tensor: `bytes` on the wire (length, then little-endian floats).
static RustBuffer tensor_arg(const float *values, size_t n) {
    Writer w = {0};
    put_u32(&w, (uint32_t)(n * 4));
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, &values[i], 4);
        uint8_t le[4] = {v, v >> 8, v >> 16, v >> 24};
        put(&w, le, 4);
    }
    return done(&w);
}

static RustBuffer none_arg(void) {
    Writer w = {0};
    put_u8(&w, 0);
    return done(&w);
}

// Some(ClassifyOptions { threshold: Some(t), top_k, handler_deadline_ms: None }).
static RustBuffer options_arg(float threshold, uint32_t top_k) {
    Writer w = {0};
    put_u8(&w, 1);
    put_u8(&w, 1);
    put_f32(&w, threshold);
    put_u32(&w, top_k);
    put_u8(&w, 0);
    return done(&w);
}

static RustBuffer handler_arg(uint64_t handle) {
    Writer w = {0};
    put_u8(&w, 1);
    put_u64(&w, handle);
    return done(&w);
}

static RustBuffer enum_arg(uint32_t tag) {
    Writer w = {0};
    put_u32(&w, tag);
    return done(&w);
}

// Reading results.

typedef struct {
    const uint8_t *p, *end;
    int bad;
} Reader;

static Reader reader(RustBuffer buf) { return (Reader){buf.data, buf.data + buf.len, 0}; }

static const uint8_t *take(Reader *r, size_t n) {
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = 1;
        static const uint8_t zeros[8];
        return zeros;
    }
    const uint8_t *at = r->p;
    r->p += n;
    return at;
}

static uint8_t get_u8(Reader *r) { return *take(r, 1); }

static uint32_t get_u32(Reader *r) {
    const uint8_t *b = take(r, 4);
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint64_t get_u64(Reader *r) {
    uint64_t hi = get_u32(r);
    return hi << 32 | get_u32(r);
}

static float get_f32(Reader *r) {
    uint32_t v = get_u32(r);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

// Copies a length-prefixed string into `out` (truncated to `cap`; empty on a short read,
// where `take` returns only a few zero bytes).
static void get_string(Reader *r, char *out, size_t cap) {
    uint32_t n = get_u32(r);
    const uint8_t *s = take(r, n);
    if (r->bad) {
        out[0] = 0;
        return;
    }
    size_t k = n < cap - 1 ? n : cap - 1;
    memcpy(out, s, k);
    out[k] = 0;
}

static void skip_string(Reader *r) { take(r, get_u32(r)); }

typedef struct {
    char label[64];
    uint32_t index;
    float confidence;
    uint32_t top_k;
    float score, threshold;
    uint8_t escalated;
    uint32_t outcome;
    char outcome_by[64], outcome_error[256];
    char reason[512], answered_by[64], final_label[64];
    uint32_t final_index;
    uint64_t latency;
    int bad;
} Prediction;

static Prediction read_prediction(Reader *r) {
    Prediction p;
    memset(&p, 0, sizeof p);
    get_string(r, p.label, sizeof p.label);
    p.index = get_u32(r);
    p.confidence = get_f32(r);
    p.top_k = get_u32(r);
    for (uint32_t i = 0; i < p.top_k && !r->bad; i++) {
        skip_string(r);
        get_u32(r);
        get_f32(r);
    }
    p.score = get_f32(r);
    get_u32(r);  // score kind
    p.threshold = get_f32(r);
    p.escalated = get_u8(r);
    p.outcome = get_u32(r);
    if (p.outcome == ANSWERED) {
        get_string(r, p.outcome_by, sizeof p.outcome_by);
        if (get_u8(r)) get_f32(r);
    } else if (p.outcome == DECLINED) {
        get_string(r, p.outcome_by, sizeof p.outcome_by);
    } else if (p.outcome == FAILED) {
        get_string(r, p.outcome_by, sizeof p.outcome_by);
        get_string(r, p.outcome_error, sizeof p.outcome_error);
    }
    get_string(r, p.reason, sizeof p.reason);
    get_string(r, p.answered_by, sizeof p.answered_by);
    get_string(r, p.final_label, sizeof p.final_label);
    p.final_index = get_u32(r);
    p.latency = get_u64(r);
    p.bad = r->bad;
    return p;
}

static Prediction take_prediction(RustBuffer buf) {
    Reader r = reader(buf);
    Prediction p = read_prediction(&r);
    if (r.p != r.end) p.bad = 1;
    free_buffer(buf);
    return p;
}

// The variant of a StudentError in an error buffer (0 for anything else), with its reason.
// Frees the error buffer of a failed call, expected or not, and resets the status.
static uint32_t error_variant(RustCallStatus *s, char *reason, size_t cap) {
    reason[0] = 0;
    uint32_t variant = 0;
    if (s->code == CALL_ERROR) {
        Reader r = reader(s->errorBuf);
        variant = get_u32(&r);
        get_string(&r, reason, cap);
        if (r.bad) variant = 0;
    }
    if (s->code != CALL_SUCCESS) free_buffer(s->errorBuf);
    *s = ok_status();
    return variant;
}

// The escalation handler's vtable: a C "app" implementing EscalationHandler.

enum { HANDLER_ANSWERS = 1, HANDLER_THROWS = 3, HANDLER_PANICS = 5 };  // odd: foreign handles

static int handler_calls, handler_frees;
static uint32_t request_input_len;

static void handler_free(uint64_t handle) {
    (void)handle;
    handler_frees++;
}

static uint64_t handler_clone(uint64_t handle) { return handle; }

static void handler_name(uint64_t handle, RustBuffer *out, RustCallStatus *status) {
    if (handle == HANDLER_PANICS) {
        // A name() that throws something untyped: the handler is named generically.
        status->code = CALL_UNEXPECTED_ERROR;
        status->errorBuf = string_arg("no name today");
        return;
    }
    *out = string_arg(handle == HANDLER_ANSWERS ? "c-reviewer" : "c-flaky");
}

static void handler_escalate(uint64_t handle, RustBuffer request, RustBuffer *out,
                             RustCallStatus *status) {
    handler_calls++;
    Reader r = reader(request);
    request_input_len = get_u32(&r) / 4;  // the tensor's byte length comes first
    free_buffer(request);
    if (handle == HANDLER_ANSWERS) {
        // Some(HandlerAnswer { index: 3, confidence: Some(0.75) })
        Writer w = {0};
        put_u8(&w, 1);
        put_u32(&w, 3);
        put_u8(&w, 1);
        put_f32(&w, 0.75f);
        *out = done(&w);
    } else if (handle == HANDLER_THROWS) {
        // EscalationError::Failed { reason }, as Swift lowers a thrown typed error.
        Writer w = {0};
        put_u32(&w, 1);
        put_string(&w, "queue full");
        status->code = CALL_ERROR;
        status->errorBuf = done(&w);
    } else {
        // Any other Swift error: an unexpected error carrying its description.
        status->code = CALL_UNEXPECTED_ERROR;
        status->errorBuf = string_arg("fatal: out of cheese");
    }
}

static const UniffiVTableCallbackInterfaceEscalationHandler handler_vtable = {
    handler_free, handler_clone, handler_name, handler_escalate};

// The log sink's vtable: a C "app" logger that keeps the text of `opened` records, and
// one that fails on every record.

enum { SINK_KEEPS = 7, SINK_THROWS = 9 };

static int sink_records, sink_frees;
static char sink_opened[256];

static void sink_free(uint64_t handle) {
    (void)handle;
    sink_frees++;
}

static uint64_t sink_clone(uint64_t handle) { return handle; }

static void sink_log(uint64_t handle, RustBuffer record, void *out, RustCallStatus *status) {
    (void)out;
    sink_records++;
    Reader r = reader(record);
    uint32_t level = get_u32(&r);
    char target[128], text[256];
    get_string(&r, target, sizeof target);
    get_string(&r, text, sizeof text);
    if (!r.bad && level == 3 && strncmp(text, "opened", 6) == 0) {
        memcpy(sink_opened, text, sizeof sink_opened);
    }
    free_buffer(record);
    if (handle == SINK_THROWS) {
        status->code = CALL_UNEXPECTED_ERROR;
        status->errorBuf = string_arg("logger broke");
    }
}

static const UniffiVTableCallbackInterfaceLogSink sink_vtable = {sink_free, sink_clone, sink_log};

// set_log_sink(Some(handle) or None, Info).
static void set_sink(uint64_t handle, RustCallStatus *s) {
    RustBuffer sink = handle ? handler_arg(handle) : none_arg();
    uniffi_student_ffi_fn_func_set_log_sink(sink, enum_arg(3), fresh(s));
}

// Each method call consumes one reference to the object, as Student.swift passes
// `uniffiCloneHandle()`.
static uint64_t ref(uint64_t model) {
    RustCallStatus s = ok_status();
    return uniffi_student_ffi_fn_clone_studentmodel(model, &s);
}

int main(int argc, char **argv) {
    const char *model_path = argc > 1 ? argv[1] : "models/fashion-mnist/student.onnx";

    // What Student.swift checks before its first call.
    check(ffi_student_ffi_uniffi_contract_version() == EXPECTED_CONTRACT_VERSION,
          "contract version %u, Student.swift expects %u",
          ffi_student_ffi_uniffi_contract_version(), EXPECTED_CONTRACT_VERSION);
#define CHECKSUM(fn, expected) check(fn() == (expected), #fn " is %u, Student.swift expects %u", fn(), expected);
    EXPECTED_CHECKSUMS
#undef CHECKSUM

    RustCallStatus s = ok_status();
    uniffi_student_ffi_fn_init_callback_vtable_escalationhandler(&handler_vtable);
    uniffi_student_ffi_fn_init_callback_vtable_logsink(&sink_vtable);

    // The log sink receives the runtime's records: opening the model logs `opened`.
    set_sink(SINK_KEEPS, &s);
    check(s.code == CALL_SUCCESS, "set_log_sink: status %d", s.code);

    uint64_t model = uniffi_student_ffi_fn_constructor_studentmodel_open(string_arg(model_path), fresh(&s));
    check(s.code == CALL_SUCCESS && model != 0, "open %s: status %d", model_path, s.code);
    if (s.code != CALL_SUCCESS) {
        printf("%d passed, %d failed\n", passed, failed + 1);
        return 1;
    }
    check(sink_records > 0 && strstr(sink_opened, "student.onnx"),
          "log sink: %d records, `opened` record `%s`", sink_records, sink_opened);

    // A sink that fails drops its records: the call that logged goes on, nothing panics.
    set_sink(SINK_THROWS, &s);
    check(s.code == CALL_SUCCESS && sink_frees == 1,
          "replacing the sink: status %d, %d sinks released", s.code, sink_frees);
    int before = sink_records;
    uint64_t again = uniffi_student_ffi_fn_constructor_studentmodel_open(string_arg(model_path),
                                                                         fresh(&s));
    check(s.code == CALL_SUCCESS && sink_records > before,
          "open with a failing sink: status %d, %d records", s.code, sink_records - before);
    if (s.code == CALL_SUCCESS) uniffi_student_ffi_fn_free_studentmodel(again, fresh(&s));
    set_sink(0, &s);
    check(s.code == CALL_SUCCESS && sink_frees == 2, "removing the sink: status %d, %d released",
          s.code, sink_frees);

    // info(): the first fields are the name and the labels.
    RustBuffer info = uniffi_student_ffi_fn_method_studentmodel_info(ref(model), fresh(&s));
    Reader r = reader(info);
    char name[128], label0[64];
    get_string(&r, name, sizeof name);
    uint32_t labels = get_u32(&r);
    get_string(&r, label0, sizeof label0);
    check(s.code == CALL_SUCCESS && !r.bad && labels == 10 && strcmp(label0, "T-shirt/top") == 0,
          "info: %u labels, first `%s`", labels, label0);
    free_buffer(info);

    // An 8-bit gray gradient through classify_image (format tag 1: Gray8).
    uint8_t pixels[28 * 28];
    for (int i = 0; i < 28 * 28; i++) pixels[i] = (uint8_t)((i % 28) * 9);
    Writer w = {0};
    put_u32(&w, sizeof pixels);
    put(&w, pixels, sizeof pixels);
    RustBuffer pred = uniffi_student_ffi_fn_method_studentmodel_classify_image(
        ref(model), done(&w), 28, 28, enum_arg(1), none_arg(), none_arg(), fresh(&s));
    check(s.code == CALL_SUCCESS, "classify_image: status %d", s.code);
    Prediction p = take_prediction(pred);
    check(!p.bad && p.index < 10 && p.confidence > 0 && p.confidence <= 1 && p.top_k == 3,
          "classify_image: index %u confidence %f top_k %u", p.index, p.confidence, p.top_k);
    check(strcmp(p.answered_by, "student") == 0 && p.latency > 0,
          "classify_image: answered by `%s`, latency %llu", p.answered_by,
          (unsigned long long)p.latency);

    float zeros[28 * 28] = {0};
    pred = uniffi_student_ffi_fn_method_studentmodel_classify(
        ref(model), tensor_arg(zeros, 784), options_arg(0.0f, 1), none_arg(), fresh(&s));
    p = take_prediction(pred);
    check(s.code == CALL_SUCCESS && !p.bad && !p.escalated && p.outcome == NOT_ESCALATED &&
              p.top_k == 1 && p.threshold == 0.0f,
          "classify at threshold 0: status %d escalated %d outcome %u", s.code, p.escalated,
          p.outcome);

    // The C handler answers class 3 when every prediction escalates (threshold 1).
    pred = uniffi_student_ffi_fn_method_studentmodel_classify(
        ref(model), tensor_arg(zeros, 784), options_arg(1.0f, 3), handler_arg(HANDLER_ANSWERS),
        fresh(&s));
    p = take_prediction(pred);
    check(s.code == CALL_SUCCESS && !p.bad && handler_calls == 1 && request_input_len == 784,
          "handler: status %d, %d calls, request of %u values", s.code, handler_calls,
          request_input_len);
    check(p.escalated && p.outcome == ANSWERED && p.final_index == 3 &&
              strcmp(p.answered_by, "c-reviewer") == 0 && strcmp(p.outcome_by, "c-reviewer") == 0,
          "handler answer: outcome %u final %u by `%s`", p.outcome, p.final_index,
          p.answered_by);
    check(handler_frees == 1, "the handler reference was released %d times", handler_frees);

    // A handler that throws, typed or not, fails the escalation but not the call.
    pred = uniffi_student_ffi_fn_method_studentmodel_classify(
        ref(model), tensor_arg(zeros, 784), options_arg(1.0f, 3), handler_arg(HANDLER_THROWS),
        fresh(&s));
    p = take_prediction(pred);
    check(s.code == CALL_SUCCESS && p.outcome == FAILED && strstr(p.outcome_error, "queue full") &&
              p.final_index == p.index,
          "throwing handler: status %d outcome %u error `%s`", s.code, p.outcome,
          p.outcome_error);
    pred = uniffi_student_ffi_fn_method_studentmodel_classify(
        ref(model), tensor_arg(zeros, 784), options_arg(1.0f, 3), handler_arg(HANDLER_PANICS),
        fresh(&s));
    p = take_prediction(pred);
    check(s.code == CALL_SUCCESS && p.outcome == FAILED && strstr(p.outcome_error, "out of cheese") &&
              strstr(p.outcome_error, "without a typed error"),
          "handler with an unexpected error: status %d outcome %u error `%s`", s.code, p.outcome,
          p.outcome_error);
    check(strcmp(p.outcome_by, "escalation handler") == 0,
          "a handler whose name() fails: named `%s`", p.outcome_by);

    // Error variants.
    char reason[512];
    float bad[10] = {0};
    uniffi_student_ffi_fn_method_studentmodel_classify(ref(model), tensor_arg(bad, 10), none_arg(),
                                                       none_arg(), fresh(&s));
    uint32_t v = error_variant(&s, reason, sizeof reason);
    check(v == ERR_INVALID_INPUT && strstr(reason, "10 values"), "wrong length: variant %u `%s`",
          v, reason);
    zeros[5] = NAN;
    uniffi_student_ffi_fn_method_studentmodel_classify(ref(model), tensor_arg(zeros, 784),
                                                       none_arg(), none_arg(), fresh(&s));
    v = error_variant(&s, reason, sizeof reason);
    check(v == ERR_INVALID_INPUT && strstr(reason, "not finite"), "NaN: variant %u `%s`", v,
          reason);
    zeros[5] = 0;
    uniffi_student_ffi_fn_method_studentmodel_classify(ref(model), tensor_arg(zeros, 784),
                                                       options_arg(2.0f, 3), none_arg(), fresh(&s));
    v = error_variant(&s, reason, sizeof reason);
    check(v == ERR_INVALID_INPUT && strstr(reason, "threshold"), "threshold 2: variant %u `%s`", v,
          reason);
    uniffi_student_ffi_fn_method_studentmodel_classify(ref(model), tensor_arg(zeros, 784),
                                                       options_arg(0.5f, 0), none_arg(), fresh(&s));
    v = error_variant(&s, reason, sizeof reason);
    check(v == ERR_INVALID_INPUT && strstr(reason, "top_k"), "top_k 0: variant %u `%s`", v, reason);
    // Finite inputs this large overflow the logits.
    float huge[28 * 28];
    for (int i = 0; i < 28 * 28; i++) huge[i] = 3e38f;
    uniffi_student_ffi_fn_method_studentmodel_classify(ref(model), tensor_arg(huge, 784),
                                                       none_arg(), none_arg(), fresh(&s));
    v = error_variant(&s, reason, sizeof reason);
    check(v == ERR_EXECUTION && strstr(reason, "finite"), "3e38 inputs: variant %u `%s`", v, reason);
    uniffi_student_ffi_fn_constructor_studentmodel_open(string_arg("no/such/model.onnx"), fresh(&s));
    v = error_variant(&s, reason, sizeof reason);
    check(v == ERR_IO, "missing file: variant %u `%s`", v, reason);
    Writer junk = {0};
    put_string(&junk, "not a model");  // bytes: length, then the bytes
    uniffi_student_ffi_fn_constructor_studentmodel_from_bytes(done(&junk), none_arg(), fresh(&s));
    v = error_variant(&s, reason, sizeof reason);
    check(v == ERR_INVALID_MODEL && strstr(reason, "not an ONNX model"), "junk bytes: variant %u `%s`",
          v, reason);

    // A panic in Rust is an unexpected error with its message, not an abort.
    uniffi_student_ffi_fn_func_panic_probe(fresh(&s));
    check(s.code == CALL_UNEXPECTED_ERROR, "panic probe: status %d", s.code);
    if (s.code == CALL_UNEXPECTED_ERROR) free_buffer(s.errorBuf);

    // Unload, then calls fail with Unloaded; freeing the handle ends the object.
    uniffi_student_ffi_fn_method_studentmodel_unload(ref(model), fresh(&s));
    check(s.code == CALL_SUCCESS, "unload: status %d", s.code);
    uniffi_student_ffi_fn_method_studentmodel_classify(ref(model), tensor_arg(zeros, 784),
                                                       none_arg(), none_arg(), fresh(&s));
    v = error_variant(&s, reason, sizeof reason);
    check(v == ERR_UNLOADED, "after unload: variant %u `%s`", v, reason);
    uniffi_student_ffi_fn_free_studentmodel(model, fresh(&s));
    check(s.code == CALL_SUCCESS, "free: status %d", s.code);
    check(handler_frees == handler_calls, "%d handler references released for %d calls",
          handler_frees, handler_calls);

    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
