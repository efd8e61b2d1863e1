// XCTest suite for the Swift bindings, against the generated API. Runs on a Mac after
// ios/build-xcframework.sh: `cd ios && swift test` (macOS slice), or in Xcode on a
// simulator. The model and sample images are read from the repository's models/ folder.
import CoreGraphics
import Foundation
import ImageIO
import Student
import XCTest

private let repository = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // StudentTests
    .deletingLastPathComponent()  // Tests
    .deletingLastPathComponent()  // ios
    .deletingLastPathComponent()
private let models = repository.appendingPathComponent("models/fashion-mnist")
private let studentPath = models.appendingPathComponent("student.onnx").path

/// The 8-bit gray pixels of a sample PNG, decoded with ImageIO / CoreGraphics.
private func grayPixels(_ url: URL) throws -> (Data, Int, Int) {
    guard let source = CGImageSourceCreateWithURL(url as CFURL, nil),
          let image = CGImageSourceCreateImageAtIndex(source, 0, nil)
    else { throw CocoaError(.fileReadCorruptFile) }
    let (width, height) = (image.width, image.height)
    var pixels = Data(count: width * height)
    pixels.withUnsafeMutableBytes { raw in
        let context = CGContext(
            data: raw.baseAddress, width: width, height: height, bitsPerComponent: 8,
            bytesPerRow: width, space: CGColorSpaceCreateDeviceGray(),
            bitmapInfo: CGImageAlphaInfo.none.rawValue)
        context?.draw(image, in: CGRect(x: 0, y: 0, width: width, height: height))
    }
    return (pixels, width, height)
}

/// Records its requests. `EscalationHandler` is `Sendable` and may be called from any
/// thread, so the one mutable field is guarded by a lock.
private final class Reviewer: EscalationHandler, @unchecked Sendable {
    let answer: HandlerAnswer?
    private let lock = NSLock()
    private var recorded: [EscalationRequest] = []
    init(answer: HandlerAnswer?) { self.answer = answer }
    var requests: [EscalationRequest] {
        lock.lock()
        defer { lock.unlock() }
        return recorded
    }
    func name() -> String { "swift-reviewer" }
    func escalate(request: EscalationRequest) throws -> HandlerAnswer? {
        lock.lock()
        recorded.append(request)
        lock.unlock()
        return answer
    }
}

/// A count shared by concurrent closures.
private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    // NSLock.withLock needs iOS 16 / macOS 13; the package supports iOS 15 / macOS 12.
    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }
    func increment() {
        lock.lock()
        count += 1
        lock.unlock()
    }
}

private struct Unreachable: Error {}

private final class Flaky: EscalationHandler {
    func name() -> String { "flaky" }
    func escalate(request: EscalationRequest) throws -> HandlerAnswer? { throw Unreachable() }
}

private let always = ClassifyOptions(threshold: 1.0, topK: 3)

final class StudentTests: XCTestCase {
    func testCard() throws {
        let info = try StudentModel.open(path: studentPath).info()
        XCTAssertEqual(info.labels.count, 10)
        XCTAssertEqual(info.input.width, 28)
        XCTAssertEqual(info.precision, .fp32)
        XCTAssertNotNil(info.metricsJson)
    }

    func testSamples() throws {
        let model = try StudentModel.open(path: studentPath)
        let files = try FileManager.default
            .contentsOfDirectory(at: models.appendingPathComponent("samples"),
                                 includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "png" }
        XCTAssertEqual(files.count, 32)
        var right = 0
        for file in files {
            let (pixels, width, height) = try grayPixels(file)
            let p = try model.classifyImage(
                pixels: pixels, width: UInt32(width), height: UInt32(height), format: .gray8)
            let label = file.deletingPathExtension().lastPathComponent
                .components(separatedBy: "label-").last.flatMap { UInt32($0) }
            if p.index == label { right += 1 }
        }
        XCTAssertGreaterThanOrEqual(right, 28)
    }

    func testHandlerAnswers() throws {
        let model = try StudentModel.open(path: studentPath)
        let reviewer = Reviewer(answer: HandlerAnswer(index: 3, confidence: 0.9))
        let p = try model.classify(input: [Float](repeating: 0, count: 784), options: always,
                                   handler: reviewer)
        XCTAssertEqual(reviewer.requests.count, 1)
        XCTAssertEqual(reviewer.requests[0].input.count, 784)
        XCTAssertTrue(p.escalated)
        XCTAssertEqual(p.finalIndex, 3)
        XCTAssertEqual(p.answeredBy, "swift-reviewer")
        XCTAssertEqual(p.outcome, .answered(by: "swift-reviewer", confidence: 0.9))
    }

    func testThrowingHandlerIsReported() throws {
        let model = try StudentModel.open(path: studentPath)
        let p = try model.classify(input: [Float](repeating: 0, count: 784), options: always,
                                   handler: Flaky())
        guard case .failed(let by, _) = p.outcome else {
            return XCTFail("outcome \(p.outcome)")
        }
        XCTAssertEqual(by, "flaky")
        XCTAssertEqual(p.finalIndex, p.index)
    }

    func testTypedErrors() throws {
        XCTAssertThrowsError(try StudentModel.open(path: "/no/such/model.onnx")) { error in
            guard case StudentError.Io = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try StudentModel.fromBytes(bytes: Data("junk".utf8))) { error in
            guard case StudentError.InvalidModel = error else { return XCTFail("\(error)") }
        }
        let model = try StudentModel.open(path: studentPath)
        XCTAssertThrowsError(try model.classify(input: [1, 2, 3])) { error in
            guard case StudentError.InvalidInput = error else { return XCTFail("\(error)") }
        }
        var nan = [Float](repeating: 0, count: 784)
        nan[7] = .nan
        XCTAssertThrowsError(try model.classify(input: nan)) { error in
            guard case StudentError.InvalidInput = error else { return XCTFail("\(error)") }
        }
    }

    func testConcurrentCalls() throws {
        let model = try StudentModel.open(path: studentPath)
        let input = [Float](repeating: 0.5, count: 784)
        let expected = try model.classify(input: input).confidence
        let wrong = Counter()
        DispatchQueue.concurrentPerform(iterations: 64) { _ in
            let confidence = try? model.classify(input: input).confidence
            if confidence != expected { wrong.increment() }
        }
        XCTAssertEqual(wrong.value, 0)
    }

    func testUnload() throws {
        let model = try StudentModel.open(path: studentPath)
        model.unload()
        XCTAssertThrowsError(try model.info()) { error in
            guard case StudentError.Unloaded = error else { return XCTFail("\(error)") }
        }
    }
}
