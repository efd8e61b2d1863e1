// swift-tools-version:5.9
// The Swift package apps depend on. `./build-xcframework.sh` must run first: it builds
// the Rust library for devices, simulators and macOS into build/StudentFFI.xcframework and
// generates Sources/Student/Student.swift from it (neither is checked in).
import PackageDescription

let package = Package(
    name: "Student",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Student", targets: ["Student"]),
    ],
    targets: [
        .binaryTarget(name: "StudentFFI", path: "build/StudentFFI.xcframework"),
        .target(name: "Student", dependencies: ["StudentFFI"], path: "Sources/Student"),
        .testTarget(name: "StudentTests", dependencies: ["Student"], path: "Tests/StudentTests"),
    ]
)
