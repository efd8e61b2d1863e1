// The Kotlin binding tests: the generated bindings over the release library, on the JVM.
// Run by bindings/tests/kotlin.sh; prints one line per failure and `N passed, N failed`.
package dev.student.test

import dev.student.*
import java.io.File
import java.util.concurrent.Callable
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.CountDownLatch
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicBoolean
import java.util.concurrent.atomic.AtomicInteger
import javax.imageio.ImageIO

val root = File(System.getProperty("student.root") ?: ".")
val studentPath = File(root, "models/fashion-mnist/student.onnx").path

/** A sample image as 8-bit gray pixels, with the label its file name records. */
class Sample(val name: String, val label: Int, val width: Int, val height: Int, val gray: ByteArray)

fun loadSamples(): List<Sample> =
    File(root, "models/fashion-mnist/samples").listFiles { f -> f.name.endsWith(".png") }!!
        .sortedBy { it.name }
        .map { file ->
            val image = ImageIO.read(file)
            check(image.raster.numBands == 1) { "${file.name} is not grayscale" }
            val gray = ByteArray(image.width * image.height) { i ->
                image.raster.getSample(i % image.width, i / image.width, 0).toByte()
            }
            val label = file.name.substringAfter("label-").substringBefore(".").toInt()
            Sample(file.name, label, image.width, image.height, gray)
        }

val samples by lazy { loadSamples() }
val model by lazy { StudentModel.open(studentPath) }

var passed = 0
var failed = 0

fun test(name: String, body: () -> Unit) {
    try {
        body()
        passed++
    } catch (e: Throwable) {
        failed++
        println("FAILED $name: $e")
    }
}

fun expect(condition: Boolean, what: () -> String) {
    if (!condition) throw AssertionError(what())
}

inline fun <reified E : Throwable> expectThrows(body: () -> Unit): E {
    try {
        body()
    } catch (e: Throwable) {
        if (e is E) return e
        throw AssertionError("expected ${E::class.simpleName}, got $e")
    }
    throw AssertionError("expected ${E::class.simpleName}, nothing was thrown")
}

/** The card's normalization, done in Kotlin, to check `classify` against `classifyImage`. */
fun tensorOf(info: ModelInfo, gray: ByteArray): FloatArray {
    val s = info.input
    return FloatArray(gray.size) { i ->
        ((gray[i].toInt() and 0xff) * s.scale - s.mean[0]) / s.std[0]
    }
}

fun classifyGray(m: StudentModel, s: Sample, options: ClassifyOptions? = null, handler: EscalationHandler? = null) =
    m.classifyImage(s.gray, s.width.toUInt(), s.height.toUInt(), PixelFormat.GRAY8, options, handler)

/** A handler that records its calls and answers with `answer`. */
class Recording(val answer: HandlerAnswer?) : EscalationHandler {
    val requests = CopyOnWriteArrayList<EscalationRequest>()
    override fun name() = "kotlin-reviewer"
    override fun escalate(request: EscalationRequest): HandlerAnswer? {
        requests.add(request)
        return answer
    }
}

/** libc's descriptor calls, to see what native code prints on stderr. */
interface LibC : com.sun.jna.Library {
    fun creat(path: String, mode: Int): Int
    fun dup(fd: Int): Int
    fun dup2(from: Int, to: Int): Int
    fun close(fd: Int): Int
}

val libc: LibC by lazy { com.sun.jna.Native.load("c", LibC::class.java) }

/** Runs `body` with file descriptor 2 sent to a file, and returns what was written there. */
fun captureStderr(body: () -> Unit): String {
    val file = File.createTempFile("student-stderr", ".txt")
    val fd = libc.creat(file.path, 0x180)  // 0600
    check(fd >= 0) { "cannot create ${file.path}" }
    val saved = libc.dup(2)
    libc.dup2(fd, 2)
    libc.close(fd)
    try {
        body()
    } finally {
        System.err.flush()
        libc.dup2(saved, 2)
        libc.close(saved)
    }
    return file.readText().also { file.delete() }
}

val always = ClassifyOptions(threshold = 1.0f, topK = 3u)
val never = ClassifyOptions(threshold = 0.0f, topK = 3u)

fun main() {
    test("the card is readable") {
        val info = model.info()
        expect(info.labels.size == 10 && info.labels[0] == "T-shirt/top") { "labels ${info.labels}" }
        expect(info.input.channels == 1u && info.input.height == 28u && info.input.width == 28u) { "${info.input}" }
        expect(info.precision == Precision.FP32) { "${info.precision}" }
        expect(info.temperature > 0f && info.threshold in 0f..1f) { "$info" }
        expect(info.metricsJson?.trim()?.startsWith("{") == true) { "metrics ${info.metricsJson}" }
        expect(info.sha256.length == 64 && info.fileSize > 0uL && info.params > 0uL) { "$info" }
    }

    val compiledPath = System.getProperty("student.compiled") ?: ""
    if (compiledPath.isNotEmpty()) test("a compiled student runs on the fast path and agrees with its ONNX file") {
        val onnx = StudentModel.open(File(root, "models/fashion-mnist/student-int8.onnx").path)
        val compiled = StudentModel.open(compiledPath)
        expect(onnx.info().kernels == "tract") { onnx.info().kernels }
        expect(compiled.info().kernels != "tract" && compiled.info().kernels.isNotEmpty()) { compiled.info().kernels }
        expect(compiled.info().labels == onnx.info().labels && compiled.info().precision == Precision.INT8) { "${compiled.info()}" }
        val same = samples.count { classifyGray(compiled, it).index == classifyGray(onnx, it).index }
        expect(same == samples.size) { "$same of ${samples.size} agree" }
        val bytes = File(compiledPath).readBytes()
        val cut = expectThrows<StudentException.InvalidModel> { StudentModel.fromBytes(bytes.copyOf(bytes.size - 1), "cut.student") }
        expect(cut.reason.contains("cut.student") && cut.reason.contains("truncated")) { cut.reason }
        val flipped = bytes.copyOf().also { it[it.size - 5] = (it[it.size - 5].toInt() xor 1).toByte() }
        val bad = expectThrows<StudentException.InvalidModel> { StudentModel.fromBytes(flipped, "flipped.student") }
        expect(bad.reason.contains("checksum")) { bad.reason }
        onnx.unload()
        compiled.unload()
    }

    if (compiledPath.isNotEmpty()) test("open options: limits, kernels and memory mapping") {
        val defaults = defaultLimits()
        expect(defaults.maxFileBytes > 0uL && defaults.maxNodes > 0uL && defaults.maxScratchBytes > 0uL) { "$defaults" }
        val size = File(compiledPath).length()
        val tight = OpenOptions(limits = defaults.copy(maxFileBytes = (size - 1).toULong()))
        val tooBig = expectThrows<StudentException.InvalidModel> { StudentModel.openWith(compiledPath, tight) }
        expect(tooBig.reason.contains("max_file_bytes") && tooBig.reason.contains("$size")) { tooBig.reason }
        val bytes = File(compiledPath).readBytes()
        val fewNodes = OpenOptions(limits = defaults.copy(maxNodes = 1uL))
        val tooMany = expectThrows<StudentException.InvalidModel> { StudentModel.fromBytesWith(bytes, fewNodes, "asset.student") }
        expect(tooMany.reason.contains("asset.student") && tooMany.reason.contains("max_nodes")) { tooMany.reason }

        // Forced portable kernels through a memory map agree with the best kernels on a copy.
        val best = StudentModel.openWith(compiledPath, OpenOptions())
        val portable = StudentModel.openWith(compiledPath, OpenOptions(kernels = "portable", memoryMap = true))
        expect(portable.info().kernels == "portable" && best.info().kernels != "portable") {
            "${portable.info().kernels} / ${best.info().kernels}"
        }
        for (s in samples.take(8)) {
            val input = tensorOf(best.info(), s.gray)
            val a = best.logits(input)
            val b = portable.logits(input)
            // Integer kernels: every level computes the same sums; allow float rounding in
            // the final dequantization.
            val diff = a.indices.maxOf { kotlin.math.abs(a[it] - b[it]) }
            expect(a.size == 10 && diff <= 1e-4f) { "${s.name}: logits differ by $diff" }
        }
        best.unload()
        portable.unload()

        val unknown = expectThrows<StudentException.InvalidInput> { StudentModel.openWith(compiledPath, OpenOptions(kernels = "sse9")) }
        expect(unknown.reason.contains("sse9") && unknown.reason.contains("portable")) { unknown.reason }
        val lonely = expectThrows<StudentException.InvalidInput> {
            StudentModel.fromBytesWith(bytes, OpenOptions(signature = "sig".toByteArray()))
        }
        expect(lonely.reason.contains("trusted keys")) { lonely.reason }
    }

    val signedDir = System.getProperty("student.signed") ?: ""
    if (signedDir.isNotEmpty()) test("a signed model opens only under its key and with its bytes") {
        val model = File(signedDir, "student.onnx")
        val key = File(signedDir, "app.pub").readText().trim()
        val other = File(signedDir, "other.pub").readText().trim()
        StudentModel.openSigned(model.path, listOf(other, key)).unload()
        val stranger = expectThrows<StudentException.InvalidModel> { StudentModel.openSigned(model.path, listOf(other)) }
        expect(stranger.reason.contains("not among")) { stranger.reason }
        val bytes = model.readBytes()
        val signature = File(signedDir, "student.onnx.sig").readBytes()
        StudentModel.fromSignedBytes(bytes, signature, listOf(key), "student.onnx").unload()
        val changed = bytes.copyOf().also { it[100] = (it[100].toInt() xor 1).toByte() }
        val tampered = expectThrows<StudentException.InvalidModel> { StudentModel.fromSignedBytes(changed, signature, listOf(key), "changed.onnx") }
        expect(tampered.reason.contains("other bytes")) { tampered.reason }
        val badKey = expectThrows<StudentException.InvalidInput> { StudentModel.openSigned(model.path, listOf("not a key")) }
        expect(badKey.reason.contains("64 hex digits")) { badKey.reason }
        expectThrows<StudentException.InvalidInput> { StudentModel.openSigned(model.path, listOf()) }
    }

    test("the int8 student says it is int8") {
        val int8 = StudentModel.open(File(root, "models/fashion-mnist/student-int8.onnx").path)
        expect(int8.info().precision == Precision.INT8) { "${int8.info().precision}" }
        int8.unload()
    }

    test("the shipped samples are classified") {
        expect(samples.size == 32) { "${samples.size} samples" }
        val right = samples.count { classifyGray(model, it).index.toInt() == it.label }
        // The student is 91.8% accurate on the test set; these 32 images are its first 32.
        expect(right >= 28) { "$right of 32 right" }
        val p = classifyGray(model, samples[0])
        expect(p.topK.size == 3 && p.topK[0].index == p.index && p.topK[0].probability == p.confidence) { "$p" }
        expect(p.answeredBy == "student" && p.finalIndex == p.index && p.finalLabel == p.label) { "$p" }
        expect(p.latencyMicros > 0uL) { "latency ${p.latencyMicros}" }
    }

    test("a float tensor gives the same prediction as the image") {
        val info = model.info()
        for (s in samples.take(8)) {
            val a = model.classify(tensorOf(info, s.gray))
            val b = classifyGray(model, s)
            expect(a.index == b.index && Math.abs(a.confidence - b.confidence) < 1e-5f) { "${s.name}: $a vs $b" }
        }
        expect(model.logits(tensorOf(info, samples[0].gray)).size == 10) { "logits" }
    }

    test("RGBA with equal channels is the gray image") {
        for (s in samples.take(8)) {
            val rgba = ByteArray(s.gray.size * 4) { i -> if (i % 4 == 3) 255.toByte() else s.gray[i / 4] }
            val a = model.classifyImage(rgba, s.width.toUInt(), s.height.toUInt(), PixelFormat.RGBA8)
            val b = classifyGray(model, s)
            expect(a.index == b.index && a.confidence == b.confidence) { "${s.name}: $a vs $b" }
        }
    }

    test("a larger image is resized to the card's size") {
        var same = 0
        for (s in samples) {
            // Each pixel becomes a 3x3 block: 84x84.
            val big = ByteArray(84 * 84) { i -> s.gray[(i / 84 / 3) * 28 + (i % 84) / 3] }
            if (model.classifyImage(big, 84u, 84u, PixelFormat.GRAY8).index == classifyGray(model, s).index) same++
        }
        expect(same >= 28) { "$same of 32 agree after resizing" }
    }

    test("a batch equals single calls") {
        val info = model.info()
        val batch = samples.take(5).map { tensorOf(info, it.gray) }.reduce { a, b -> a + b }
        val many = model.classifyBatch(batch)
        expect(many.size == 5) { "${many.size} predictions" }
        for ((i, p) in many.withIndex()) {
            val one = classifyGray(model, samples[i])
            expect(p.index == one.index && p.confidence == one.confidence) { "sample $i: $p vs $one" }
        }
    }

    test("the threshold can be overridden per call") {
        for (s in samples.take(8)) {
            expect(!classifyGray(model, s, never).escalated) { "${s.name} escalated at threshold 0" }
            val p = classifyGray(model, s, always)
            expect(p.escalated == (p.score < 1.0f) && p.threshold == 1.0f) { "$p" }
            expect(classifyGray(model, s).threshold == model.info().threshold) { "card threshold" }
        }
        val e = expectThrows<StudentException.InvalidInput> { classifyGray(model, samples[0], ClassifyOptions(1.5f, 3u)) }
        expect(e.reason.contains("threshold")) { e.reason }
    }

    test("a Kotlin handler answers escalated inputs") {
        val handler = Recording(HandlerAnswer(index = 3u, confidence = 0.9f))
        val p = classifyGray(model, samples[1], always, handler)
        expect(handler.requests.size == 1) { "${handler.requests.size} calls" }
        val request = handler.requests[0]
        expect(request.input.size == 784 && request.label == p.label && request.threshold == 1.0f) { "$request" }
        expect(p.escalated && p.finalIndex == 3u && p.finalLabel == model.info().labels[3]) { "$p" }
        expect(p.answeredBy == "kotlin-reviewer" && p.outcome == EscalationOutcome.Answered("kotlin-reviewer", 0.9f)) { "$p" }
        expect(p.reason.contains("kotlin-reviewer answered")) { p.reason }
    }

    test("a handler is not called for confident predictions") {
        val handler = Recording(HandlerAnswer(3u, null))
        val p = classifyGray(model, samples[1], never, handler)
        expect(handler.requests.isEmpty() && !p.escalated && p.outcome == EscalationOutcome.NotEscalated) { "$p" }
    }

    test("a handler may decline") {
        val p = classifyGray(model, samples[1], always, Recording(null))
        expect(p.outcome == EscalationOutcome.Declined("kotlin-reviewer") && p.answeredBy == "student") { "$p" }
        val none = classifyGray(model, samples[1], always)
        expect(none.outcome == EscalationOutcome.NoHandler && none.finalIndex == none.index) { "$none" }
    }

    test("a handler that throws is reported, not fatal") {
        val throwing = object : EscalationHandler {
            override fun name() = "flaky-server"
            override fun escalate(request: EscalationRequest): HandlerAnswer? = throw IllegalStateException("server unreachable")
        }
        val p = classifyGray(model, samples[1], always, throwing)
        val outcome = p.outcome
        expect(outcome is EscalationOutcome.Failed && outcome.by == "flaky-server" && outcome.error.contains("server unreachable")) { "$p" }
        expect(p.finalIndex == p.index && p.answeredBy == "student") { "$p" }
        val typed = object : EscalationHandler {
            override fun name() = "typed"
            override fun escalate(request: EscalationRequest): HandlerAnswer? = throw EscalationException.Failed("queue full")
        }
        val q = classifyGray(model, samples[1], always, typed)
        expect(q.outcome == EscalationOutcome.Failed("typed", "queue full")) { "$q" }
    }

    test("a handler's error keeps one line of at most 300 characters") {
        val traced = object : EscalationHandler {
            override fun name() = "traced"
            override fun escalate(request: EscalationRequest): HandlerAnswer? = throw IllegalStateException("server unreachable")
        }
        val p = classifyGray(model, samples[1], always, traced)
        val outcome = p.outcome as EscalationOutcome.Failed
        // Kotlin sends the whole stack trace; only its first line is kept.
        expect(!outcome.error.contains('\n') && !outcome.error.contains("\tat ")) { outcome.error }
        expect(outcome.error.endsWith("java.lang.IllegalStateException: server unreachable")) { outcome.error }
        val huge = object : EscalationHandler {
            override fun name() = "huge"
            override fun escalate(request: EscalationRequest): HandlerAnswer? =
                throw EscalationException.Failed("x".repeat(10_000_000))
        }
        val q = classifyGray(model, samples[1], always, huge)
        val cut = (q.outcome as EscalationOutcome.Failed).error
        expect(cut.length == 300 && cut.endsWith("…")) { "${cut.length} characters" }
        expect(q.reason.length < 500) { "reason of ${q.reason.length} characters" }
    }

    test("a handler throwing a Java Error is reported clearly") {
        for (error in listOf(AssertionError("assumption broke"), StackOverflowError(), OutOfMemoryError("heap"))) {
            val erring = object : EscalationHandler {
                override fun name() = "erring"
                override fun escalate(request: EscalationRequest): HandlerAnswer? = throw error
            }
            // JNA prints the Error it caught; keep that out of the test's output.
            var p: Prediction? = null
            captureStderr { p = classifyGray(model, samples[1], always, erring) }
            val outcome = p!!.outcome
            expect(outcome is EscalationOutcome.Failed && outcome.by == "erring" &&
                outcome.error.startsWith("the handler failed without a typed error")) { "$error: $outcome" }
            expect(p!!.finalIndex == p!!.index) { "$p" }
        }
    }

    test("a handler whose name() throws is named generically, without a panic") {
        val nameless = object : EscalationHandler {
            override fun name(): String = throw IllegalStateException("no name")
            override fun escalate(request: EscalationRequest): HandlerAnswer? = HandlerAnswer(2u, null)
        }
        var p: Prediction? = null
        val stderr = captureStderr { p = classifyGray(model, samples[1], always, nameless) }
        expect(p!!.answeredBy == "escalation handler" && p!!.finalIndex == 2u) { "$p" }
        expect(!stderr.contains("panicked") && !stderr.contains("no name")) { "stderr: $stderr" }
    }

    test("a handler answering outside the label set is reported") {
        val p = classifyGray(model, samples[1], always, Recording(HandlerAnswer(99u, null)))
        val outcome = p.outcome
        expect(outcome is EscalationOutcome.Failed && outcome.error.contains("99") && p.finalIndex == p.index) { "$p" }
    }

    test("a handler answering a NaN or out-of-range confidence is reported") {
        // Each with how the runtime's message writes it.
        for ((confidence, text) in listOf(Float.NaN to "NaN", 1.5f to "1.5", -0.1f to "-0.1", Float.POSITIVE_INFINITY to "inf")) {
            val p = classifyGray(model, samples[1], always, Recording(HandlerAnswer(2u, confidence)))
            val outcome = p.outcome
            expect(outcome is EscalationOutcome.Failed && outcome.by == "kotlin-reviewer" &&
                outcome.error.contains("confidence") && outcome.error.contains(text)) { "$confidence: $p" }
            expect(p.finalIndex == p.index && p.answeredBy == "student") { "$confidence: $p" }
        }
    }

    test("a handler past its deadline fails the escalation and the call returns in time") {
        val started = CountDownLatch(1)
        val finished = CountDownLatch(1)
        val slow = object : EscalationHandler {
            override fun name() = "slow-server"
            override fun escalate(request: EscalationRequest): HandlerAnswer? {
                started.countDown()
                try {
                    Thread.sleep(1500)
                } finally {
                    finished.countDown()
                }
                return HandlerAnswer(3u, null)
            }
        }
        val t0 = System.nanoTime()
        val p = classifyGray(model, samples[1], ClassifyOptions(1.0f, 3u, handlerDeadlineMs = 100u), slow)
        val ms = (System.nanoTime() - t0) / 1_000_000
        expect(started.count == 0L) { "the handler was not called" }
        expect(ms in 100..1000) { "classify took $ms ms with a 100 ms deadline and a 1500 ms handler" }
        val outcome = p.outcome
        expect(outcome is EscalationOutcome.Failed && outcome.by == "slow-server" &&
            outcome.error.startsWith("no answer within 100 ms")) { "$p" }
        expect(p.finalIndex == p.index && p.answeredBy == "student" && p.escalated) { "$p" }
        expect(p.reason.contains("slow-server failed (no answer within 100 ms")) { p.reason }
        // The abandoned call runs to its end; its answer is dropped.
        expect(finished.await(10, TimeUnit.SECONDS)) { "the abandoned handler never finished" }
    }

    test("past 4 abandoned handler calls, escalations with a deadline fail at once") {
        val release = CountDownLatch(1)
        val calls = AtomicInteger()
        val returned = AtomicInteger()
        val stuck = object : EscalationHandler {
            override fun name() = "stuck"
            override fun escalate(request: EscalationRequest): HandlerAnswer? {
                calls.incrementAndGet()
                try {
                    release.await(30, TimeUnit.SECONDS)
                } finally {
                    returned.incrementAndGet()
                }
                return null
            }
        }
        val options = ClassifyOptions(1.0f, 3u, handlerDeadlineMs = 50u)
        val errors = (0 until 6).map {
            val t0 = System.nanoTime()
            val outcome = classifyGray(model, samples[1], options, stuck).outcome as EscalationOutcome.Failed
            outcome.error to (System.nanoTime() - t0) / 1_000_000
        }
        release.countDown()
        expect(errors.take(4).all { it.first.startsWith("no answer within 50 ms") }) { "$errors" }
        // 10 s: far below the 30 s the handler would wait, far above the call itself.
        expect(errors.drop(4).all { it.first.startsWith("not called: 4 earlier calls") && it.second < 10_000 }) { "$errors" }
        expect(calls.get() == 4) { "the handler was called ${calls.get()} times" }
        // Once they return, escalations reach the handler again (the count drops just
        // after each returns, so allow a moment). Wait for all four first: one returning
        // is enough to let the next escalation through.
        val deadline = System.nanoTime() + 10_000_000_000
        while (returned.get() < 4 && System.nanoTime() < deadline) Thread.sleep(5)
        var p: Prediction
        do {
            p = classifyGray(model, samples[1], options, Recording(HandlerAnswer(5u, null)))
            if (p.outcome is EscalationOutcome.Answered) break
            Thread.sleep(5)
        } while (System.nanoTime() < deadline)
        expect(returned.get() == 4) { "${returned.get()} stuck calls returned" }
        expect(p.outcome == EscalationOutcome.Answered("kotlin-reviewer", null) && p.finalIndex == 5u) { "$p" }
    }

    test("a handler with a deadline answers from its own thread when in time") {
        val caller = Thread.currentThread()
        var ranOn: Thread? = null
        val quick = object : EscalationHandler {
            override fun name() = "quick"
            override fun escalate(request: EscalationRequest): HandlerAnswer? {
                ranOn = Thread.currentThread()
                return HandlerAnswer(4u, 0.75f)
            }
        }
        val p = classifyGray(model, samples[1], ClassifyOptions(1.0f, 3u, handlerDeadlineMs = 10_000u), quick)
        expect(p.outcome == EscalationOutcome.Answered("quick", 0.75f) && p.finalIndex == 4u) { "$p" }
        expect(ranOn != null && ranOn != caller) { "ran on $ranOn, the caller is $caller" }
        val e = expectThrows<StudentException.InvalidInput> {
            classifyGray(model, samples[1], ClassifyOptions(1.0f, 3u, handlerDeadlineMs = 0u), quick)
        }
        expect(e.reason.contains("handler_deadline_ms")) { e.reason }
    }

    test("with or without a deadline, throwing and garbage handlers are reported the same") {
        fun handler(name: String, body: () -> HandlerAnswer?) = object : EscalationHandler {
            override fun name() = name
            override fun escalate(request: EscalationRequest): HandlerAnswer? = body()
        }
        val cases = listOf(
            handler("runtime-exception") { throw RuntimeException("backend exploded") } to "backend exploded",
            handler("java-error") { throw Error("fatal in handler") } to "the handler failed without a typed error",
            handler("out-of-range") { HandlerAnswer(10u, null) } to "class 10",
            handler("nan") { HandlerAnswer(1u, Float.NaN) } to "NaN",
        )
        for (deadline in listOf(null, 5_000u)) {
            for ((h, text) in cases) {
                var p: Prediction? = null
                // JNA prints the Java Error it caught.
                captureStderr { p = classifyGray(model, samples[1], ClassifyOptions(1.0f, 3u, deadline), h) }
                val outcome = p!!.outcome
                expect(outcome is EscalationOutcome.Failed && outcome.by == h.name() && outcome.error.contains(text)) {
                    "deadline $deadline, ${h.name()}: $outcome"
                }
                expect(p!!.finalIndex == p!!.index && p!!.answeredBy == "student") { "deadline $deadline: $p" }
            }
        }
    }

    test("bad files raise typed exceptions") {
        expectThrows<StudentException.Io> { StudentModel.open(File(root, "no/such/model.onnx").path) }
        val text = expectThrows<StudentException.InvalidModel> { StudentModel.open(File(root, "README.md").path) }
        expect(text.reason.contains("README.md")) { text.reason }
        expectThrows<StudentException.InvalidModel> { StudentModel.fromBytes(ByteArray(0)) }
        val bytes = File(studentPath).readBytes()
        val cut = expectThrows<StudentException.InvalidModel> { StudentModel.fromBytes(bytes.copyOf(bytes.size / 2), "half.onnx") }
        expect(cut.reason.contains("half.onnx")) { cut.reason }
        val whole = StudentModel.fromBytes(bytes, "asset.onnx")
        expect(whole.info().sha256 == model.info().sha256) { "sha256" }
        whole.unload()
    }

    test("bad inputs raise typed exceptions") {
        expectThrows<StudentException.InvalidInput> { model.classify(FloatArray(10)) }
        val nan = FloatArray(784).also { it[100] = Float.NaN }
        val e = expectThrows<StudentException.InvalidInput> { model.classify(nan) }
        expect(e.reason.contains("100")) { e.reason }
        expectThrows<StudentException.InvalidInput> { model.classifyImage(ByteArray(10), 28u, 28u, PixelFormat.GRAY8) }
        expectThrows<StudentException.InvalidInput> { model.classifyImage(ByteArray(0), 0u, 0u, PixelFormat.RGBA8) }
        expectThrows<StudentException.InvalidInput> { model.classifyBatch(FloatArray(784 + 1)) }
        expectThrows<StudentException.InvalidInput> { model.classifyBatch(FloatArray(0)) }
    }

    test("a batch error names the sample") {
        val batch = FloatArray(784 * 4).also { it[784 * 2 + 100] = Float.NaN }
        val e = expectThrows<StudentException.InvalidInput> { model.classifyBatch(batch) }
        expect(e.reason.startsWith("sample 2: ") && e.reason.contains("100")) { e.reason }
    }

    test("options: topK 0 is refused, a threshold of -0.0 is 0.0") {
        val e = expectThrows<StudentException.InvalidInput> { classifyGray(model, samples[0], ClassifyOptions(null, 0u)) }
        expect(e.reason.contains("top_k")) { e.reason }
        expectThrows<StudentException.InvalidInput> { model.classifyBatch(FloatArray(784), ClassifyOptions(null, 0u)) }
        val p = classifyGray(model, samples[0], ClassifyOptions(-0.0f, 1u))
        expect(p.threshold.toRawBits() == 0 && !p.escalated && p.topK.size == 1) { "$p" }
    }

    test("many threads share one model") {
        val expected = samples.map { classifyGray(model, it).confidence }
        val pool = Executors.newFixedThreadPool(8)
        val handler = Recording(HandlerAnswer(0u, null))
        val jobs = (0 until 8).map { t ->
            Callable {
                var wrong = 0
                for (round in 0 until 20) {
                    val i = (t * 7 + round) % samples.size
                    if (classifyGray(model, samples[i], null, handler).confidence != expected[i]) wrong++
                }
                wrong
            }
        }
        val wrong = pool.invokeAll(jobs).sumOf { it.get() }
        pool.shutdown()
        expect(wrong == 0) { "$wrong results differ from single-threaded ones" }
    }

    test("unload while other threads classify: each call succeeds or is refused") {
        val m = StudentModel.open(studentPath)
        val expected = samples.map { classifyGray(m, it).confidence }
        val threads = 8
        val pool = Executors.newFixedThreadPool(threads)
        val going = CountDownLatch(threads)
        val unloaded = AtomicBoolean(false)
        val handler = Recording(HandlerAnswer(0u, null))
        val jobs = (0 until threads).map { t ->
            Callable {
                // [succeeded, wrong results, successes that began after unload() returned]
                val counts = IntArray(3)
                going.countDown()
                for (round in 0 until 1_000_000) {
                    val i = (t * 5 + round) % samples.size
                    val after = unloaded.get()
                    try {
                        // Half the calls escalate, half of those under a deadline.
                        val options = when (round % 4) {
                            0 -> always
                            1 -> ClassifyOptions(1.0f, 3u, 5_000u)
                            else -> null
                        }
                        val p = classifyGray(m, samples[i], options, handler)
                        counts[0]++
                        if (p.confidence != expected[i]) counts[1]++
                        if (after) counts[2]++
                    } catch (e: StudentException.Unloaded) {
                        break
                    }
                }
                counts
            }
        }
        val futures = jobs.map { pool.submit(it) }
        going.await()
        Thread.sleep(50)
        m.unload()
        unloaded.set(true)
        // Any other exception fails the test here.
        val counts = futures.map { it.get(60, TimeUnit.SECONDS) }
        pool.shutdown()
        val ok = counts.sumOf { it[0] }
        expect(ok > 0 && counts.all { it[0] > 0 }) { "calls before unload: ${counts.map { it[0] }}" }
        expect(counts.sumOf { it[1] } == 0) { "${counts.sumOf { it[1] }} wrong results" }
        expect(counts.sumOf { it[2] } == 0) { "${counts.sumOf { it[2] }} calls succeeded after unload() returned" }
        expectThrows<StudentException.Unloaded> { classifyGray(m, samples[0]) }
        m.close()
    }

    test("close while other threads classify: calls stay safe, the handle goes when they stop") {
        // uniffi frees the handle when no call is in flight; until then, calls that begin
        // after close() still run (its call counter is above 0). unload() is what refuses
        // new calls at once.
        val m = StudentModel.open(studentPath)
        val expected = samples.map { classifyGray(m, it).confidence }
        val threads = 8
        val pool = Executors.newFixedThreadPool(threads)
        val going = CountDownLatch(threads)
        val closed = AtomicBoolean(false)
        val jobs = (0 until threads).map { t ->
            Callable {
                // [succeeded before close, after close, refused, wrong results]
                val counts = IntArray(4)
                going.countDown()
                var afterClose = 0
                var round = 0
                while (afterClose < 200) {
                    val i = (t + round++) % samples.size
                    if (closed.get()) afterClose++
                    try {
                        val p = classifyGray(m, samples[i], always, Recording(null))
                        counts[if (afterClose > 0) 1 else 0]++
                        if (p.confidence != expected[i]) counts[3]++
                    } catch (e: IllegalStateException) {
                        counts[2]++
                    }
                }
                counts
            }
        }
        val futures = jobs.map { pool.submit(it) }
        going.await()
        Thread.sleep(50)
        m.close()
        closed.set(true)
        // Any other exception fails the test here.
        val counts = futures.map { it.get(60, TimeUnit.SECONDS) }
        pool.shutdown()
        expect(counts.all { it[0] > 0 }) { "calls before close: ${counts.map { it[0] }}" }
        expect(counts.sumOf { it[3] } == 0) { "${counts.sumOf { it[3] }} wrong results" }
        println("  close() under load: ${counts.sumOf { it[1] }} calls ran after it, ${counts.sumOf { it[2] }} were refused")
        expectThrows<IllegalStateException> { m.info() }
    }

    test("unload, then every call is refused") {
        val m = StudentModel.open(studentPath)
        val s = samples[0]
        classifyGray(m, s)
        m.unload()
        val e = expectThrows<StudentException.Unloaded> { classifyGray(m, s) }
        expect(e.reason.contains("unloaded")) { e.reason }
        expectThrows<StudentException.Unloaded> { m.info() }
        expectThrows<StudentException.Unloaded> { m.classifyBatch(FloatArray(784)) }
        m.unload()
        // Kotlin's close() frees the handle itself: uniffi refuses later calls.
        m.close()
        expectThrows<IllegalStateException> { m.info() }
    }

    test("runtime log records reach a Kotlin sink") {
        val records = CopyOnWriteArrayList<LogRecord>()
        setLogSink(object : LogSink {
            override fun log(record: LogRecord) { records.add(record) }
        }, LogLevel.INFO)
        StudentModel.open(studentPath).close()
        expect(records.any { it.level == LogLevel.INFO && it.text.startsWith("opened") && it.target.startsWith("student_runtime") }) { "$records" }
        val calls = AtomicInteger()
        setLogSink(object : LogSink {
            // Throws on every other record: each throw drops that record, quietly.
            override fun log(record: LogRecord) {
                if (calls.incrementAndGet() % 2 == 1) throw RuntimeException("logger broke")
            }
        }, LogLevel.INFO)
        val stderr = captureStderr {
            StudentModel.open(studentPath).close()
            StudentModel.open(studentPath).close()
        }
        expect(calls.get() >= 2) { "the sink was called ${calls.get()} times after it threw" }
        expect(!stderr.contains("panicked") && !stderr.contains("logger broke")) { "stderr: $stderr" }
        setLogSink(null, LogLevel.INFO)
        val before = records.size
        StudentModel.open(studentPath).close()
        expect(records.size == before) { "records after the sink was removed" }
    }

    test("a panic in Rust becomes an exception") {
        val e = expectThrows<InternalException> { panicProbe() }
        expect(e.message?.contains("deliberate") == true) { "${e.message}" }
        // The library still works after it.
        classifyGray(model, samples[0])
    }

    println("$passed passed, $failed failed")
    if (failed > 0) System.exit(1)
}
